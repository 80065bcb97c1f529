"""Metrics: one JSON object per step in metrics.jsonl, and a rich progress bar."""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

# soft_wrap: a line naming a long path stays one line in a log file or a pipe, where rich
# would otherwise break it at 80 columns.
console = Console(stderr=True, soft_wrap=True)


@dataclass
class StepResult:
    """What a training step reports. metrics: name -> value, with loss/total and
    update/nonfinite; samples: completion samples (grpo_cli/completion_samples.py), when asked for."""

    metrics: dict[str, float]
    samples: list[dict] = field(default_factory=list)


def _clean(value):
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


class MetricsFile:
    """Append-only JSON lines. Lines of steps after `keep_through` are dropped on open, so a
    resumed run (keep_through = its checkpoint's step) writes no step twice, and a fresh run
    (keep_through = -1) starts an empty file. With no path (a rank other than the first) it
    writes nothing."""

    def __init__(self, path: Path | None, keep_through: int):
        self.path = path
        self.handle = None
        if path is None:
            return
        if path.exists():
            kept = [line for line in path.read_text().splitlines() if -1 < _step_of(line) <= keep_through]
            # Rewritten beside and renamed: a kill here leaves the old file, never half of it.
            partial = path.with_suffix(".jsonl.partial")
            partial.write_text("".join(line + "\n" for line in kept))
            os.replace(partial, path)
        self.handle = path.open("a")

    def write(self, record: dict) -> None:
        if self.handle is None:
            return
        self.handle.write(json.dumps({k: _clean(v) for k, v in record.items()}) + "\n")
        self.handle.flush()

    def close(self) -> None:
        if self.handle is not None:
            self.handle.close()

    def __enter__(self) -> "MetricsFile":
        return self

    def __exit__(self, *_) -> None:
        self.close()


def parse_records(lines: list[str]) -> tuple[list[dict], list[int]]:
    """The step records among metrics.jsonl's lines, each parsed once, and the numbers (from 1)
    of the non-blank lines that hold none (torn by a kill mid-write, or damaged)."""
    records, bad = [], []
    for number, line in enumerate(lines, start=1):
        try:
            record = json.loads(line)
            step = record["step"]
        except (ValueError, TypeError, KeyError):
            record, step = None, None
        if isinstance(step, int) and not isinstance(step, bool) and step >= 0:
            records.append(record)
        elif line.strip():
            bad.append(number)
    return records, bad


def _step_of(line: str) -> int:
    """The step of a metrics line; -1 for a blank line or one torn by a kill mid-write."""
    try:
        return int(json.loads(line).get("step", 0))
    except (json.JSONDecodeError, AttributeError, TypeError, ValueError):
        return -1


class ProgressBar:
    """step, ETA, reward, accuracy, length, KL, clip fraction, tokens/s."""

    FIELDS = (("reward", "reward/mean", "{:.3f}"), ("acc", "accuracy/train", "{:.2f}"),
              ("len", "completion/mean_length", "{:.1f}"), ("kl", "kl", "{:.4f}"),
              ("clip", "clip/fraction", "{:.3f}"), ("tok/s", "perf/tokens_per_second", "{:.0f}"))

    def __init__(self, total: int, start: int):
        self.progress = Progress(
            TextColumn("[bold]step"), MofNCompleteColumn(), BarColumn(bar_width=24),
            TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn(), TextColumn("{task.fields[stats]}"),
            # rich's default, 10 redraws a second, took 1.5 % of a core in a terminal
            console=console, transient=False, refresh_per_second=2)
        self.task = self.progress.add_task("train", total=total, completed=start, stats="")

    def __enter__(self):
        self.progress.__enter__()
        return self

    def __exit__(self, *exc):
        return self.progress.__exit__(*exc)

    def update(self, step: int, record: dict) -> None:
        stats = " ".join(f"{name} {fmt.format(record[key])}" for name, key, fmt in self.FIELDS
                         if isinstance(record.get(key), (int, float)))
        self.progress.update(self.task, completed=step, stats=stats)


def results_table(title: str, rows: dict[str, dict]) -> Table:
    """rows: label -> {metric: value}; one column per metric any row has ("–" where a row has none)."""
    table = Table(title=title)
    keys = list(dict.fromkeys(key for values in rows.values() for key in values))
    table.add_column("")
    for key in keys:
        table.add_column(key, justify="right")
    cell = lambda value: "–" if value is None else f"{value:.4f}" if isinstance(value, float) else str(value)  # noqa: E731
    for label, values in rows.items():
        table.add_row(label, *[cell(values.get(k)) for k in keys])
    return table


def headline(result: dict) -> dict:
    """The results table's columns for a run's or a checkpoint's figures: task accuracy, or
    per-group preference accuracy."""
    keys = ("accuracy", "pass_at_k", "k", "n", "mean_length", "tool_call_rate", "tool_ok_rate", "worst_group_accuracy",
            "mean_group_accuracy")
    groups = {name: v["preference_accuracy"] for name, v in result.get("groups", {}).items()}
    return {**{k: result[k] for k in keys if k in result}, **groups}
