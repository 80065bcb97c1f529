"""`grpo plot RUN [RUN ...]`: curves from run folders, overlaid, written to one picture.

It reads metrics.jsonl only (grpo_cli/plot.py draws): no model loads, and a live run can be
plotted while it trains. Prints the path of the picture it wrote.
"""

from __future__ import annotations

from pathlib import Path

from grpo_cli.errors import UserError
from grpo_cli.plot import DEFAULT_PANELS, DEFAULT_SMOOTH, PREFERENCE_PANELS, plot_runs

DEFAULT_OUT = "plot.png"
USAGE = f"""usage: grpo plot RUN [RUN ...] [--metrics KEY,KEY,...] [--out FILE.png] [--smooth W]

  RUN            a run folder (its output_dir, holding metrics.jsonl); several are overlaid,
                 one colour each, labelled by folder name
  --metrics      one panel per entry: a metrics.jsonl key (reward/mean), a pattern (alpha/*:
                 one line per match) or a built-in panel (time: seconds per step by stage).
                 Default: {", ".join(p.name for p in DEFAULT_PANELS)};
                 preference runs (DPO, IPO, GR-DPO, GR-IPO):
                 {", ".join(p.name for p in PREFERENCE_PANELS)}
  --out          the picture to write (default {DEFAULT_OUT}; .svg and .pdf work too)
  --smooth       exponential moving average weight, as TensorBoard's (default {DEFAULT_SMOOTH}; 0: raw);
                 the raw curve is drawn faint beneath; held-out eval/* curves are never smoothed"""
OPTIONS = ("--metrics", "--out", "--smooth")


def main(args: list[str]) -> int:
    if any(arg in ("-h", "--help") for arg in args):
        print(USAGE)
        return 0
    runs, options = parse(args)
    metrics = [m.strip() for m in options["--metrics"].split(",") if m.strip()] if "--metrics" in options else None
    if metrics == []:
        raise UserError("--metrics is empty; name keys, e.g. --metrics reward/mean,eval/accuracy")
    out = Path(options.get("--out", DEFAULT_OUT))
    plot_runs(runs, out, metrics, smoothing(options.get("--smooth")))
    print(out)
    return 0


def parse(args: list[str]) -> tuple[list[str], dict[str, str]]:
    """Run folders, and {option: value} for --metrics, --out, --smooth (`--out F` or `--out=F`)."""
    runs, options = [], {}
    it = iter(args)
    for arg in it:
        name, sep, value = arg.partition("=")
        if name in OPTIONS:
            value = value if sep else next(it, None)
            if value is None or (not sep and value.startswith("--")):
                raise UserError(f"{name} needs a value; {USAGE.splitlines()[0]}")
            options[name] = value
        elif arg.startswith("-") and not Path(arg).exists():
            raise UserError(f"grpo plot: unknown option {arg}; {USAGE.splitlines()[0]}")
        else:
            runs.append(arg)
    if not runs:
        raise UserError(f"grpo plot needs at least one run folder; {USAGE.splitlines()[0]}")
    return runs, options


def smoothing(text: str | None) -> float:
    if text is None:
        return DEFAULT_SMOOTH
    try:
        return float(text)
    except ValueError:
        raise UserError(f"--smooth takes a number from 0 (raw) to below 1, got {text!r}; e.g. --smooth 0.6") from None
