"""Decoupled against summed rewards (GDPO against GRPO) with two rewards of unequal difficulty.

    python scripts/compare_rewards.py --out DIR [--seeds 0,1,2] [--arms sum,decoupled] [OVERRIDE ...]

Trains the embedded default with reward=arithmetic_terse (the right answer, hard; a terse
solution, easy) under algorithm.reward_aggregation=sum and =decoupled, each seed, one run at a
time (about 3 minutes each on 2 CPU cores). The arms sum_gated and decoupled_gated pay the terse
reward only for right answers (reward.functions.1.gate=final_answer). Writes to DIR:

  runs/ARM/seed_S/   each run's folder
  results.json       per arm: every run's summary, and mean and sd over seeds of each figure
  results.md         held-out accuracy at the start and the end, and each reward over the first 5
                     and the last 10 training steps, mean ± sd over seeds
  rewards.png        `grpo plot` of every run: held-out accuracy, both rewards, their advantage std

`--from-runs` rewrites the results without training.
"""

from __future__ import annotations

import os
import sys

from compare_seeds import cell, compare, parse_args

REWARDS = ["reward=arithmetic_terse"]
GATED = ["reward.functions.1.gate=final_answer"]
ARMS = {
    "sum": [*REWARDS, "algorithm.reward_aggregation=sum"],
    "decoupled": [*REWARDS, "algorithm.reward_aggregation=decoupled"],
    "sum_gated": [*REWARDS, *GATED, "algorithm.reward_aggregation=sum"],
    "decoupled_gated": [*REWARDS, *GATED, "algorithm.reward_aggregation=decoupled"],
}
COMPONENTS = ("reward/final_answer", "reward/format")


def table(results: dict) -> str:
    header = "| aggregation | held-out acc: base → final | " + " | ".join(
        f"{key.split('/')[1]}: first 5 → last 10 steps" for key in COMPONENTS) + " |"
    lines = [header, "|---|---|" + "---|" * len(COMPONENTS)]
    for arm, r in results.items():
        parts = [f"{cell(r, f'{key}_first5')} → {cell(r, f'{key}_last10')}" for key in COMPONENTS]
        lines.append(f"| {arm} | {r['base_accuracy'][0]:.3f} → {cell(r, 'final_accuracy')} | " + " | ".join(parts) + " |")
    lines.append("\nPer seed, final held-out accuracy: " + "; ".join(
        f"{arm} " + ", ".join(f"{run['final_accuracy']:.3f}" for run in r["runs"]) for arm, r in results.items()))
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    args = parse_args(__doc__, ARMS, "sum,decoupled", argv)
    return compare(args, ARMS, table, "rewards.png", ["eval/accuracy", *COMPONENTS, "advantage"])


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
