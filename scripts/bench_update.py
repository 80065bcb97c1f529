"""Time the learner's update on one fixed batch under several trainer.micro_batch_tokens values,
interleaved, in one process: a paired comparison that the machine's drift between commands
cannot blur.

    python scripts/bench_update.py +recipe=smollm2_cpu --micro-batch-tokens 0 2560 1280 640
    python scripts/bench_update.py --micro-batch-tokens 0 512        # the embedded default

Builds the configured run, samples and scores one step's batch with the real step's
functions, then runs `Learner.update` on that same batch once per value per round (the
weights move a little with each update; the work does not). 0 packs nothing: the rows go
in trainer.micro_batch_size slices, each padded to its longest row. Prints the median seconds
of the rounds after the first (which warms the allocator), wall clock and the process's CPU
time (on a shared virtual machine the CPU time leaves out what neighbours took; with one
thread it is the steadier figure), and every round's wall-clock figure.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

from grpo_cli.compose import compose, to_object
from grpo_cli.model_source import prepare
from grpo_cli.training.rl import Stopwatch, build, collect, update_batch
from grpo_cli.training.runtime import keep_freed_memory, quiet_libraries
from grpo_cli.types import TrainBatch
from grpo_cli.validation import validate


def fixed_batch(run) -> TrainBatch:
    """Step 0's batch as the step hands it to the update."""
    rollouts, scores, selection, _ = collect(run, 0, Stopwatch())
    kept = selection.kept
    return update_batch(run, 0, rollouts.select(kept), scores.select(kept), selection.selected[kept], Stopwatch())[0]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--micro-batch-tokens", type=int, nargs="+", required=True)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("overrides", nargs="*", help="config overrides, as for grpo train")
    args = parser.parse_args()
    quiet_libraries()
    keep_freed_memory()  # as grpo train does
    cfg = prepare(validate(to_object(compose(["output_dir=unused", *args.overrides]))))
    run = build(cfg, cfg.model.name_or_path)
    try:
        batch = fixed_batch(run)
        print(f"{len(batch)} rows, {int(batch.loss_mask.sum())} completion tokens, padded to "
              f"{batch.attention_mask.shape[1]} positions")
        seconds = {tokens: [] for tokens in args.micro_batch_tokens}
        cpu_seconds = {tokens: [] for tokens in args.micro_batch_tokens}
        for round_ in range(args.rounds):
            for tokens in args.micro_batch_tokens:
                run.learner.cfg.trainer.micro_batch_tokens = tokens  # read at each update
                start, cpu_start = time.perf_counter(), time.process_time()
                run.learner.update(batch, round_, run.loss)
                seconds[tokens].append(time.perf_counter() - start)
                cpu_seconds[tokens].append(time.process_time() - cpu_start)
    finally:
        run.close()
    print(paired_table("trainer.micro_batch_tokens", "update", seconds, cpu_seconds))
    return 0


def paired_table(setting: str, timed: str, seconds: dict, cpu_seconds: dict) -> str:
    """A markdown table: per setting, the median wall-clock and CPU seconds of the rounds after
    the first (which warms the allocator), and every round's wall-clock figure."""
    lines = [f"| {setting} | median s per {timed} | median CPU s | rounds (s) |", "|---|---|---|---|"]
    for value, figures in seconds.items():
        cpu = cpu_seconds[value]
        lines.append(f"| {value} | {statistics.median(figures[1:] or figures):.3f} | "
                     f"{statistics.median(cpu[1:] or cpu):.3f} | {', '.join(f'{s:.2f}' for s in figures)} |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
