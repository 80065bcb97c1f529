"""`grpo train -m a=1,2 b=x,y`: Hydra's multirun, one training run per point of the grid.

Hydra's own override parser expands the sweep (every comma list, range() or choice(), as
`hydra -m` would). Each member runs as its own `grpo train` process, one after another, in
its own folder under the sweep folder (`output_dir`, default multirun/DATE_TIME), named by
its swept values as Hydra's override_dirname does. A member that fails is reported and the
sweep goes on. The sweep ends with a table (final held-out accuracy, completion length,
time) and a `grpo plot` of its members, sweep.png.
"""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException

from grpo_cli.errors import UserError
from grpo_cli.metrics import console, results_table
from grpo_cli.plot import plot_runs
from grpo_cli.run_folder.layout import SUMMARY_FILE


@dataclass
class Member:
    name: str
    overrides: list[str]
    folder: Path
    exit_code: int | None = None
    seconds: float = 0.0


def expand(overrides: list[str]) -> tuple[list[str], list[list[str]]]:
    """(the fixed overrides, one list of swept overrides per grid point)."""
    try:
        parsed = OverridesParser.create().parse_overrides([o for o in overrides if not o.startswith("output_dir=")])
    except HydraException as error:
        raise UserError(f"grpo train -m: {error}".splitlines()[0]) from None
    fixed = [o.input_line for o in parsed if not o.is_sweep_override()]
    axes = [[f"{o.get_key_element()}={value}" for value in o.sweep_string_iterator()]
            for o in parsed if o.is_sweep_override()]
    return fixed, [list(point) for point in itertools.product(*axes)]


def sweep_folder(overrides: list[str]) -> Path:
    given = [o.split("=", 1)[1] for o in overrides if o.startswith("output_dir=")]
    return Path(given[-1] if given else time.strftime("multirun/%Y-%m-%d_%H-%M-%S"))


def run_member(member: Member, fixed: list[str]) -> None:
    command = [sys.executable, "-m", "grpo_cli", "train", *fixed, *member.overrides, f"output_dir={member.folder}"]
    console.rule(f"{member.name}")
    start = time.perf_counter()
    member.exit_code = subprocess.run(command).returncode
    member.seconds = time.perf_counter() - start
    if member.exit_code != 0:
        console.print(f"[red]sweep member {member.name} failed[/] (exit {member.exit_code}); going on")


def figures(member: Member) -> dict:
    summary_path = member.folder / SUMMARY_FILE
    if member.exit_code != 0 or not summary_path.is_file():
        return {"status": f"failed ({member.exit_code})", "minutes": round(member.seconds / 60, 2)}
    final = json.loads(summary_path.read_text()).get("final") or {}
    return {"status": "done", "accuracy": final.get("accuracy"), "mean_length": final.get("mean_length"),
            "minutes": round(member.seconds / 60, 2)}


def main(overrides: list[str]) -> int:
    fixed, points = expand(overrides)
    if len(points) < 2:
        raise UserError("grpo train -m needs a swept key (a comma list such as seed=0,1); without one, drop -m")
    root = sweep_folder(overrides)
    members = [Member(",".join(point), point, root / ",".join(point)) for point in points]
    console.print(f"sweep of {len(members)} runs into {root}")
    for member in members:
        run_member(member, fixed)
    rows = {member.name: figures(member) for member in members}
    (root / "sweep.json").write_text(json.dumps(rows, indent=1))
    console.print(results_table(f"sweep {root}", rows))
    done = [m.folder for m in members if m.exit_code == 0]
    if done:
        try:
            plot_runs(done, root / "sweep.png")
            console.print(f"curves: {root / 'sweep.png'}")
        except UserError as error:  # no matplotlib: the sweep itself succeeded
            console.print(f"[yellow]no sweep.png:[/] {error}")
    failed = [m.name for m in members if m.exit_code != 0]
    if failed:
        console.print(f"[red]{len(failed)} of {len(members)} runs failed:[/] {', '.join(failed)}")
    return 1 if failed else 0
