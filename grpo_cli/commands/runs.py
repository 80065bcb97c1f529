"""`grpo runs [DIR]`: one line per run folder under DIR (default `runs`, where output_dir goes
unless told otherwise): algorithm, model, steps done of planned, newest checkpoint, best
held-out accuracy, status; below the table, the command that resumes each stopped run.

It reads files only (grpo_cli/run_listing.py): no model loads, and a live run is not disturbed.
"""

from __future__ import annotations

from pathlib import Path

from rich import box
from rich.console import Console
from rich.table import Table
from rich.text import Text

from grpo_cli.errors import UserError
from grpo_cli.run_folder.layout import CHECKPOINTS_DIR
from grpo_cli.run_folder.listing import ACCURACY_KEYS, RunInfo, list_runs
from grpo_cli.run_folder.lock import describe_holder

USAGE = "usage: grpo runs [DIR]   (DIR: a folder of run folders, searched through; default runs)"
DEFAULT_ROOT = "runs"
WIDE = 100_000  # characters per line when the output is not a terminal
STATUS_STYLE = {"running": "cyan", "finished": "green", "stopped": "yellow", "not started": "dim", "unknown": "red"}
PREFERENCE_NOTE = ("best accuracy of a preference run ({algorithms}): held-out preference accuracy, the mean over "
                   "groups ({key})")


def main(args: list[str]) -> int:
    if any(arg in ("-h", "--help") for arg in args):
        print(USAGE)
        return 0
    root = _root(args)
    runs = list_runs(root)
    console = Console()
    if not console.is_terminal:  # a pipe or a file: one line per run, whatever its length
        console.width = WIDE
    if not runs:
        console.print(f"no run folders under {root} (a run folder holds config.yaml)", soft_wrap=True, markup=False)
        return 0
    console.print(table(runs, root))
    preference = sorted({run.algorithm or "?" for run in runs if run.accuracy_key == ACCURACY_KEYS["preference"]})
    if preference:
        console.print(PREFERENCE_NOTE.format(algorithms=", ".join(preference), key=ACCURACY_KEYS["preference"]),
                      soft_wrap=True, markup=False, highlight=False)
    for run in runs:
        note = _note(run)
        if note:
            console.print(note, soft_wrap=True, markup=False, highlight=False)
    return 0


def _root(args: list[str]) -> Path:
    options = [arg for arg in args if arg.startswith("-")]
    if options:
        raise UserError(f"grpo runs: unknown option {options[0]}; {USAGE}")
    if len(args) > 1:
        raise UserError(f"grpo runs takes one folder, got {len(args)}: {' '.join(args)}; {USAGE}")
    root = Path(args[0] if args else DEFAULT_ROOT)
    if not root.exists():
        hint = "pass the folder your runs' output_dir lies in" if args else "run it where runs/ is, or pass DIR"
        raise UserError(f"grpo runs: {root} does not exist; {hint}")
    if not root.is_dir():
        raise UserError(f"grpo runs: {root} is a file, not a folder; pass the folder that holds the run folders")
    return root


def table(runs: list[RunInfo], root: Path) -> Table:
    title = Text(f"{len(runs)} run folder{'s' if len(runs) != 1 else ''} under {root}")
    table = Table(title=title, box=box.SIMPLE_HEAD)
    table.add_column("run", overflow="fold")
    table.add_column("algorithm", overflow="fold")
    table.add_column("model", overflow="fold")
    table.add_column("steps", justify="right", no_wrap=True)
    table.add_column("checkpoint", no_wrap=True)
    table.add_column("best accuracy", justify="right", no_wrap=True)
    table.add_column("status", overflow="fold", min_width=len("not started"))
    for run in runs:
        table.add_row(Text(str(run.path)), Text(run.algorithm or "?"), Text(model_cell(run.model)), steps_cell(run),
                      run.checkpoint.name if run.checkpoint else "–", accuracy_cell(run), status_cell(run))
    return table


def model_cell(model: str | None) -> str:
    """model.name_or_path; a long local path as its last parts (a checkpoint's with its run)."""
    path = Path(model or "?")
    if not path.is_absolute() or len(path.parts) <= 4:
        return model or "?"
    return "…/" + "/".join(path.parts[-4 if path.parent.name == CHECKPOINTS_DIR else -2:])


def steps_cell(run: RunInfo) -> str:
    planned = "?" if run.steps_planned is None else str(run.steps_planned)
    return f"{run.steps_done}/{planned}"


def accuracy_cell(run: RunInfo) -> str:
    if run.best_accuracy is None:
        return "–"
    return f"{run.best_accuracy:.4f} @ {run.best_step}"


def status_cell(run: RunInfo) -> Text:
    text = Text(run.status, style=STATUS_STYLE[run.status])
    if run.holder is not None:
        text.append(f" ({describe_holder(run.holder)})")
    for problem in run.problems:  # on the row's own line: a pipe gets one line per run
        text.append(f"; {problem}", style="red")
    return text


def _note(run: RunInfo) -> str | None:
    """The line under the table for a stopped run: how to resume it, or why it cannot be."""
    if run.resume_command:
        return f"resume {run.path}: {run.resume_command}"
    if run.status == "stopped":
        return (f"{run.path} stopped after step {run.steps_done} with no complete checkpoint: resume=auto cannot "
                f"continue it; start it again (overwrite=true) or delete the folder")
    return None
