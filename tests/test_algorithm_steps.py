"""Every algorithm in conf/algorithm takes real steps on the tiny model: finite loss, moved weights."""

import math

import pytest
import torch

from grpo_cli.compose import config_dir
from grpo_cli.training.rl import build, train_step

from test_config import options


@pytest.mark.parametrize("algorithm", options("algorithm"))
def test_two_steps(make_cfg, algorithm):
    cfg = make_cfg(f"algorithm={algorithm}", "trainer.prompts_per_step=4", "trainer.warmup_steps=0",
                   "algorithm.epochs=2", "algorithm.mini_batches=2")
    run = build(cfg, cfg.model.name_or_path)
    before = [p.detach().clone() for p in run.learner.model.parameters()]
    metrics = [train_step(run, step).metrics for step in range(2)]
    assert all(math.isfinite(m["loss/total"]) for m in metrics)
    assert any(not torch.equal(a, b) for a, b in zip(before, run.learner.model.parameters()))
    assert metrics[1]["ratio/mean"] != 1.0  # later mini-batches are off-policy


def test_dynamic_sampling_fills_the_batch_with_groups_that_have_a_spread(make_cfg):
    from grpo_cli.training.rl import Stopwatch, collect

    # G = 2 at a base accuracy near 0.4: about half the groups have no spread, so rounds refill.
    cfg = make_cfg("algorithm=dapo", "trainer.prompts_per_step=6", "sampler.n=2")
    run = build(cfg, cfg.model.name_or_path)
    rollouts, scores, selection, sampling = collect(run, 0, Stopwatch())
    kept = rollouts.select(selection.kept)
    correct = scores.correct[selection.kept].float().view(-1, cfg.sampler.n)
    assert kept.num_groups == 6 and sampling["sampling/partial_batch"] == 0.0
    assert ((correct.sum(1) > 0) & (correct.sum(1) < cfg.sampler.n)).all()
    generated = rollouts.num_groups
    assert generated == 6 * sampling["sampling/rounds"]
    assert sampling["sampling/dropped_groups"] == generated - int(sampling["sampling/kept_group_fraction"] * generated)
    kept_first_round = rollouts.group_ids[selection.kept & (rollouts.group_ids < 6)].unique().numel()
    assert sampling["sampling/refilled_groups"] == 6 - kept_first_round > 0


def test_no_group_with_a_spread_skips_the_update(make_cfg):
    """Every completion counts as correct: every group is dropped in every round, the step warns,
    trains on nothing and leaves the weights as they were."""
    cfg = make_cfg("algorithm=dapo", "trainer.prompts_per_step=2", "algorithm.max_sampling_rounds=2",
                   "reward.correct_above=-10")
    run = build(cfg, cfg.model.name_or_path)
    before = [p.detach().clone() for p in run.learner.model.parameters()]
    metrics = train_step(run, 0).metrics
    assert metrics["update/skipped"] == 1.0 and metrics["sampling/rounds"] == 2.0
    assert metrics["sampling/dropped_groups"] == 4.0 and metrics["sampling/partial_batch"] == 1.0
    assert all(torch.equal(a, b) for a, b in zip(before, run.learner.model.parameters()))


REFUSED = {"grpo_process": "learns from step rewards", "rloo": "set algorithm.kl_in=loss",
           "reinforce_pp": "set algorithm.kl_in=loss"}


ONLINE = [name for name in options("algorithm")
          if "objective: preference" not in (config_dir() / "algorithm" / f"{name}.yaml").read_text()]


@pytest.mark.parametrize("algorithm", ONLINE)
def test_decoupled_rewards_compose_with_every_algorithm_or_are_refused(make_cfg, algorithm):
    """Two rewards normalised one by one: a real step for every online algorithm (filters
    included), or one line naming the conflict."""
    from grpo_cli.errors import ConfigError

    overrides = [f"algorithm={algorithm}", "algorithm.reward_aggregation=decoupled", "trainer.prompts_per_step=4"]
    if algorithm == "grpo_process":
        overrides.append("reward=arithmetic_process")
    else:
        overrides.append("reward=arithmetic_terse")
    if algorithm in REFUSED:
        with pytest.raises(ConfigError, match=REFUSED[algorithm]):
            make_cfg(*overrides)
        return
    cfg = make_cfg(*overrides)
    run = build(cfg, cfg.model.name_or_path)
    try:
        metrics = train_step(run, 0).metrics
    finally:
        run.close()
    assert math.isfinite(metrics["loss/total"])
    assert metrics["advantage/final_answer/std"] > 0 or metrics["groups/no_spread_fraction"] == 1.0
