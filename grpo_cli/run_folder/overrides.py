"""A run's own overrides: the command-line overrides it started with, kept in its folder as
overrides.yaml. A resume repeats them (a resume may not change what the run trains) and
`grpo eval checkpoint=...` inherits them (a checkpoint is scored on its own data and
rewards). Light on purpose: the command line reads it before torch loads.
"""

from __future__ import annotations

import shlex
from pathlib import Path

import yaml

from grpo_cli.errors import one_line
from grpo_cli.run_folder.layout import OVERRIDES_FILE

# Where the run lies and how it starts: set by the command that resumes or evaluates it.
PLACEMENT_KEYS = ("output_dir", "resume", "overwrite")


def override_key(override: str) -> str:
    """`+a.b=1`, `~a.b` and `a.b=1` all set a.b."""
    return override.split("=", 1)[0].lstrip("+~")


def read_overrides(run_dir: Path) -> list[str]:
    """The overrides the run in `run_dir` started with ([] if it has no overrides.yaml);
    ValueError naming what is wrong with a damaged file."""
    path = run_dir / OVERRIDES_FILE
    if not path.exists():
        return []
    try:
        overrides = yaml.safe_load(path.read_text()) or []
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as error:
        raise ValueError(f"{OVERRIDES_FILE} cannot be read: {one_line(error)}") from error
    if not isinstance(overrides, list) or not all(isinstance(o, str) for o in overrides):
        raise ValueError(f"{OVERRIDES_FILE} is not a list of KEY=VALUE overrides")
    return overrides


def inherited(overrides: list[str], given: list[str]) -> list[str]:
    """The run's overrides that a new command on it keeps: all but its placement and those
    `given` sets again."""
    replaced = {override_key(o) for o in given} | set(PLACEMENT_KEYS)
    return [o for o in overrides if override_key(o) not in replaced]


def resume_command(run_dir: Path, overrides: list[str]) -> str:
    """The command that continues the run in `run_dir`, with its own overrides."""
    return shlex.join(["grpo", "train", *inherited(overrides, []), f"output_dir={run_dir}", "resume=auto"])
