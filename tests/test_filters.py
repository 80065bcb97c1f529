"""GFPO subset selection and advantages: ALGORITHMS.md §8.7."""

import math

import pytest
import torch

from grpo_cli.algorithms import ADVANTAGES, GROUP_FILTERS, AdvantageInputs
from grpo_cli.algorithms.filters import top_k_per_group
from grpo_cli.config import AlgorithmConfig
from grpo_cli.types import Rollouts, Scores

R = [0.8, 0.6, 0.2, 0.9]
LENGTHS = [100, 50, 80, 200]


def case(rewards, lengths, groups=None):
    n, width = len(rewards), max(lengths)
    mask = (torch.arange(width)[None, :] < torch.tensor(lengths)[:, None]).long()
    groups = torch.zeros(n, dtype=torch.long) if groups is None else torch.tensor(groups)
    zeros = torch.zeros(n, width, dtype=torch.long)
    rollouts = Rollouts(prompt_ids=zeros[:, :1], prompt_mask=zeros[:, :1], completion_ids=zeros,
                        completion_mask=mask, sampler_logprobs=torch.zeros(n, width),
                        truncated=torch.zeros(n, dtype=torch.bool), group_ids=groups, completions=[""] * n)
    return rollouts, Scores(total=torch.tensor(rewards))


def gfpo_advantages(metric, ddof):
    rollouts, scores = case(R, LENGTHS)
    cfg = AlgorithmConfig(group_filter="gfpo", gfpo_k=2, gfpo_metric=metric, std_ddof=ddof, adv_eps=0.0)
    selected = GROUP_FILTERS["gfpo"](rollouts, scores, cfg, torch.Generator().manual_seed(0))
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
    cfg = AlgorithmConfig(group_filter="gfpo", gfpo_k=4)
    assert GROUP_FILTERS["gfpo"](rollouts, scores, cfg, torch.Generator()).all()
