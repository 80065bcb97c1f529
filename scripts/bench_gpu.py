"""GPU benchmark of the colocated path: the vllm sampler, the weight push and the learner, on a
model of a real architecture and size with random weights (nothing is downloaded).

    python scripts/bench_gpu.py                       # Qwen2.5-1.5B shape, one H100 / H200
    python scripts/bench_gpu.py --push-shape qwen2.5-7b --json out.json

Prints, in one run:
  1. correctness: the mean |sampler - learner| log-prob gap of every step's completions (the
     learner recomputes what vLLM drew, after each push), and how far a few steps move the
     learner's log-probs of a fixed sequence;
  2. generation: completion tokens/s of the vllm sampler against the same engine's
     LLM.generate called directly with the same prompts and sampling (goal >= 0.9);
  3. the weight push in seconds (goal <= 0.1 s for 1.5B), and for --push-shape;
  4. the learner: tokens/s, model FLOPs utilisation (6 x parameters x tokens against the bf16
     dense peak; goal >= 45%) and peak GPU memory;
  5. one step's time split into generate / reward / log-probs / update / push.
Figures, not assertions. The model and its tokenizer come from scripts/random_model.py: any
sampled id decodes, and completions run to the length limit.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch
from random_model import SHAPES, make_model

BF16_PEAK = {"H100": 989e12, "H200": 989e12, "A100": 312e12}  # dense tensor-core FLOP/s


def build_run(model_dir: Path, run_dir: str, args):
    from grpo_cli.compose import compose, to_object
    from grpo_cli.training.rl import build
    from grpo_cli.validation import validate

    overrides = [f"output_dir={run_dir}", f"model.name_or_path={model_dir}", "model.dtype=bfloat16", "device=cuda",
                 "model.gradient_checkpointing=true", "sampler=vllm", f"sampler.n={args.n}",
                 f"sampler.max_new_tokens={args.max_new_tokens}", f"sampler.gpu_memory_utilization={args.gpu_memory}",
                 f"trainer.prompts_per_step={args.prompts}", "trainer.logprob_chunk=256",
                 f"trainer.micro_batch_tokens={args.micro_batch_tokens}", "data.chat_template=false",
                 "trainer.lr=1e-5", "trainer.warmup_steps=0", *args.overrides]
    cfg = validate(to_object(compose(overrides)))
    return build(cfg, cfg.model.name_or_path)


def timed(fn):
    torch.cuda.synchronize()
    start = time.perf_counter()
    out = fn()
    torch.cuda.synchronize()
    return out, time.perf_counter() - start


def generation(run, seeds) -> dict[str, float]:
    """Ours against the engine's own generate with identical requests."""
    from vllm.inputs import TokensPrompt

    batch = run.train_prompts.take(list(range(len(seeds))))
    run.sampler.wake()
    ours, ours_s = timed(lambda: run.sampler.generate(batch, run.train_params, seeds=seeds))
    prompts = [TokensPrompt(prompt_token_ids=ids) for ids in batch.prompt_ids]
    direct, direct_s = timed(lambda: run.sampler.llm.generate(
        prompts, run.sampler.request_params(run.train_params, seeds), use_tqdm=False))
    ours_tokens = float(ours.completion_lengths.sum())
    direct_tokens = float(sum(len(c.token_ids) for out in direct for c in out.outputs))
    return {"sampler_tokens_per_s": ours_tokens / ours_s, "direct_tokens_per_s": direct_tokens / direct_s,
            "sampler_over_direct": (ours_tokens / ours_s) / (direct_tokens / direct_s)}


def learner_throughput(run, steps: int) -> dict[str, float]:
    """Recompute-and-update seconds on one step's batch, as tokens/s and MFU."""
    from grpo_cli.training.rl import Stopwatch, collect
    from grpo_cli.types import BatchLogprobs, Sequences, TrainBatch

    rollouts, _, _, _ = collect(run, 0, Stopwatch())
    run.sampler.sleep()
    sequences = Sequences.from_rollouts(rollouts)
    batch = TrainBatch.assemble(sequences, torch.randn(len(sequences), 1) * sequences.loss_mask, BatchLogprobs())
    tokens = float(batch.attention_mask.sum())
    seconds = [timed(lambda: run.learner.update(batch, i, run.loss))[1] for i in range(steps)]
    params = sum(p.numel() for p in run.learner.model.parameters())
    name = torch.cuda.get_device_name()
    peak = next((v for k, v in BF16_PEAK.items() if k in name), float("nan"))
    per_step = statistics.median(seconds)
    return {"learner_tokens_per_s": tokens / per_step, "learner_mfu": 6 * params * tokens / per_step / peak,
            "learner_params": params, "peak_gpu_gib": torch.cuda.max_memory_allocated() / 2**30}


def push_seconds(run, repeats: int = 5) -> float:
    weights = run.learner.weights()
    run.sampler.sleep()
    return statistics.median(timed(lambda: run.sampler.load_weights(weights, version=0))[1] for _ in range(repeats))


def step_split(run, steps: int) -> dict[str, float]:
    """Whole training steps (after one warm-up): the time split, the sampler-learner gap after
    each push, and how far the steps move the learner's log-probs of a fixed sequence."""
    from grpo_cli.training.rl import train_step
    from grpo_cli.types import Sequences

    probe = Sequences.from_rollouts(run.sampler.generate(run.train_prompts.take([0, 1, 2, 3]), run.train_params,
                                                            seeds=[0, 1, 2, 3]))
    before = run.learner.policy_logprobs(probe)
    records = [train_step(run, step).metrics for step in range(steps + 1)][1:]
    after = run.learner.policy_logprobs(probe)
    out = {f"step_{k.removeprefix('time/')}_s": statistics.mean(r[k] for r in records)
           for k in records[0] if k.startswith("time/")}
    out["max_step_logprob_gap"] = max(r["mismatch/abs_logprob_gap"] for r in records)
    out["fixed_sequence_logprob_shift"] = float((after - before).abs().sum() / probe.loss_mask.sum())
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", default="qwen2.5-1.5b", choices=SHAPES)
    parser.add_argument("--push-shape", choices=SHAPES, help="also time the push for this shape")
    parser.add_argument("--prompts", type=int, default=32)
    parser.add_argument("--n", type=int, default=8)
    parser.add_argument("--max-new-tokens", type=int, default=1024)
    parser.add_argument("--micro-batch-tokens", type=int, default=16384)
    parser.add_argument("--gpu-memory", type=float, default=0.35, help="sampler.gpu_memory_utilization")
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--json")
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args()
    figures: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as folder:
        run = build_run(make_model(Path(folder) / "model", args.shape, device="cuda"), str(Path(folder) / "run"), args)
        figures.update(generation(run, list(range(args.prompts))))
        figures[f"push_s_{args.shape}"] = push_seconds(run)
        figures.update(step_split(run, args.steps))
        figures.update(learner_throughput(run, args.steps))
    if args.push_shape:
        with tempfile.TemporaryDirectory() as folder:
            other = build_run(make_model(Path(folder) / "model", args.push_shape, device="cuda"), str(Path(folder) / "run"), args)
            figures[f"push_s_{args.push_shape}"] = push_seconds(other)
    for key, value in figures.items():
        print(f"{key:34s} {value:.4f}" if isinstance(value, float) else f"{key:34s} {value}")
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
