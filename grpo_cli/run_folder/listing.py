"""The run folders under a folder, read without loading a model: what `grpo runs` lists.

A run folder is one holding config.yaml (written when the run starts). For each, RunInfo gives
its algorithm and model (config.yaml), the steps done (the last step in metrics.jsonl) of those
planned (trainer.steps), its newest complete checkpoint (checkpoint.list_checkpoints), its best
held-out accuracy and the step of it, and its status:

- running: a live process holds its .lock (lock.RunLock; probed with lock.lock_holder);
- finished: every planned step is done;
- stopped: fewer steps than planned, with the command that resumes it when it has a checkpoint;
- not started: no step done (a base-model evaluation may be there);
- unknown: steps done, but config.yaml does not say how many were planned.

A damaged file (config.yaml, metrics.jsonl, overrides.yaml, .lock) is named in `problems`, never
raised: one bad folder does not stop a listing.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from grpo_cli.errors import one_line
from grpo_cli.metrics import parse_records
from grpo_cli.run_folder.checkpoint import list_checkpoints
from grpo_cli.run_folder.layout import CHECKPOINTS_DIR, CONFIG_FILE, METRICS_FILE, SUMMARY_FILE
from grpo_cli.run_folder.lock import lock_holder
from grpo_cli.run_folder.overrides import read_overrides, resume_command

# The held-out accuracy each objective logs: the RL objective's mean@k (evaluate.EvalResult),
# the preference objective's preference accuracy averaged over groups (offline.PairEvaluation).
ACCURACY_KEYS = {"rl": "eval/accuracy", "preference": "eval/mean_group_accuracy"}


@dataclass
class RunInfo:
    """One run folder as its files describe it; None where a file does not say."""

    path: Path
    algorithm: str | None = None
    model: str | None = None
    objective: str | None = None
    steps_done: int = 0  # the last step in metrics.jsonl (0: none trained)
    steps_planned: int | None = None  # trainer.steps (summary.json's when a resume raised it)
    checkpoint: Path | None = None  # the newest complete checkpoints/step_N
    best_accuracy: float | None = None
    best_step: int | None = None  # the first step that reached best_accuracy (0: the base model)
    accuracy_key: str | None = None  # the metrics.jsonl key best_accuracy was read from
    holder: dict | None = None  # who holds .lock (pid, host, since), when a live process does
    overrides: list[str] = field(default_factory=list)  # the run's own, from overrides.yaml
    problems: list[str] = field(default_factory=list)

    @property
    def status(self) -> str:
        if self.holder is not None:
            return "running"
        if self.steps_done == 0:
            return "not started"
        if self.steps_planned is None:
            return "unknown"
        return "finished" if self.steps_done >= self.steps_planned else "stopped"

    @property
    def resume_command(self) -> str | None:
        """What continues a stopped run from its checkpoint, with the run's own overrides (a
        resume may not change what it trains); None unless it is stopped with a checkpoint."""
        if self.status != "stopped" or self.checkpoint is None:
            return None
        return resume_command(self.path, self.overrides)


def find_runs(root: Path) -> list[Path]:
    """Every folder under `root` (itself included) that holds config.yaml, by path. Hidden
    folders and a run's checkpoints are not searched."""
    found = []
    for folder, subfolders, files in os.walk(root):
        is_run = CONFIG_FILE in files
        if is_run:
            found.append(Path(folder))
        subfolders[:] = [name for name in subfolders
                         if not name.startswith(".") and not (is_run and name == CHECKPOINTS_DIR)]
    return sorted(found, key=lambda path: path.parts)


def list_runs(root: Path) -> list[RunInfo]:
    return [read_run(path) for path in find_runs(root)]


def read_run(path: Path) -> RunInfo:
    """What the run folder's files say; what cannot be read goes into `problems`."""
    info = RunInfo(path=Path(path))
    config = _read_config(info)
    if config is not None:
        _describe_config(info, config)
    records = _read_metrics(info)
    info.steps_done = max((r["step"] for r in records), default=0)
    _best_accuracy(info, records)
    _read_summary(info)
    found = list_checkpoints(info.path)
    info.checkpoint = found[-1][1] if found else None
    info.overrides = _read_overrides(info)
    info.holder = lock_holder(info.path, info.problems)
    return info


def _read_config(info: RunInfo) -> dict | None:
    try:
        config = yaml.safe_load((info.path / CONFIG_FILE).read_text())
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as error:
        info.problems.append(f"{CONFIG_FILE} cannot be read: {one_line(error)}")
        return None
    if not isinstance(config, dict):
        info.problems.append(f"{CONFIG_FILE} holds no settings (a {type(config).__name__}, not a mapping)")
        return None
    return config


def _setting(config: dict, dotted: str):
    node = config
    for key in dotted.split("."):
        node = node.get(key) if isinstance(node, dict) else None
    return node


def _describe_config(info: RunInfo, config: dict) -> None:
    info.algorithm = _text(_setting(config, "algorithm.name"))
    info.objective = _text(_setting(config, "algorithm.objective"))
    info.model = _text(_setting(config, "model.name_or_path"))
    steps = _setting(config, "trainer.steps")
    if isinstance(steps, int) and not isinstance(steps, bool):
        info.steps_planned = steps
    else:
        info.problems.append(f"{CONFIG_FILE} has no whole trainer.steps (it holds {steps!r})")


def _text(value) -> str | None:
    return None if value is None else str(value)


def _read_metrics(info: RunInfo) -> list[dict]:
    """The records of metrics.jsonl that hold a whole step; a line that does not is named."""
    path = info.path / METRICS_FILE
    if not path.exists():
        return []
    try:
        lines = path.read_text().splitlines()
    except (OSError, UnicodeDecodeError) as error:
        info.problems.append(f"{METRICS_FILE} cannot be read: {one_line(error)}")
        return []
    records, bad = parse_records(lines)
    if bad:
        shown = ", ".join(map(str, bad[:3])) + (f" and {len(bad) - 3} more" if len(bad) > 3 else "")
        info.problems.append(f"{METRICS_FILE} line{'s' if len(bad) > 1 else ''} {shown} not a JSON record with a step")
    return records


def _best_accuracy(info: RunInfo, records: list[dict]) -> None:
    """The highest held-out accuracy in the records and the first step that reached it."""
    keys = [ACCURACY_KEYS[info.objective]] if info.objective in ACCURACY_KEYS else list(ACCURACY_KEYS.values())
    for key in keys:
        scored = [(r[key], r["step"]) for r in records
                  if isinstance(r.get(key), (int, float)) and not isinstance(r.get(key), bool)]
        if scored:
            best = max(value for value, _ in scored)
            info.best_accuracy = float(best)
            info.best_step = min(step for value, step in scored if value == best)
            info.accuracy_key = key
            return


def _read_summary(info: RunInfo) -> None:
    """config.yaml is never rewritten by a resume: a resume that raised trainer.steps and
    finished says so only in summary.json."""
    path = info.path / SUMMARY_FILE
    if not path.exists():
        return
    try:
        steps = json.loads(path.read_text()).get("steps")
    except (OSError, UnicodeDecodeError, ValueError, AttributeError) as error:
        info.problems.append(f"{SUMMARY_FILE} cannot be read: {one_line(error)}")
        return
    if isinstance(steps, int) and info.steps_planned is not None and steps > info.steps_planned:
        info.steps_planned = steps


def _read_overrides(info: RunInfo) -> list[str]:
    try:
        return read_overrides(info.path)
    except ValueError as error:
        info.problems.append(str(error))
        return []
