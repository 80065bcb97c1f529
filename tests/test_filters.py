"""Group filters: GFPO subsets and advantages (docs/algorithms.md §11.9), adaptive k and DAPO's
dynamic sampling (docs/algorithms.md §6.2, §4.2 and §11.10), and the batch plumbing that
removes and concatenates rows."""

import math

import pytest
import torch

from grpo_cli.algorithms import ADVANTAGES, GROUP_FILTERS, AdvantageInputs
from grpo_cli.algorithms.filters import DifficultyTracker, FilterContext, top_k_per_group
from grpo_cli.config import AlgorithmConfig, GfpoConfig
from grpo_cli.types import Rollouts, Scores

R = [0.8, 0.6, 0.2, 0.9]
LENGTHS = [100, 50, 80, 200]


def context(seed=0, history=()):
    tracker = DifficultyTracker(window=100)
    tracker.values.extend(history)
    return FilterContext(torch.Generator().manual_seed(seed), tracker)


def case(rewards, lengths, groups=None):
    n, width = len(rewards), max(lengths)
    mask = (torch.arange(width)[None, :] < torch.tensor(lengths)[:, None]).long()
    groups = torch.zeros(n, dtype=torch.long) if groups is None else torch.tensor(groups)
    zeros = torch.zeros(n, width, dtype=torch.long)
    rollouts = Rollouts(prompt_ids=zeros[:, :1], prompt_mask=zeros[:, :1], completion_ids=zeros,
                        completion_mask=mask, sampler_logprobs=torch.zeros(n, width),
                        truncated=torch.zeros(n, dtype=torch.bool), group_ids=groups, completions=[""] * n,
                        policy_version=torch.zeros(n, dtype=torch.long))
    rewards = torch.tensor(rewards)
    return rollouts, Scores(total=rewards, correct=rewards > 0.5)


def gfpo_advantages(metric, ddof):
    rollouts, scores = case(R, LENGTHS)
    cfg = AlgorithmConfig(group_filter="gfpo", std_ddof=ddof, adv_eps=0.0, gfpo=GfpoConfig(k=2, metric=metric))
    selected = GROUP_FILTERS["gfpo"](rollouts, scores, cfg, context()).selected
    rewards = torch.where(selected, scores.total, math.nan)
    adv = ADVANTAGES["grpo"](AdvantageInputs(rewards, rollouts.group_ids, rollouts.completion_mask.float()), cfg)
    return selected.tolist(), adv[:, 0].tolist()


@pytest.mark.parametrize("ddof, expected", [(0, [0, 1, -1, 0]), (1, [0, 0.7071068, -0.7071068, 0])])
def test_shortest_k_vector_8_7(ddof, expected):
    selected, adv = gfpo_advantages("length", ddof)
    assert selected == [False, True, True, False]
    assert adv == pytest.approx(expected, abs=1e-6)


@pytest.mark.parametrize("ddof, expected", [(0, [1, -1, 0, 0]), (1, [0.7071068, -0.7071068, 0, 0])])
def test_token_efficiency_vector_8_7(ddof, expected):
    selected, adv = gfpo_advantages("token_efficiency", ddof)
    assert selected == [True, True, False, False]
    assert adv == pytest.approx(expected, abs=1e-6)


def test_top_k_per_group_matches_a_loop_and_breaks_ties_reproducibly():
    g = torch.Generator().manual_seed(1)
    groups = torch.arange(6).repeat_interleave(5)[torch.randperm(30, generator=g)]
    values = torch.randint(0, 3, (30,), generator=g).float()  # many ties
    picked = top_k_per_group(values, groups, 2, torch.Generator().manual_seed(7))
    again = top_k_per_group(values, groups, 2, torch.Generator().manual_seed(7))
    assert torch.equal(picked, again)
    for group in range(6):
        members = (groups == group).nonzero().flatten()
        kept = members[picked[members]]
        assert len(kept) == 2
        assert values[kept].min() >= values[members[~picked[members]]].max()


def test_k_at_least_g_keeps_everything():
    rollouts, scores = case(R, LENGTHS)
    cfg = AlgorithmConfig(group_filter="gfpo", gfpo=GfpoConfig(k=4))
    selection = GROUP_FILTERS["gfpo"](rollouts, scores, cfg, context())
    assert selection.selected.all() and selection.kept.all()


def test_drop_mode_removes_rejected_and_keeps_the_subset_advantages():
    rollouts, scores = case(R, LENGTHS)
    zero = AlgorithmConfig(group_filter="gfpo", std_ddof=0, adv_eps=0.0, gfpo=GfpoConfig(k=2))
    drop = AlgorithmConfig(group_filter="gfpo", std_ddof=0, adv_eps=0.0, gfpo=GfpoConfig(k=2, rejected="drop"))
    kept_all = GROUP_FILTERS["gfpo"](rollouts, scores, zero, context())
    dropped = GROUP_FILTERS["gfpo"](rollouts, scores, drop, context())
    assert kept_all.kept.tolist() == [True] * 4
    assert dropped.kept.tolist() == dropped.selected.tolist() == [False, True, True, False]
    small, small_scores = rollouts.select(dropped.kept), scores.select(dropped.kept)
    adv = ADVANTAGES["grpo"](AdvantageInputs(small_scores.total, small.group_ids, small.completion_mask.float()), drop)
    assert adv[:, 0].tolist() == pytest.approx([1.0, -1.0])
    assert small.completion_lengths.tolist() == [50, 80]
    assert dropped.metrics["gfpo/kept_mean_length"] == 65 and dropped.metrics["gfpo/rejected_mean_length"] == 150


def test_top_k_per_group_takes_a_k_per_group():
    groups = torch.tensor([0, 0, 0, 1, 1, 1])
    values = torch.tensor([3.0, 2.0, 1.0, 3.0, 2.0, 1.0])
    picked = top_k_per_group(values, groups, torch.tensor([1, 3]), torch.Generator().manual_seed(0))
    assert picked.tolist() == [True, False, False, True, True, True]


def adaptive_case():
    """Four groups of 4 with mean rewards 0, 0.25, 0.5 and 1 (shortest first in each group)."""
    rewards = [0, 0, 0, 0, 1, 0, 0, 0, 1, 0, 1, 0, 1, 1, 1, 1]
    lengths = [10, 11, 12, 13] * 4
    return case([float(r) for r in rewards], lengths, groups=[0] * 4 + [1] * 4 + [2] * 4 + [3] * 4)


def test_adaptive_k_uses_the_largest_k_until_enough_prompts_were_seen():
    rollouts, scores = adaptive_case()
    cfg = AlgorithmConfig(group_filter="gfpo_adaptive", gfpo=GfpoConfig(adaptive_k=[4, 3, 2, 1], adaptive_warmup=8))
    selection = GROUP_FILTERS["gfpo_adaptive"](rollouts, scores, cfg, context(history=[0.5] * 7))
    assert selection.selected.all() and selection.metrics["gfpo/mean_k"] == 4


def test_adaptive_k_by_difficulty_quartile():
    # History 0, 0.1, ..., 1.0: q25 = 0.25, q50 = 0.5, q75 = 0.75 exactly.
    rollouts, scores = adaptive_case()
    cfg = AlgorithmConfig(group_filter="gfpo_adaptive", gfpo=GfpoConfig(adaptive_k=[4, 3, 2, 1], adaptive_warmup=8))
    ctx = context(history=[i / 10 for i in range(11)])
    assert ctx.difficulty.quartiles(8).tolist() == pytest.approx([0.25, 0.5, 0.75])
    selection = GROUP_FILTERS["gfpo_adaptive"](rollouts, scores, cfg, ctx)
    per_group = selection.selected.view(4, 4)
    # mean 0 < q25: very hard, k 4; 0.25 is not < q25: hard, k 3; 0.5: medium, k 2; 1.0: easy, k 1.
    assert per_group.sum(1).tolist() == [4, 3, 2, 1]
    assert per_group[:, 0].all()  # the shortest is always among the kept
    assert selection.metrics["gfpo/mean_k"] == 2.5


def test_difficulty_tracker_window_and_state():
    tracker = DifficultyTracker(window=3)
    tracker.record(torch.tensor([1.0, 0.0, 1.0, 1.0, math.nan, 0.0]), torch.tensor([0, 0, 1, 1, 2, 2]))
    tracker.record(torch.tensor([0.25, 0.75]), torch.tensor([0, 0]))
    assert list(tracker.values) == [1.0, 0.0, 0.5]  # the oldest (0.5) fell out of the window
    copy = DifficultyTracker(window=3)
    copy.load_state_dict(tracker.state_dict())
    assert list(copy.values) == [1.0, 0.0, 0.5]


def test_dynamic_sampling_keeps_groups_with_a_spread_of_correctness():
    # Group 0 all correct but with different shaped rewards: dropped (the filter reads correctness).
    rollouts, scores = case([1.0, 0.9, 0.0, 1.0, 0.0, 0.0], [3, 4, 3, 4, 3, 4], groups=[0, 0, 1, 1, 2, 2])
    scores.correct = torch.tensor([True, True, False, True, False, False])
    selection = GROUP_FILTERS["dynamic_sampling"](rollouts, scores, AlgorithmConfig(), context())
    assert selection.kept.tolist() == selection.selected.tolist() == [False, False, True, True, False, False]


def test_rounds_concatenate_with_distinct_groups_and_padding():
    first, first_scores = case([1.0, 0.0], [2, 3])
    second, second_scores = case([0.0, 1.0, 1.0, 0.0], [5, 1, 2, 2], groups=[0, 0, 1, 1])
    second_scores.components = {"a": torch.ones(4)}
    first_scores.components = {"a": torch.zeros(2)}
    both = Rollouts.cat([first, second])
    scores = Scores.cat([first_scores, second_scores])
    assert both.group_ids.tolist() == [0, 0, 1, 1, 2, 2]
    assert both.completion_ids.shape == (6, 5) and both.completion_lengths.tolist() == [2, 3, 5, 1, 2, 2]
    assert scores.total.tolist() == [1, 0, 0, 1, 1, 0] and scores.components["a"].tolist() == [0, 0, 1, 1, 1, 1]
    kept = both.select(torch.tensor([False, False, True, True, False, False]) | (both.group_ids == 2))
    assert kept.group_ids.tolist() == [0, 0, 1, 1] and kept.completion_lengths.tolist() == [5, 1, 2, 2]
