"""GPU checks: the same step on CUDA (skipped on machines without one)."""

import pytest
import torch

from grpo_cli.loop import train_step
from grpo_cli.runtime import build

pytestmark = pytest.mark.gpu


def test_cuda_step_matches_the_cpu_layout(make_cfg):
    cfg = make_cfg("device=cuda", "trainer.prompts_per_step=4")
    run = build(cfg, cfg.model.name_or_path)
    assert next(run.learner.model.parameters()).is_cuda
    metrics = train_step(run, 0)
    assert metrics["mismatch/abs_logprob_gap"] < 1e-3
    assert torch.isfinite(torch.tensor(metrics["loss/total"]))
