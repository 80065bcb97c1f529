"""Train every algorithm on the embedded default, side by side, and write what happened.

Each algorithm runs as `python -m grpo_cli train algorithm=NAME` with the same seed, steps and
prompt budget (plus any Hydra overrides given after the options), one after another so that
timings do not disturb each other. Outputs in --out:

  runs/NAME/          each run's folder (config, metrics.jsonl, checkpoint)
  results.json        one object per algorithm: algorithm, base_accuracy, final_accuracy,
                      final_mean_length (held-out), seconds, final_pass_at_k, steps, seed,
                      train_mean_length_last10, and the final step's sampling/* and gfpo/* figures
  results.md          the same as a markdown table
  variants.png        held-out accuracy and mean completion length against step

`--from-runs` rebuilds the three files from runs/ without training.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from grpo_cli.plot import plot_runs

ALGORITHMS = ["grpo", "grpo_process", "dr_grpo", "dapo", "gspo", "gspo_token", "gfpo", "gfpo_adaptive",
              "rloo", "reinforce_pp", "reinforce_pp_baseline", "cispo"]


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True, help="folder for runs/ and the results")
    parser.add_argument("--algorithms", default=",".join(ALGORITHMS), help="comma-separated names")
    parser.add_argument("--steps", type=int, default=None, help="trainer.steps (default: the trainer's)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--from-runs", action="store_true", help="only rebuild the results from runs/")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides applied to every run")
    return parser.parse_args(argv)


def train(name: str, args) -> float:
    """One run in a fresh process; returns its wall-clock seconds."""
    command = [sys.executable, "-m", "grpo_cli", "train", f"algorithm={name}",
               f"output_dir={args.out / 'runs' / name}", f"seed={args.seed}", "overwrite=true", *args.overrides]
    if args.steps is not None:
        command.append(f"trainer.steps={args.steps}")
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"{name} failed (exit {done.returncode}): {done.stderr.strip()[-2000:]}")
    return time.perf_counter() - started


def summarise(name: str, run_dir: Path, seconds: float, seed: int) -> dict:
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line]
    evals = [r for r in rows if "eval/accuracy" in r]
    steps = [r for r in rows if r["step"] > 0]
    last = steps[-1] if steps else {}
    lengths = [r["completion/mean_length"] for r in steps[-10:]]
    result = {
        "algorithm": name,
        "base_accuracy": evals[0]["eval/accuracy"],
        "final_accuracy": evals[-1]["eval/accuracy"],
        "final_mean_length": evals[-1]["eval/mean_length"],
        "final_pass_at_k": evals[-1]["eval/pass_at_k"],
        "seconds": seconds,
        "steps": last.get("step", 0),
        "seed": seed,
        "train_mean_length_last10": sum(lengths) / len(lengths) if lengths else None,
    }
    for key in ("sampling/", "gfpo/"):  # the method's own health figures, totalled over the run
        for metric in sorted({k for r in steps for k in r if k.startswith(key)}):
            values = [r[metric] for r in steps if metric in r]
            result[f"{metric}_total" if metric.endswith("_groups") else f"{metric}_mean"] = (
                sum(values) if metric.endswith("_groups") else sum(values) / len(values))
    return result


def table(results: list[dict]) -> str:
    lines = ["| algorithm | base acc | final acc | Δ | final mean length | seconds |", "|---|---|---|---|---|---|"]
    for r in results:
        lines.append(f"| {r['algorithm']} | {r['base_accuracy']:.3f} | {r['final_accuracy']:.3f} | "
                     f"{r['final_accuracy'] - r['base_accuracy']:+.3f} | {r['final_mean_length']:.1f} | {r['seconds']:.0f} |")
    return "\n".join(lines) + "\n"


def plot(names: list[str], out: Path) -> None:
    """variants.png: held-out accuracy and training completion length (smoothed) of every run."""
    plot_runs([out / "runs" / name for name in names], out / "variants.png",
              metrics=["eval/accuracy", "completion/mean_length"])


def main(argv=None) -> int:
    args = parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    names = [n for n in args.algorithms.split(",") if n]
    seconds_file = args.out / "seconds.json"
    seconds = json.loads(seconds_file.read_text()) if seconds_file.exists() else {}
    failed = []
    for name in [] if args.from_runs else names:
        print(f"training {name} ...", flush=True)
        try:
            seconds[name] = train(name, args)
        except RuntimeError as error:
            failed.append(name)
            print(error, file=sys.stderr)
            continue
        seconds_file.write_text(json.dumps(seconds, indent=1))
    done = [n for n in names if n not in failed and (args.out / "runs" / n / "metrics.jsonl").exists()]
    results = [summarise(n, args.out / "runs" / n, seconds.get(n, float("nan")), args.seed) for n in done]
    (args.out / "results.json").write_text(json.dumps(results, indent=1))
    (args.out / "results.md").write_text(table(results))
    if done:
        plot(done, args.out)
    print(table(results))
    return 1 if failed else 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
