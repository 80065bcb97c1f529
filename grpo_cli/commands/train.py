"""`grpo train`: the driver's run, its summary.json and the results table."""

from __future__ import annotations

import json
import shlex
from pathlib import Path

from grpo_cli.config import GrpoConfig
from grpo_cli.driver import train
from grpo_cli.metrics import console, headline, results_table


def run(cfg: GrpoConfig, config_yaml: str, overrides: list[str]) -> int:
    summary = train(cfg, config_yaml, overrides)
    Path(summary["run_dir"], "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    rows = {label: headline(summary[key]) for label, key in (("base", "base"), ("trained", "final")) if summary[key]}
    if rows:
        console.print(results_table(f"held-out accuracy ({summary['steps']} steps)", rows))
    console.print(f"run folder: {summary['run_dir']}")
    if summary["checkpoint"]:
        console.print(f"checkpoint: {summary['checkpoint']}")
        evaluate = shlex.join(["grpo", "eval", f"checkpoint={summary['checkpoint']}"])
        console.print(f"evaluate it: {evaluate}")
    return 0
