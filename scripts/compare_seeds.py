"""Shared by the comparison scripts: train arms x seeds one after another, summarise each run
from its metrics.jsonl, and write mean ± sd over seeds.

An arm is a name and the Hydra overrides that make it; every run is
`python -m grpo_cli train OVERRIDES seed=S output_dir=OUT/runs/ARM/seed_S`, in a fresh process,
one at a time so that timings do not disturb each other. A run whose metrics.jsonl ends with
the last step's evaluation is not trained again (rerun the script after an interruption).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path


def train_run(overrides: list[str], run_dir: Path) -> float:
    """One run in a fresh process; its wall-clock seconds. RuntimeError with the end of stderr."""
    command = [sys.executable, "-m", "grpo_cli", "train", *overrides, f"output_dir={run_dir}", "overwrite=true"]
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"{run_dir.name} failed (exit {done.returncode}): {done.stderr.strip()[-2000:]}")
    return time.perf_counter() - started


def read_rows(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]


def finished(run_dir: Path) -> bool:
    """The run logged its final evaluation (the driver evaluates after the last step)."""
    if not (run_dir / "metrics.jsonl").exists():
        return False
    rows = read_rows(run_dir)
    config = (run_dir / "config.yaml").read_text() if (run_dir / "config.yaml").exists() else ""
    steps = next((int(line.split(":")[1]) for line in config.splitlines() if line.startswith("  steps:")), None)
    return bool(rows) and "eval/accuracy" in rows[-1] and rows[-1]["step"] == steps


def run_arms(arms: dict[str, list[str]], seeds: list[int], out: Path, common: list[str]) -> dict[str, list[Path]]:
    """Train every arm with every seed (skipping finished runs); arm -> its run folders."""
    seconds_file = out / "seconds.json"
    seconds = json.loads(seconds_file.read_text()) if seconds_file.exists() else {}
    folders: dict[str, list[Path]] = {}
    for seed in seeds:  # seed-major: an interrupted comparison still has every arm at the first seeds
        for arm, overrides in arms.items():
            run_dir = out / "runs" / arm / f"seed_{seed}"
            folders.setdefault(arm, []).append(run_dir)
            if finished(run_dir):
                continue
            print(f"training {arm}, seed {seed} ...", flush=True)
            seconds[str(run_dir.relative_to(out))] = train_run([*overrides, *common, f"seed={seed}"], run_dir)
            seconds_file.write_text(json.dumps(seconds, indent=1))
    return folders


def window_mean(rows: list[dict], key: str, first: bool, count: int) -> float | None:
    """Mean of `key` over the first (or last) `count` training steps that log it."""
    values = [r[key] for r in rows if r["step"] > 0 and key in r]
    values = values[:count] if first else values[-count:]
    return sum(values) / len(values) if values else None


def summarise(run_dir: Path) -> dict:
    """Held-out accuracy and length at the start and the end; training length and every
    reward component over the first 5 and the last 10 steps."""
    rows = read_rows(run_dir)
    evals = [r for r in rows if "eval/accuracy" in r]
    out = {
        "base_accuracy": evals[0]["eval/accuracy"], "final_accuracy": evals[-1]["eval/accuracy"],
        "base_length": evals[0]["eval/mean_length"], "final_length": evals[-1]["eval/mean_length"],
        "train_length_first5": window_mean(rows, "completion/mean_length", True, 5),
        "train_length_last10": window_mean(rows, "completion/mean_length", False, 10),
    }
    components = sorted({k for r in rows for k in r if k.startswith("reward/") and k.count("/") == 1}
                        - {"reward/mean", "reward/std", "reward/finite_fraction"})
    for key in components:
        out[f"{key}_first5"] = window_mean(rows, key, True, 5)
        out[f"{key}_last10"] = window_mean(rows, key, False, 10)
    return out


def mean_sd(values: list[float]) -> tuple[float, float]:
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def aggregate(folders: dict[str, list[Path]]) -> dict[str, dict]:
    """arm -> {"runs": [per-run summaries], KEY: [mean, sd] over seeds for every summary key}."""
    results = {}
    for arm, runs in folders.items():
        summaries = [summarise(run) for run in runs if (run / "metrics.jsonl").exists()]
        keys = [k for k in summaries[0] if all(s.get(k) is not None for s in summaries)] if summaries else []
        results[arm] = {"runs": summaries, **{k: list(mean_sd([s[k] for s in summaries])) for k in keys}}
    return results


def cell(result: dict, key: str, digits: int = 3) -> str:
    mean, sd = result[key]
    return f"{mean:.{digits}f} ± {sd:.{digits}f}"


def parse_args(doc: str, arms: dict[str, list[str]], default_arms: str, argv=None) -> argparse.Namespace:
    """--out, --seeds, --arms (checked against `arms`), --from-runs and the Hydra overrides."""
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True, help="folder for runs/ and the results")
    parser.add_argument("--seeds", default="0,1,2", help="comma-separated seeds")
    parser.add_argument("--arms", default=default_arms, help=f"comma-separated, of: {', '.join(arms)}")
    parser.add_argument("--from-runs", action="store_true", help="only rebuild the results from runs/")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides applied to every run")
    args = parser.parse_args(argv)
    unknown = [a for a in args.arms.split(",") if a not in arms]
    if unknown:
        parser.error(f"unknown arms {', '.join(unknown)}; use {', '.join(arms)}")
    return args


def compare(args: argparse.Namespace, arms: dict[str, list[str]], table, picture: str, metrics: list[str]) -> int:
    """Train (unless --from-runs), then write results.json, results.md (`table(results)`) and
    the `grpo plot` picture of every run with `metrics`."""
    from grpo_cli.plot import plot_runs

    args.out.mkdir(parents=True, exist_ok=True)
    seeds = [int(s) for s in args.seeds.split(",") if s]
    chosen = {arm: arms[arm] for arm in args.arms.split(",")}
    if args.from_runs:
        folders = {arm: [args.out / "runs" / arm / f"seed_{s}" for s in seeds] for arm in chosen}
    else:
        folders = run_arms(chosen, seeds, args.out, args.overrides)
    results = aggregate(folders)
    (args.out / "results.json").write_text(json.dumps(results, indent=1))
    (args.out / "results.md").write_text(table(results))
    done = [run for runs in folders.values() for run in runs if (run / "metrics.jsonl").exists()]
    plot_runs(done, args.out / picture, metrics=metrics)
    print(table(results))
    return 0
