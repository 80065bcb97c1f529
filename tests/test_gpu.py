"""GPU checks (skipped without a CUDA GPU): the step on CUDA, and the colocated vLLM sampler
(the same grpo_cli/sampler/vllm.py that tests/test_vllm.py runs on the CPU, here with level-2
sleep between generation and training)."""

import importlib.util

import pytest
import torch

from grpo_cli.training.rl import build, train_step

pytestmark = pytest.mark.gpu


def test_cuda_step_matches_the_cpu_layout(make_cfg):
    cfg = make_cfg("device=cuda", "trainer.prompts_per_step=4")
    run = build(cfg, cfg.model.name_or_path)
    assert next(run.learner.model.parameters()).is_cuda
    metrics = train_step(run, 0).metrics
    assert metrics["mismatch/abs_logprob_gap"] < 1e-3
    assert torch.isfinite(torch.tensor(metrics["loss/total"]))


needs_vllm = pytest.mark.skipif(importlib.util.find_spec("vllm") is None, reason="needs the vllm extra")


@needs_vllm
def test_vllm_push_keeps_sampler_and_learner_logprobs_together(make_cfg):
    """bf16 vLLM colocated with the learner: after every push the sampler's log-probs of
    what it drew equal the learner's recomputation within bf16 tolerance, and training moves
    them (the push really replaced the engine's weights)."""
    cfg = make_cfg("device=cuda", "sampler=vllm", "sampler.n=8", "sampler.max_new_tokens=48", "model.dtype=bfloat16",
                   "sampler.gpu_memory_utilization=0.3", "trainer.prompts_per_step=16", "trainer.lr=3e-3",
                   "trainer.warmup_steps=0")
    run = build(cfg, cfg.model.name_or_path)
    try:
        batch = run.train_prompts.take(list(range(8)))
        fixed = run.sampler.generate(batch, run.train_params, seeds=list(range(8)))
        gaps = [train_step(run, step).metrics["mismatch/abs_logprob_gap"] for step in range(4)]
        again = run.sampler.generate(batch, run.train_params, seeds=list(range(8)))
    finally:
        run.sampler.close()  # vLLM holds one engine per process
        run.rewards.close()
    assert max(gaps) < 0.02, gaps
    assert again.completions != fixed.completions  # new weights draw other completions


@needs_vllm
def test_vllm_sampler_honours_n_lengths_and_seeds(make_cfg):
    cfg = make_cfg("device=cuda", "sampler=vllm", "sampler.n=4", "sampler.max_new_tokens=8",
                   "sampler.gpu_memory_utilization=0.3")
    run = build(cfg, cfg.model.name_or_path)
    try:
        batch = run.train_prompts.take([0, 1, 2])
        a = run.sampler.generate(batch, run.train_params, seeds=[1, 2, 3])
        b = run.sampler.generate(batch, run.train_params, seeds=[1, 2, 3])
    finally:
        run.sampler.close()
        run.rewards.close()
    assert a.completion_ids.shape[0] == 12 and a.completion_ids.shape[1] <= 8
    assert a.group_ids.tolist() == [g for g in range(3) for _ in range(4)]
    assert torch.equal(a.completion_ids, b.completion_ids)
    assert bool(a.truncated.any()) and (a.completion_mask.sum(-1)[a.truncated] == 8).all()
