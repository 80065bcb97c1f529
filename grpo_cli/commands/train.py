"""`grpo train`: the driver's run, its summary.json and the results table."""

from __future__ import annotations

import shlex

from grpo_cli.config import GrpoConfig
from grpo_cli.metrics import console, headline, results_table
from grpo_cli.run_folder.admission import write_summary
from grpo_cli.training.driver import train


def run(cfg: GrpoConfig, config_yaml: str, overrides: list[str]) -> int:
    summary = train(cfg, config_yaml, overrides)
    write_summary(summary["run_dir"], summary)
    rows = {label: headline(summary[key]) for label, key in (("base", "base"), ("trained", "final")) if summary[key]}
    if rows:
        console.print(results_table(f"held-out accuracy ({summary['steps']} steps)", rows))
    console.print(f"run folder: {summary['run_dir']}")
    if summary["checkpoint"]:
        console.print(f"checkpoint: {summary['checkpoint']}")
        evaluate = shlex.join(["grpo", "eval", f"checkpoint={summary['checkpoint']}"])
        console.print(f"evaluate it: {evaluate}")
    return 0
