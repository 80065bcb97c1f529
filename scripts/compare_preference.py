"""DPO against GR-DPO on the embedded preference pairs, over several seeds, with the same budget.

    python scripts/compare_preference.py --out DIR [--seeds 0,1,2] [--methods dpo,gr_dpo] [overrides ...]

Each run is `grpo train +recipe=METHOD seed=S` in a fresh process. Writes DIR/results.json (one
object per method and seed: method, seed, worst_group_accuracy, mean_group_accuracy, each
group's accuracy, seconds), DIR/results.md (the per-seed rows and the mean of each method) and
DIR/preference.png (α of each group and each group's held-out preference accuracy against step,
the methods of the first seed overlaid; drawn by grpo_cli/plot.py).
Prints the table.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

from grpo_cli.plot import plot_runs

GROUP_PREFIX = "eval/"
SUFFIX = "/preference_accuracy"


def train(method: str, seed: int, args) -> tuple[Path, float]:
    run_dir = args.out / "runs" / f"{method}_seed{seed}"
    command = [sys.executable, "-m", "grpo_cli", "train", f"+recipe={method}", f"seed={seed}",
               f"output_dir={run_dir}", "overwrite=true", *args.overrides]
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"{method} seed {seed} failed (exit {done.returncode}): {done.stderr.strip()[-2000:]}")
    return run_dir, time.perf_counter() - started


def summarise(method: str, seed: int, run_dir: Path, seconds: float) -> dict:
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line]
    last = [r for r in rows if "eval/worst_group_accuracy" in r][-1]
    groups = {k[len(GROUP_PREFIX):-len(SUFFIX)]: v for k, v in last.items() if k.endswith(SUFFIX)}
    return {"method": method, "seed": seed, "worst_group_accuracy": last["eval/worst_group_accuracy"],
            "mean_group_accuracy": last["eval/mean_group_accuracy"], "groups": groups, "seconds": seconds,
            "steps": last["step"]}


def table(results: list[dict]) -> str:
    groups = sorted(results[0]["groups"])
    lines = ["| method | seed | worst group | mean over groups | " + " | ".join(groups) + " | seconds |",
             "|---" * (5 + len(groups)) + "|"]
    for r in results:
        lines.append(f"| {r['method']} | {r['seed']} | {r['worst_group_accuracy']:.3f} | {r['mean_group_accuracy']:.3f} | "
                     + " | ".join(f"{r['groups'][g]:.3f}" for g in groups) + f" | {r['seconds']:.0f} |")
    for method in dict.fromkeys(r["method"] for r in results):
        mine = [r for r in results if r["method"] == method]
        mean = lambda key: sum(r[key] for r in mine) / len(mine)  # noqa: E731
        lines.append(f"| **{method}** | mean | **{mean('worst_group_accuracy'):.3f}** | **{mean('mean_group_accuracy'):.3f}** | "
                     + " | ".join(f"{sum(r['groups'][g] for r in mine) / len(mine):.3f}" for g in groups) + " | |")
    return "\n".join(lines) + "\n"


def plot(results: list[dict], out: Path, seed: int) -> None:
    """Seed `seed` of every method, overlaid: α per group and held-out accuracy per group."""
    methods = [r["method"] for r in results if r["seed"] == seed]
    plot_runs([out / "runs" / f"{method}_seed{seed}" for method in methods], out / "preference.png",
              metrics=["alpha", "group_accuracy"], smooth=0)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--seeds", type=lambda text: [int(s) for s in text.split(",")], default=[0, 1, 2],
                        help="comma-separated")
    parser.add_argument("--methods", type=lambda text: text.split(","), default=["dpo", "gr_dpo"],
                        help="comma-separated recipes")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides applied to every run")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    results = []
    for seed in args.seeds:
        for method in args.methods:
            run_dir, seconds = train(method, seed, args)
            results.append(summarise(method, seed, run_dir, seconds))
            print(f"{method} seed {seed}: worst {results[-1]['worst_group_accuracy']:.3f} "
                  f"mean {results[-1]['mean_group_accuracy']:.3f} ({seconds:.0f} s)", flush=True)
    (args.out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    markdown = table(results)
    (args.out / "results.md").write_text(markdown)
    plot(results, args.out, args.seeds[0])
    print(markdown)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
