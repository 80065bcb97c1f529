"""Every algorithm in conf/algorithm takes real steps on the tiny model: finite loss, moved weights."""

import math

import pytest
import torch

from grpo_cli.loop import train_step
from grpo_cli.runtime import build
from test_config import options


@pytest.mark.parametrize("algorithm", options("algorithm"))
def test_two_steps(make_cfg, algorithm):
    cfg = make_cfg(f"algorithm={algorithm}", "trainer.prompts_per_step=4", "trainer.warmup_steps=0",
                   "algorithm.epochs=2", "algorithm.mini_batches=2")
    run = build(cfg, cfg.model.name_or_path)
    before = [p.detach().clone() for p in run.learner.model.parameters()]
    metrics = [train_step(run, step) for step in range(2)]
    assert all(math.isfinite(m["loss/total"]) for m in metrics)
    assert any(not torch.equal(a, b) for a, b in zip(before, run.learner.model.parameters()))
    assert metrics[1]["ratio/mean"] != 1.0  # later mini-batches are off-policy
