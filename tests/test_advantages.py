"""docs/algorithms.md §11.1 and §11.2 vectors, and loop-vs-vectorised equivalence of the estimators."""

import math
import random

import pytest
import torch

from grpo_cli.algorithms import ADVANTAGES, AdvantageInputs
from grpo_cli.config import AlgorithmConfig

R = [0.8, 0.6, 0.2, 0.9]


def advantages(name, rewards, group_ids=None, **overrides):
    rewards = torch.as_tensor(rewards, dtype=torch.float32)
    group_ids = torch.zeros(len(rewards), dtype=torch.long) if group_ids is None else torch.as_tensor(group_ids)
    cfg = AlgorithmConfig(**overrides)
    out = ADVANTAGES[name](AdvantageInputs(rewards, group_ids, torch.ones(len(rewards), 3)), cfg)
    assert torch.equal(out[:, 0], out[:, 2]), "an outcome advantage is the same on every token"
    return out[:, 0]


@pytest.mark.parametrize("ddof, eps, expected", [
    (0, 0.0, [0.6527534, -0.0932505, -1.5852582, 1.0257553]),
    (1, 0.0, [0.5653010, -0.0807573, -1.3728739, 0.8883301]),
    (1, 1e-6, [0.5652992, -0.0807570, -1.3728694, 0.8883273]),
    (1, 1e-4, [0.5651185, -0.0807312, -1.3724305, 0.8880433]),
])
def test_grpo_vector_8_1(ddof, eps, expected):
    got = advantages("grpo", R, std_ddof=ddof, adv_eps=eps)
    assert got.tolist() == pytest.approx(expected, abs=1e-6)


def test_dr_grpo_vector_8_1():
    assert advantages("dr_grpo", R).tolist() == pytest.approx([0.175, -0.025, -0.425, 0.275], abs=1e-7)


def test_rloo_vector_8_1():
    got = advantages("rloo", R)
    assert got.tolist() == pytest.approx([0.2333333, -0.0333333, -0.5666667, 0.3666667], abs=1e-6)


def test_zero_variance_guard_8_9():
    rewards = torch.full((16,), 0.7, dtype=torch.float32)
    for name in ADVANTAGES.keys() - {"process"}:  # process: test_process.py, from step rewards
        assert torch.count_nonzero(advantages(name, rewards, adv_eps=1e-6)) == 0, name
    # Values a hair apart (below the relative tolerance) count as no spread too.
    nudged = rewards.clone()
    nudged[3] += 1.2e-7
    assert torch.count_nonzero(advantages("grpo", nudged, adv_eps=1e-6)) == 0


def test_nan_reward_is_left_out_and_gets_zero():
    got = advantages("grpo", [0.8, math.nan, 0.6, 0.2, 0.9], std_ddof=1, adv_eps=0.0)
    assert got[1] == 0.0
    assert got[[0, 2, 3, 4]].tolist() == pytest.approx([0.5653010, -0.0807573, -1.3728739, 0.8883301], abs=1e-6)


def test_padding_tokens_carry_zero():
    mask = torch.tensor([[1, 1, 0], [1, 0, 0]], dtype=torch.float32)
    out = ADVANTAGES["grpo"](AdvantageInputs(torch.tensor([1.0, 0.0]), torch.zeros(2, dtype=torch.long), mask),
                             AlgorithmConfig())
    assert torch.equal(out == 0, mask == 0)


def _loop_reference(name, rewards, groups, ddof, eps):
    """The plain per-group loop the vectorised code must equal."""
    out = []
    for r, g in zip(rewards, groups):
        members = [x for x, h in zip(rewards, groups) if h == g and not math.isnan(x)]
        if math.isnan(r) or len(members) < 2 or max(members) - min(members) <= 1e-6 * max(1, abs(sum(members) / len(members))):
            out.append(0.0)
            continue
        mean = sum(members) / len(members)
        std = math.sqrt(sum((x - mean) ** 2 for x in members) / (len(members) - ddof))
        if name == "grpo":
            out.append((r - mean) / (std + eps))
        elif name == "dr_grpo":
            out.append(r - mean)
        else:
            out.append(r - (sum(members) - r) / (len(members) - 1))
    return out


SEQUENCE_ESTIMATORS = ["dr_grpo", "grpo", "rloo"]


@pytest.mark.parametrize("name", SEQUENCE_ESTIMATORS)
@pytest.mark.parametrize("ddof", [0, 1])
def test_vectorised_equals_loop(name, ddof):
    rng = random.Random(7)
    groups = [g for g in range(12) for _ in range(rng.choice([2, 4, 8]))]
    rewards = []
    for g in groups:
        kind = g % 4  # binary, continuous, constant, with a missing reward
        value = float(rng.random() < 0.5) if kind == 0 else 0.3 if kind == 2 else rng.uniform(-1, 1)
        rewards.append(math.nan if kind == 3 and rng.random() < 0.3 else value)
    got = advantages(name, rewards, groups, std_ddof=ddof, adv_eps=1e-6)
    assert got.tolist() == pytest.approx(_loop_reference(name, rewards, groups, ddof, 1e-6), abs=1e-5)


def _reinforce_pp_loop(rewards, groups, lengths, penalty, baseline):
    """Token rewards, returns by a backwards loop, whitening by plain sums (docs/algorithms.md §7.2)."""
    returns = []
    for i, (r, n) in enumerate(zip(rewards, lengths)):
        outcome = r
        if baseline:
            members = [x for x, g in zip(rewards, groups) if g == groups[i]]
            outcome = r - sum(members) / len(members)
        running, row = 0.0, [0.0] * n
        for t in reversed(range(n)):
            running += (outcome if t == n - 1 else 0.0) - penalty[i][t]
            row[t] = running
        returns.append(row)
    flat = [x for row in returns for x in row]
    mean = sum(flat) / len(flat)
    std = math.sqrt(sum((x - mean) ** 2 for x in flat) / len(flat))
    return [[(x - mean) / (std + 1e-6) for x in row] for row in returns]


@pytest.mark.parametrize("name, baseline", [("reinforce_pp", False), ("reinforce_pp_baseline", True)])
def test_reinforce_pp_equals_loop_with_kl_in_the_reward(name, baseline):
    rng = random.Random(3)
    groups = [g for g in range(4) for _ in range(4)]
    rewards = [float(rng.random() < 0.5) for _ in groups]
    lengths = [rng.randint(1, 7) for _ in groups]
    width = max(lengths)
    mask = torch.tensor([[1.0] * n + [0.0] * (width - n) for n in lengths])
    penalty = torch.rand(len(groups), width, generator=torch.Generator().manual_seed(0)) * 0.01 * mask
    inp = AdvantageInputs(torch.tensor(rewards), torch.tensor(groups), mask, kl_penalty=penalty)
    got = ADVANTAGES[name](inp, AlgorithmConfig(adv_eps=1e-6))
    expected = _reinforce_pp_loop(rewards, groups, lengths, penalty.tolist(), baseline)
    for row, want, n in zip(got.tolist(), expected, lengths):
        assert row[:n] == pytest.approx(want, abs=1e-5)
        assert all(x == 0.0 for x in row[n:])


@pytest.mark.parametrize("name", ["reinforce_pp", "reinforce_pp_baseline"])
def test_reinforce_pp_puts_the_outcome_on_the_last_model_token_of_an_episode(name):
    """Environment tokens (mask 0) between the model's turns change nothing: the advantages on
    the model's tokens are those of the same tokens side by side."""
    gapped = torch.tensor([[1.0, 1.0, 0.0, 0.0, 1.0, 0.0], [1.0, 0.0, 1.0, 1.0, 1.0, 0.0],
                           [1.0, 1.0, 1.0, 0.0, 0.0, 0.0], [0.0, 1.0, 0.0, 1.0, 0.0, 0.0]])
    compact = torch.tensor([[1.0] * int(n) + [0.0] * (6 - int(n)) for n in gapped.sum(-1)])
    rewards, groups = torch.tensor([1.0, 0.0, 0.0, 1.0]), torch.tensor([0, 0, 1, 1])
    got = ADVANTAGES[name](AdvantageInputs(rewards, groups, gapped), AlgorithmConfig())
    want = ADVANTAGES[name](AdvantageInputs(rewards, groups, compact), AlgorithmConfig())
    for row in range(4):
        assert got[row][gapped[row] > 0].tolist() == pytest.approx(want[row][compact[row] > 0].tolist(), abs=1e-6)
        assert (got[row][gapped[row] == 0] == 0).all()
    assert got.abs().sum() > 0


def test_kl_in_the_reward_lowers_sequence_rewards():
    mask = torch.ones(2, 3)
    penalty = torch.tensor([[0.1, 0.1, 0.1], [0.0, 0.0, 0.0]])
    inp = AdvantageInputs(torch.tensor([1.0, 1.0]), torch.zeros(2, dtype=torch.long), mask, kl_penalty=penalty)
    adv = ADVANTAGES["dr_grpo"](inp, AlgorithmConfig())
    assert adv[:, 0].tolist() == pytest.approx([-0.15, 0.15])


@pytest.mark.parametrize("name", ["grpo", "dr_grpo", "rloo", "reinforce_pp", "reinforce_pp_baseline"])
def test_a_selection_mask_is_exactly_leaving_the_rewards_out(name):
    """A group filter hands its choice over as `selected`; that must give, bit for bit, what
    the completions would get with no reward at all (NaN), and exactly 0 where not selected."""
    generator = torch.Generator().manual_seed(7)
    rewards = torch.randint(0, 3, (12,), generator=generator).float()
    rewards[5] = torch.nan  # a reward function with no opinion stays excluded as well
    group_ids = torch.arange(3).repeat_interleave(4)
    mask = (torch.arange(6)[None, :] < torch.randint(1, 7, (12, 1), generator=generator)).float()
    selected = torch.rand(12, generator=generator) > 0.3
    cfg = AlgorithmConfig(advantage=name)
    masked = ADVANTAGES[name](AdvantageInputs(rewards, group_ids, mask, selected=selected), cfg)
    unscored = ADVANTAGES[name](AdvantageInputs(torch.where(selected, rewards, torch.nan), group_ids, mask), cfg)
    assert torch.equal(masked, unscored)
    assert torch.equal(masked[~selected], torch.zeros_like(masked[~selected]))
    assert masked.abs().sum() > 0
