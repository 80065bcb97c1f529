"""The multi-turn demonstrations side by side: tool use, the same task without the tool, and
text feedback, each trained on the CPU with its recipe; then a table and a picture.

Runs, one after another in fresh processes (Hydra overrides after the options apply to all):

  tools         grpo train +recipe=embedded_tools
  no_tool       grpo train +recipe=embedded_tools environment=single_turn   (same data, no tool offered)
  feedback      grpo train +recipe=embedded_feedback

Outputs in --out: runs/NAME/ (each run's folder), results.json, results.md and episodes.png
(held-out accuracy; the tool run's held-out call and ok-call rates; the feedback run's
first-attempt and retry success in training, 5-step means). `--from-runs` redraws from runs/.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

RUNS = {
    "tools": ["+recipe=embedded_tools"],
    "no_tool": ["+recipe=embedded_tools", "environment=single_turn"],
    "feedback": ["+recipe=embedded_feedback"],
}


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True, help="folder for runs/ and the results")
    parser.add_argument("--runs", default=",".join(RUNS), help="comma-separated names among " + ", ".join(RUNS))
    parser.add_argument("--from-runs", action="store_true", help="only rebuild the results from runs/")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides applied to every run")
    return parser.parse_args(argv)


def train(name: str, args) -> float:
    command = [sys.executable, "-m", "grpo_cli", "train", *RUNS[name], f"output_dir={args.out / 'runs' / name}",
               "overwrite=true", *args.overrides]
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"{name} failed (exit {done.returncode}): {done.stderr.strip()[-2000:]}")
    return time.perf_counter() - started


def rows_of(out: Path, name: str) -> list[dict]:
    return [json.loads(line) for line in (out / "runs" / name / "metrics.jsonl").read_text().splitlines() if line]


def summarise(name: str, rows: list[dict], seconds: float) -> dict:
    evals = [r for r in rows if "eval/accuracy" in r]
    steps = [r for r in rows if r["step"] > 0 and "loss/total" in r]
    tail = lambda key: sum(r.get(key, 0.0) for r in steps[-10:]) / max(1, len(steps[-10:]))  # noqa: E731
    head = lambda key: sum(r.get(key, 0.0) for r in steps[:10]) / max(1, len(steps[:10]))  # noqa: E731
    return {
        "run": name, "command": "grpo train " + " ".join(RUNS[name]), "seconds": seconds, "steps": len(steps),
        "base_accuracy": evals[0]["eval/accuracy"], "final_accuracy": evals[-1]["eval/accuracy"],
        "base_tool_call_rate": evals[0].get("eval/tool_call_rate"), "final_tool_call_rate": evals[-1].get("eval/tool_call_rate"),
        "base_tool_ok_rate": evals[0].get("eval/tool_ok_rate"), "final_tool_ok_rate": evals[-1].get("eval/tool_ok_rate"),
        "retry_correct_first10": head("episode/retry_correct"), "retry_correct_last10": tail("episode/retry_correct"),
    }


def table(results: list[dict]) -> str:
    fmt = lambda value: "–" if value is None else f"{value:.3f}"  # noqa: E731
    lines = ["| run | command | held-out acc, step 0 → last | tool calls (held-out) | calls that ran | "
             "retries right (train, first → last 10 steps) | minutes |", "|---|---|---|---|---|---|---|"]
    for r in results:
        retry = (f"{r['retry_correct_first10']:.3f} → {r['retry_correct_last10']:.3f}" if r["run"] == "feedback"
                 else "–")
        lines.append(f"| {r['run']} | `{r['command']}` | {r['base_accuracy']:.3f} → {r['final_accuracy']:.3f} | "
                     f"{fmt(r['base_tool_call_rate'])} → {fmt(r['final_tool_call_rate'])} | "
                     f"{fmt(r['base_tool_ok_rate'])} → {fmt(r['final_tool_ok_rate'])} | {retry} | {r['seconds'] / 60:.1f} |")
    return "\n".join(lines) + "\n"


def plot(out: Path, names: list[str]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (accuracy, tools, retries) = plt.subplots(1, 3, figsize=(15, 4.2), dpi=110)
    for name in names:
        rows = rows_of(out, name)
        evals = [r for r in rows if "eval/accuracy" in r]
        accuracy.plot([r["step"] for r in evals], [r["eval/accuracy"] for r in evals], marker="o", ms=3, label=name)
        if name == "tools":
            for key, label in (("eval/tool_call_rate", "episodes that call add"), ("eval/tool_ok_rate", "calls that ran")):
                tools.plot([r["step"] for r in evals if key in r], [r[key] for r in evals if key in r], marker="o", ms=3,
                           label=label)
        if name == "feedback":
            steps = [r for r in rows if "episode/retry_correct" in r]
            for key, label in (("episode/first_attempt_correct", "first attempt right"),
                               ("episode/retry_correct", "retry right (of retries)")):
                values = [r[key] for r in steps]
                smooth = [sum(values[max(0, i - 4):i + 1]) / len(values[max(0, i - 4):i + 1]) for i in range(len(values))]
                retries.plot([r["step"] for r in steps], smooth, label=label)
    accuracy.set(xlabel="step", ylabel="held-out accuracy (mean@k)", title="held-out accuracy")
    tools.set(xlabel="step", ylabel="share", title="tools: held-out tool use")
    retries.set(xlabel="step", ylabel="share", title="feedback: training episodes (5-step mean)")
    for axis in (accuracy, tools, retries):
        axis.grid(alpha=0.3)
        axis.legend(fontsize=8)
        axis.set_ylim(0, 1)
    figure.tight_layout()
    figure.savefig(out / "episodes.png", bbox_inches="tight")


def main(argv=None) -> int:
    args = parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    names = [n for n in args.runs.split(",") if n]
    seconds_file = args.out / "seconds.json"
    seconds = json.loads(seconds_file.read_text()) if seconds_file.exists() else {}
    for name in [] if args.from_runs else names:
        print(f"training {name} ...", flush=True)
        seconds[name] = train(name, args)
        seconds_file.write_text(json.dumps(seconds, indent=1))
    results = [summarise(n, rows_of(args.out, n), seconds.get(n, float("nan"))) for n in names]
    (args.out / "results.json").write_text(json.dumps(results, indent=1))
    (args.out / "results.md").write_text(table(results))
    plot(args.out, names)
    print(table(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
