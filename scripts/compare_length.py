"""GFPO against GRPO where GRPO lengthens answers (+recipe=embedded_verbose), over seeds.

    python scripts/compare_length.py --out DIR [--seeds 0,1,2] [OVERRIDE ...]

Trains `algorithm=grpo` and `algorithm=gfpo` (`--arms` may add dr_grpo) on
+recipe=embedded_verbose with each seed, one run at a time (about 2 minutes each on 2 CPU
cores), then writes to DIR:

  runs/ARM/seed_S/   each run's folder
  results.json       per arm: every run's summary, and mean and sd over seeds of each figure
  results.md         held-out accuracy and length at the start and the end, training length
                     over the first 5 and the last 10 steps, and GFPO's cut of GRPO's growth
  length.png         `grpo plot` of every run: held-out accuracy and completion length

The growth of a run is its training length over the last 10 steps minus the first 5; GFPO's
cut is 1 - (GFPO's mean growth / GRPO's). `--from-runs` rewrites the results without training.
"""

from __future__ import annotations

import os
import sys

from compare_seeds import cell, compare, parse_args

ARMS = {"grpo": ["+recipe=embedded_verbose", "algorithm=grpo"],
        "gfpo": ["+recipe=embedded_verbose", "algorithm=gfpo"],
        "dr_grpo": ["+recipe=embedded_verbose", "algorithm=dr_grpo"]}


def growth(result: dict) -> list[float]:
    return [r["train_length_last10"] - r["train_length_first5"] for r in result["runs"]]


def table(results: dict) -> str:
    lines = ["| algorithm | held-out acc: base → final | held-out length: base → final | training length: "
             "first 5 → last 10 steps | growth (tokens) |", "|---|---|---|---|---|"]
    for arm, r in results.items():
        grown = growth(r)
        lines.append(f"| {arm} | {r['base_accuracy'][0]:.3f} → {cell(r, 'final_accuracy')} | "
                     f"{r['base_length'][0]:.1f} → {cell(r, 'final_length', 1)} | "
                     f"{cell(r, 'train_length_first5', 1)} → {cell(r, 'train_length_last10', 1)} | "
                     f"{sum(grown) / len(grown):+.1f} ({', '.join(f'{g:+.1f}' for g in grown)}) |")
    if {"grpo", "gfpo"} <= results.keys():
        grpo, gfpo = (sum(growth(results[a])) / len(results[a]["runs"]) for a in ("grpo", "gfpo"))
        accuracy_gap = results["gfpo"]["final_accuracy"][0] - results["grpo"]["final_accuracy"][0]
        cut = f"{1 - gfpo / grpo:.0%}" if grpo > 0 else "n/a (GRPO did not grow)"
        lines.append(f"\nGFPO cuts GRPO's length growth by {cut}; final held-out accuracy GFPO − GRPO = {accuracy_gap:+.3f}.")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    args = parse_args(__doc__, ARMS, "grpo,gfpo", argv)
    return compare(args, ARMS, table, "length.png", ["eval/accuracy", "completion/mean_length"])


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
