"""The learner on the tiny model: accumulated micro-batch gradients equal the full-batch
gradient for every aggregation mode, with ratios away from 1 so that clipping is active."""

import itertools
import math
import platform
import random
import subprocess
import sys

import pytest
import torch

from grpo_cli.algorithms import ADVANTAGES, AdvantageInputs
from grpo_cli.algorithms.rl_loss import RLLoss
from grpo_cli.training.learner import length_runs
from grpo_cli.sampler import SamplingParams, engine
from grpo_cli.types import Sequences

from conftest import TINY, rl_learner, seeds, train_batch
from test_config import options


@pytest.fixture(scope="module")
def rollouts(tokenizer, eval_prompts):
    sampler = engine("hf")(model_path=TINY, tokenizer=tokenizer, device=torch.device("cpu"),
                           dtype=torch.float32, batch_size=64)
    return sampler.generate(eval_prompts.take(list(range(5))), SamplingParams(4, 1.0, 1.0, 0, 40), seeds=seeds(4, 5))


def gradient(learner, batch):
    learner.zero_grad()
    loss = RLLoss.of(learner.cfg)
    metrics = learner.accumulate_gradients(batch, loss, loss.normalisers(batch))
    grads = torch.cat([p.grad.flatten() for p in learner.model.parameters() if p.grad is not None])
    return grads, metrics


@pytest.mark.parametrize("split", ["micro_batch_size=3", "micro_batch_tokens=150"])
@pytest.mark.parametrize("aggregation", ["seq_mean_token_mean", "token_mean", "seq_mean_token_sum_norm"])
def test_micro_batches_accumulate_to_the_full_batch_gradient(make_cfg, rollouts, aggregation, split):
    cfg = make_cfg(f"algorithm.aggregation={aggregation}", "algorithm.epochs=2", "algorithm.kl_coef=0.04")
    learner = rl_learner(cfg)
    batch = train_batch(learner, rollouts)
    generator = torch.Generator().manual_seed(0)
    noise = 0.3 * torch.randn(batch.old_logprobs.shape, generator=generator)
    batch.old_logprobs = (batch.old_logprobs + noise) * batch.loss_mask  # ratios away from 1: some clip
    batch.advantages = torch.randn(len(batch), 1, generator=generator) * batch.loss_mask
    learner.cfg.trainer.micro_batch_size, learner.cfg.trainer.micro_batch_tokens = len(batch), 0  # one micro-batch
    full, full_metrics = gradient(learner, batch)
    key, value = split.split("=")
    setattr(learner.cfg.trainer, key, int(value))
    assert len(list(learner.micro_batches(batch))) > 2
    micro, micro_metrics = gradient(learner, batch)
    assert full_metrics["clip/fraction"] > 0.05
    assert torch.allclose(full, micro, rtol=1e-4, atol=1e-6)
    assert micro_metrics["loss/total"] == pytest.approx(full_metrics["loss/total"], rel=1e-5, abs=1e-7)


def test_token_budget_micro_batches_trim_padding_and_keep_logprobs(make_cfg, rollouts):
    learner = rl_learner(make_cfg("algorithm.kl_coef=0.04"), total_optimizer_steps=1)
    batch = Sequences.from_rollouts(rollouts)
    whole = learner.reference_logprobs(batch)
    learner.cfg.trainer.micro_batch_tokens = 150
    parts = list(learner.micro_batches(batch))
    assert sorted(i for index, _ in parts for i in index.tolist()) == list(range(len(batch)))
    assert all(len(m) * m.input_ids.shape[1] <= 150 or len(m) == 1 for _, m in parts)
    assert min(m.input_ids.shape[1] for _, m in parts) < batch.input_ids.shape[1]  # padding trimmed
    assert torch.allclose(learner.reference_logprobs(batch), whole, atol=1e-5)


def every_cut(lengths: list[int], budget: int):
    """(runs, padded positions) of every way to cut the sorted rows that keeps each run within budget."""
    for ends in itertools.product([False, True], repeat=len(lengths) - 1):
        cuts = [0, *[i + 1 for i, end in enumerate(ends) if end], len(lengths)]
        runs = list(zip(cuts, cuts[1:]))
        if all((b - a) * lengths[a] <= budget or b - a == 1 for a, b in runs):
            yield len(runs), sum((b - a) * lengths[a] for a, b in runs)


def test_length_runs_take_the_fewest_runs_and_then_the_least_padding():
    # Greedy, each run as full as the budget allows: [10 9] [9 2] [2 1], 20 + 18 + 4 = 42 padded
    # positions. The same three runs cut elsewhere: [10] [9 9] [2 2 1], 10 + 18 + 6 = 34.
    assert length_runs(torch.tensor([10, 9, 9, 2, 2, 1]), 20) == [slice(0, 1), slice(1, 3), slice(3, 6)]
    assert length_runs(torch.tensor([50, 9]), 20) == [slice(0, 1), slice(1, 2)]  # too long for the budget: alone
    draw = random.Random(0)
    for _ in range(200):
        lengths = sorted((draw.randint(1, 30) for _ in range(draw.randint(1, 9))), reverse=True)
        budget = draw.randint(10, 120)
        runs = length_runs(torch.tensor(lengths), budget)
        assert runs[0].start == 0 and runs[-1].stop == len(lengths)
        assert all(a.stop == b.start and a.start < a.stop for a, b in zip(runs, runs[1:]))
        got = (len(runs), sum((r.stop - r.start) * lengths[r.start] for r in runs))
        assert got == min(every_cut(lengths, budget)), (lengths, budget)


def test_mu_one_single_mini_batch_skips_old_logprobs(make_cfg, rollouts):
    cfg = make_cfg("algorithm.kl_coef=0.0")
    learner = rl_learner(cfg)
    batch = train_batch(learner, rollouts)
    assert batch.old_logprobs is None and batch.ref_logprobs is None and learner.reference is None
    batch.advantages = torch.ones(len(batch), 1) * batch.loss_mask
    _, metrics = gradient(learner, batch)
    assert metrics["ratio/mean"] == pytest.approx(1.0) and metrics["clip/fraction"] == 0.0


def test_a_filtered_batch_still_takes_every_scheduled_optimizer_step(make_cfg, rollouts):
    """20 rows (filters can leave a batch that algorithm.mini_batches does not divide) in 8
    mini-batches: 8 optimizer steps of 3 or 2 rows, as the learning-rate schedule counts them
    (torch.chunk would make 7 of 3 rows and 1 missing step)."""
    learner = rl_learner(make_cfg("algorithm.mini_batches=8", "algorithm.epochs=2"), total_optimizer_steps=16)
    batch = train_batch(learner, rollouts)
    batch.advantages = torch.linspace(-1, 1, len(batch))[:, None] * batch.loss_mask
    assert len(batch) == 20
    learner.update(batch, seed=0, loss=RLLoss.of(learner.cfg))
    assert learner.scheduler.last_epoch == 16
    # 3 rows in 8 mini-batches: 3 steps of one row, 5 empty ones that only advance the schedule.
    metrics = learner.update(batch.select(torch.arange(3)), seed=1, loss=RLLoss.of(learner.cfg))
    assert learner.scheduler.last_epoch == 32
    assert metrics["loss/policy"] != 0.0 and all(map(math.isfinite, metrics.values()))


def test_zero_advantage_batch_leaves_weights_unchanged(make_cfg, rollouts):
    cfg = make_cfg("algorithm.kl_coef=0.0")
    learner = rl_learner(cfg)
    batch = train_batch(learner, rollouts)
    before = [p.detach().clone() for p in learner.model.parameters()]
    metrics = learner.update(batch, 0, RLLoss.of(cfg))
    assert metrics["grad_norm"] == 0.0
    assert all(torch.equal(a, b) for a, b in zip(before, learner.model.parameters()))


OUTCOME_ALGORITHMS = [name for name in options("algorithm") if name != "grpo_process"]


@pytest.mark.parametrize("algorithm", OUTCOME_ALGORITHMS)
def test_all_zero_variance_groups_give_no_nan_and_no_policy_gradient(make_cfg, rollouts, algorithm):
    """Every group rewarded 0.7 (fp32, where a naive (r - mean) / (std + eps) gives a spurious
    0.119, docs/algorithms.md §11.2): advantages exactly 0, a finite loss, and with β = 0 the weights do not move.
    With β > 0 the gradient is the KL term's alone."""
    cfg = make_cfg(f"algorithm={algorithm}", "algorithm.kl_coef=0.0", "algorithm.epochs=2")
    learner = rl_learner(cfg)
    batch = train_batch(learner, rollouts)
    rewards = torch.full((len(batch),), 0.7, dtype=torch.float32)
    batch.advantages = ADVANTAGES[cfg.algorithm.advantage](
        AdvantageInputs(rewards, rollouts.group_ids, batch.loss_mask), cfg.algorithm)
    assert torch.equal(batch.advantages, torch.zeros_like(batch.advantages))
    before = [p.detach().clone() for p in learner.model.parameters()]
    metrics = learner.update(batch, 0, RLLoss.of(cfg))
    assert all(torch.isfinite(torch.tensor(v)) for v in metrics.values())
    assert metrics["grad_norm"] == 0.0
    assert all(torch.equal(a, b) for a, b in zip(before, learner.model.parameters()))


def test_zero_advantages_leave_only_the_kl_gradient(make_cfg, rollouts):
    cfg = make_cfg("algorithm.kl_coef=0.04")
    learner = rl_learner(cfg)
    with torch.no_grad():  # move the policy off the reference so the KL term has a gradient
        for p in learner.model.parameters():
            p.add_(1e-2 * torch.randn_like(p))
    batch = train_batch(learner, rollouts)
    with_kl, metrics = gradient(learner, batch)
    assert metrics["loss/policy"] == 0.0 and metrics["kl"] > 0
    learner.cfg.algorithm.kl_coef = 0.0
    without_kl, _ = gradient(learner, batch)
    assert with_kl.abs().sum() > 0
    assert torch.equal(without_kl, torch.zeros_like(without_kl))


def test_dropout_is_off_in_training_mode(make_cfg, rollouts, tmp_path):
    """A model saved with dropout still gives ratio 1 against its own old log-probs."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(TINY, attention_dropout=0.5)
    model.save_pretrained(tmp_path / "dropout")
    AutoTokenizer.from_pretrained(TINY).save_pretrained(tmp_path / "dropout")
    cfg = make_cfg(f"model.name_or_path={tmp_path / 'dropout'}", "algorithm.epochs=2", "algorithm.kl_coef=0")
    learner = rl_learner(cfg)
    assert learner.model.training
    batch = train_batch(learner, rollouts)
    batch.advantages = torch.ones(len(batch), 1) * batch.loss_mask
    _, metrics = gradient(learner, batch)
    assert metrics["ratio/mean"] == pytest.approx(1.0, abs=1e-6)


@pytest.mark.parametrize("alpha", [1.0, 0.6])
def test_reference_reset_mixes_policy_into_reference(make_cfg, alpha):
    cfg = make_cfg("algorithm.kl_coef=0.04", "algorithm.ref_reset_every=5", f"algorithm.ref_mix_alpha={alpha}")
    learner = rl_learner(cfg)
    with torch.no_grad():
        for p in learner.model.parameters():
            p.add_(0.1)
    before = [r.detach().clone() for r in learner.reference.parameters()]
    learner.reset_reference(alpha)
    for ref, old, policy in zip(learner.reference.parameters(), before, learner.model.parameters()):
        assert torch.allclose(ref, alpha * policy + (1 - alpha) * old, atol=1e-6)
    assert "reference" in learner.state_dict()


@pytest.mark.parametrize("fp32_master", [True, False])
def test_bf16_with_fp32_master_weights_keeps_small_updates(make_cfg, rollouts, fp32_master):
    """At lr 1e-6 Adam moves each weight by about 1e-6: below half a bf16 ulp of most weights,
    so bf16 weights stay put, while fp32 master weights move."""
    cfg = make_cfg("model.dtype=bfloat16", f"model.fp32_master={str(fp32_master).lower()}", "trainer.lr=1e-6",
                   "trainer.warmup_steps=0")
    learner = rl_learner(cfg, torch.bfloat16)
    assert next(learner.model.parameters()).dtype == (torch.float32 if fp32_master else torch.bfloat16)
    batch = train_batch(learner, rollouts)
    batch.advantages = torch.randn(len(batch), 1, generator=torch.Generator().manual_seed(0)) * batch.loss_mask
    before = [p.detach().clone() for p in learner.model.parameters()]
    learner.optimizer_step(batch, RLLoss.of(cfg))
    moved = sum(int((p.detach() != b).sum()) for p, b in zip(learner.model.parameters(), before))
    total = sum(b.numel() for b in before)
    assert (moved / total > 0.9) if fp32_master else (moved / total < 0.1), moved / total
    pushed = learner.weights()
    assert all(torch.isfinite(v.float()).all() for v in pushed.values())


ALLOCATE_AGAIN = """
import resource, sys, torch
from grpo_cli.training.runtime import keep_freed_memory
if sys.argv[1] == "keep":
    keep_freed_memory()
def allocate():  # a step's activations, some 3 MB tensors, written and freed
    tensors = [torch.ones(750_000 + 1000 * i) for i in range(12)]
    del tensors
allocate()
allocate()  # the heap may still grow by one tensor here, by where address randomisation put it
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(5):
    allocate()
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt is glibc's")
def test_freed_memory_serves_the_next_allocations():
    """After keep_freed_memory, allocating the same tensors again reuses the heap's pages; under
    glibc's own policy every round faults in fresh ones (44,132 page faults in 5 rounds here).
    Two rounds come first: in about half the processes the second still faulted in one
    tensor's pages (732) before the heap settled, and none after."""
    faults = {mode: int(subprocess.run([sys.executable, "-c", ALLOCATE_AGAIN, mode], capture_output=True,
                                       text=True, check=True).stdout)
              for mode in ("keep", "default")}
    assert faults["keep"] < 100 < 10_000 < faults["default"]
