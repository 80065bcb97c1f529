"""Curves from run folders, overlaid: what `grpo plot` and the comparison scripts draw.

Each run folder's metrics.jsonl holds one JSON object per step (step 0: only the base model's
eval/* figures); blank lines and a line torn by a kill mid-write are skipped, as
metrics.MetricsFile skips them. Every run gets a colour, labelled by its folder name (parent/name
where two names collide), and every panel one metric, or several (a list of keys, or a pattern
such as `alpha/*`) told apart by line style. A metric a run does not log is absent for that run.

Training curves are smoothed with TensorBoard's exponential moving average (debiased: the first
point is the raw value), the raw line drawn faint in the same colour beneath; held-out eval/*
curves are drawn raw, with markers: each point is already a mean over the held-out set, and
there are few of them, so an average over evaluations would only lag.

Panels, when none are asked for:
- DEFAULT_PANELS (the RL objective): held-out accuracy, training reward, each reward's share of
  the advantage and its gates (runs with several rewards), completion length, KL, clip
  fraction, entropy, and seconds per step by stage (log scale);
- PREFERENCE_PANELS for a run that has none of those keys (DPO, IPO, GR-DPO, GR-IPO): held-out
  preference accuracy (mean and worst group; per group), the group weights α, training
  preference accuracy, the reward margin, the loss;
- for a run that has none of those either, the first FALLBACK_PANELS numeric keys it logs.
Each run's panels are chosen so, and the picture has those of every run (a GRPO run beside a
DPO run: both sets); a built-in panel without data is left out.

matplotlib is optional (`pip install -e ".[plot]"`) and imported only to draw, on the Agg canvas.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fnmatch import fnmatchcase
from os.path import commonprefix
from pathlib import Path
from types import SimpleNamespace
from typing import NamedTuple, Sequence

from grpo_cli.errors import UserError, one_line
from grpo_cli.metrics import parse_records
from grpo_cli.run_folder.layout import METRICS_FILE

DEFAULT_SMOOTH = 0.6
FALLBACK_PANELS = 9
# Within a panel of several keys: line style and marker (drawn on eval/* points) per key.
KEY_STYLES = ("-", "--", ":", "-.", (0, (5, 1, 1, 1, 1, 1)), (0, (1, 3)))
KEY_MARKERS = ("o", "s", "^", "D", "v", "P")
INSTALL = ('grpo plot needs matplotlib, which is not installed; install it: pip install -e ".[plot]" '
           "(or pip install matplotlib)")


@dataclass(frozen=True)
class Panel:
    """One picture panel. name: its key in plot_runs' answer and in --metrics; keys: metric
    keys or fnmatch patterns (`*` crosses slashes); log: a log y-axis when every value is > 0."""

    name: str
    title: str
    keys: tuple[str, ...]
    log: bool = False


class Curve(NamedTuple):
    """One line as logged: the steps that hold the metric and its raw values there."""

    steps: list[int]
    values: list[float]


STAGES = ("time/generate", "time/reward", "time/logprobs", "time/update", "time/push")
DEFAULT_PANELS = (
    Panel("eval/accuracy", "held-out accuracy (eval/accuracy)", ("eval/accuracy",)),
    Panel("reward/mean", "training reward (reward/mean)", ("reward/mean",)),
    Panel("advantage", "advantage per reward, std (advantage/*/std)", ("advantage/*/std",)),
    Panel("gate_open", "share of rows a gated reward counted on (reward/*/gate_open)", ("reward/*/gate_open",)),
    Panel("completion/mean_length", "completion length, tokens (completion/mean_length)", ("completion/mean_length",)),
    Panel("kl", "KL to the reference (kl)", ("kl",)),
    Panel("clip/fraction", "clipped token fraction (clip/fraction)", ("clip/fraction",)),
    Panel("entropy", "token entropy (entropy)", ("entropy",)),
    Panel("time", "seconds per step by stage (time/*)", STAGES, log=True),
)
PREFERENCE_PANELS = (
    Panel("preference_accuracy", "held-out preference accuracy: mean, worst group",
          ("eval/mean_group_accuracy", "eval/worst_group_accuracy")),
    Panel("group_accuracy", "held-out preference accuracy per group", ("eval/*/preference_accuracy",)),
    Panel("alpha", "group weights α (alpha/*)", ("alpha/*",)),
    Panel("rewards/accuracy", "training preference accuracy (rewards/accuracy)", ("rewards/accuracy",)),
    Panel("rewards/margin", "reward margin (rewards/margin)", ("rewards/margin",)),
    Panel("loss", "loss", ("loss",)),
)
BUILT_IN = {panel.name: panel for panel in (*DEFAULT_PANELS, *PREFERENCE_PANELS)}


def plot_runs(runs: Sequence[str | Path], out: str | Path, metrics: Sequence[str] | None = None,
              smooth: float = DEFAULT_SMOOTH) -> dict[str, dict[str, Curve]]:
    """Draw `runs` (run folders) into the picture `out`, one panel per entry of `metrics` (a
    key, a pattern or a built-in panel's name; None: the defaults above). Returns what was
    drawn: panel name -> {label: Curve}, the label being the run's for a one-key panel and
    "run: key" for a panel of several keys."""
    if not 0 <= smooth < 1:
        raise UserError(f"--smooth must be at least 0 and below 1 (0: raw curves), got {smooth}; try 0.6")
    if not runs:
        raise UserError("grpo plot needs at least one run folder: grpo plot RUN [RUN ...]")
    out = Path(out)
    records = dict(zip(run_labels(runs), (read_metrics(run) for run in runs)))
    panels = choose_panels(records, metrics)
    lines = {panel.name: collect(panel, records) for panel in panels}
    draw(panels, lines, list(records), out, smooth)
    return {panel.name: _answer(panel, lines[panel.name]) for panel in panels}


def read_metrics(run: str | Path) -> list[dict]:
    """The step records of a run folder's metrics.jsonl, blank and torn lines skipped."""
    folder = Path(run)
    if not folder.is_dir():
        what = "is a file, not a folder" if folder.exists() else "does not exist"
        raise UserError(f"run folder {folder} {what}; pass a run's output_dir (the folder holding {METRICS_FILE})")
    path = folder / METRICS_FILE
    if not path.is_file():
        raise UserError(f"{folder} has no {METRICS_FILE}, so it is not a run folder; {_runs_inside(folder)}")
    try:
        lines = path.read_text().splitlines()
    except (OSError, UnicodeDecodeError) as error:
        raise UserError(f"{path} cannot be read: {one_line(error)}") from None
    return parse_records(lines)[0]


def _runs_inside(folder: Path) -> str:
    """The fix for a folder that is not a run folder: the run folders in it, if any."""
    found = sorted(p.parent for pattern in (f"*/{METRICS_FILE}", f"*/*/{METRICS_FILE}") for p in folder.glob(pattern))
    if not found:
        return f"pass a run's output_dir (the folder holding {METRICS_FILE})"
    shown = " ".join(str(p) for p in found[:3]) + (f" ({len(found) - 3} more)" if len(found) > 3 else "")
    return f"pass the run folders inside it: {shown}"


def run_labels(runs: Sequence[str | Path]) -> list[str]:
    """Each run's folder name; parent/name for names two runs share; the path when that collides too."""
    paths = [Path(run) for run in runs]
    resolved = [path.resolve() for path in paths]
    twice = next((path for path, where in zip(paths, resolved) if resolved.count(where) > 1), None)
    if twice is not None:
        raise UserError(f"run folder {twice} is given twice; pass each run once")
    names = [where.name for where in resolved]
    labels = [f"{where.parent.name}/{where.name}" if names.count(where.name) > 1 else where.name for where in resolved]
    return [label if labels.count(label) == 1 else str(path) for label, path in zip(labels, paths)]


def choose_panels(records: dict[str, list[dict]], metrics: Sequence[str] | None) -> list[Panel]:
    """The panels asked for (each must match a key some run logs), or each run's defaults (_panels_of)."""
    available = _numeric_keys(records)
    if metrics:
        panels = [BUILT_IN.get(m) or Panel(m, m, (m,)) for m in metrics]
        missing = [p.name for p in panels if not resolve(p, available)]
        if missing:
            raise UserError(f"no run logs {', '.join(missing)}; pick from: {_some(available)}")
        return panels
    chosen = dict.fromkeys(panel for rows in records.values() for panel in _panels_of(_numeric_keys({"": rows})))
    if not chosen:
        raise UserError(f"no run holds any step in its {METRICS_FILE}; plot a run once it has logged a step")
    return list(chosen)


def _panels_of(keys: list[str]) -> list[Panel]:
    """One run's panels: the defaults it has data for, else the preference panels, else its first keys."""
    for choices in (DEFAULT_PANELS, PREFERENCE_PANELS):
        chosen = [panel for panel in choices if resolve(panel, keys)]
        if chosen:
            return chosen
    return [Panel(key, key, (key,)) for key in keys[:FALLBACK_PANELS]]


def _some(keys: list[str], count: int = 12) -> str:
    return ", ".join(keys[:count]) + (f" ({len(keys) - count} more)" if len(keys) > count else "")


def _numeric_keys(records: dict[str, list[dict]]) -> list[str]:
    """Every key with a number in some record, in order of appearance; `step` left out."""
    keys = dict.fromkeys(key for rows in records.values() for row in rows for key, value in row.items()
                         if key != "step" and _number(value) is not None)
    return list(keys)


def _number(value) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return float(value)


def resolve(panel: Panel, available: list[str]) -> list[str]:
    """The panel's keys that some run logs: listed keys in their order, a pattern's matches sorted."""
    found: list[str] = []
    for key in panel.keys:
        matches = sorted(k for k in available if fnmatchcase(k, key)) if "*" in key else [key] * (key in available)
        found += [k for k in matches if k not in found]
    return found


def collect(panel: Panel, records: dict[str, list[dict]]) -> list[tuple[str, str, Curve]]:
    """(run label, key, Curve) for every run and key of the panel with at least one value."""
    lines = []
    for key in resolve(panel, _numeric_keys(records)):
        for label, rows in records.items():
            points = [(row["step"], _number(row.get(key))) for row in rows if _number(row.get(key)) is not None]
            if points:
                steps, values = zip(*points)
                lines.append((label, key, Curve(list(steps), list(values))))
    return lines


def _several(panel: Panel, lines: list[tuple[str, str, Curve]]) -> bool:
    """Whether the panel tells keys apart (by line style, and "run: key" labels)."""
    return len({key for _, key, _ in lines}) > 1 or any("*" in key for key in panel.keys)


def _answer(panel: Panel, lines: list[tuple[str, str, Curve]]) -> dict[str, Curve]:
    several = _several(panel, lines)
    return {f"{run}: {key}" if several else run: curve for run, key, curve in lines}


def smooth(values: Sequence[float], weight: float) -> list[float]:
    """TensorBoard's smoothing: an exponential moving average from 0, divided by 1 - weight^n
    so that it is not pulled towards 0 at the start (weight 0: the values themselves)."""
    smoothed, last = [], 0.0
    for count, value in enumerate(values, start=1):
        last = last * weight + (1 - weight) * value
        smoothed.append(last / (1 - weight ** count) if weight else value)
    return smoothed


def _matplotlib() -> SimpleNamespace:
    """The parts of matplotlib drawn with (its Agg canvas, no pyplot state); a one-line fix when
    it is not installed."""
    try:
        from matplotlib import colormaps
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
        from matplotlib.lines import Line2D
        from matplotlib.ticker import MaxNLocator
    except ImportError:
        raise UserError(INSTALL) from None
    return SimpleNamespace(Figure=Figure, FigureCanvasAgg=FigureCanvasAgg, Line2D=Line2D, MaxNLocator=MaxNLocator,
                           colours=colormaps["tab10"].colors)


def draw(panels: list[Panel], lines: dict[str, list], labels: list[str], out: Path, weight: float) -> None:
    """One panel per entry of `panels` (its lines from collect), in a grid whose last panel
    spans the columns left over, the runs' colours in a legend above."""
    mpl = _matplotlib()
    columns = 1 if len(panels) == 1 else 2 if len(panels) in (2, 4) else 3
    rows = math.ceil(len(panels) / columns)
    figure = mpl.Figure(figsize=(4.9 * columns, 3.3 * rows + 0.4), dpi=90, layout="constrained")
    mpl.FigureCanvasAgg(figure)
    grid = figure.add_gridspec(rows, columns)
    places = [grid[i // columns, i % columns] for i in range(len(panels) - 1)]
    axes = [figure.add_subplot(place) for place in [*places, grid[rows - 1, (len(panels) - 1) % columns:]]]
    # Ten colours, then dashed: twelve algorithms (scripts/compare_variants.py) must not share a line.
    styles = {label: {"color": mpl.colours[i % 10], "linestyle": "-" if i < 10 else "--"}
              for i, label in enumerate(labels)}
    steps = [step for panel_lines in lines.values() for _, _, curve in panel_lines for step in curve.steps]
    pad = max(0.5, 0.02 * (max(steps) - min(steps)))
    for axis, panel in zip(axes, panels):
        _draw_panel(axis, panel, lines[panel.name], styles, weight, mpl)
        axis.set_xlim(min(steps) - pad, max(steps) + pad)  # every panel over the same steps
    handles = [mpl.Line2D([], [], lw=2, **styles[label]) for label in labels]
    figure.legend(handles, labels, loc="outside upper center", ncol=min(len(labels), 6), frameon=False)
    _save(figure, out)


def _draw_panel(axis, panel: Panel, lines: list[tuple[str, str, Curve]], styles: dict, weight: float,
                mpl: SimpleNamespace) -> None:
    keys = list(dict.fromkeys(key for _, key, _ in lines)) if _several(panel, lines) else []
    marked = False
    for run, key, curve in lines:
        style, marker = dict(styles[run]), "o"
        if keys:
            index = keys.index(key)
            style["linestyle"], marker = KEY_STYLES[index % len(KEY_STYLES)], KEY_MARKERS[index % len(KEY_MARKERS)]
        if key.startswith("eval/") or len(curve.steps) == 1:
            axis.plot(curve.steps, curve.values, marker=marker, ms=4, lw=1.4, **style)
            marked = True
        else:
            axis.plot(curve.steps, curve.values, lw=0.8, alpha=0.3 if weight else 1.0, **style)
            if weight:
                axis.plot(curve.steps, smooth(curve.values, weight), lw=1.6, **style)
    _decorate(axis, panel, lines, mpl)
    if keys:
        names = _short_names(keys)
        handles = [mpl.Line2D([], [], color="0.3", linestyle=KEY_STYLES[i % len(KEY_STYLES)],
                          marker=KEY_MARKERS[i % len(KEY_MARKERS)] if marked else None, ms=4) for i in range(len(keys))]
        # beside the panel, never over its curves
        axis.legend(handles, [names[k] for k in keys], fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0),
                    borderaxespad=0, frameon=False, handlelength=3)


def _decorate(axis, panel: Panel, lines: list[tuple[str, str, Curve]], mpl: SimpleNamespace) -> None:
    values = [v for _, _, curve in lines for v in curve.values]
    if panel.log and values and min(values) > 0:
        axis.set_yscale("log")
    axis.xaxis.set_major_locator(mpl.MaxNLocator(integer=True))
    axis.set_title(panel.title, fontsize=10)
    axis.set_xlabel("step", fontsize=9)
    axis.tick_params(labelsize=8)
    axis.grid(alpha=0.3)


def _short_names(keys: list[str]) -> dict[str, str]:
    """What tells keys apart in a panel's legend: time/generate, time/push -> generate, push."""
    if len(keys) < 2:
        return {key: key for key in keys}
    head = commonprefix(keys)
    head = head[:head.rfind("/") + 1]
    tail = commonprefix([key[len(head):][::-1] for key in keys])[::-1]
    tail = tail[tail.find("/"):] if "/" in tail else ""
    return {key: key[len(head):len(key) - len(tail)] or key for key in keys}


def _save(figure, out: Path) -> None:
    if out.is_dir():
        raise UserError(f"--out {out} is a folder; name a file, e.g. {out / 'plot.png'}")
    formats = figure.canvas.get_supported_filetypes()
    if out.suffix.lstrip(".").lower() not in formats:
        raise UserError(f"--out {out}: name a picture file ending in .png (or .svg, .pdf)")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        figure.savefig(out)
    except OSError as error:
        raise UserError(f"cannot write {out}: {one_line(error)}; pick another --out") from None
