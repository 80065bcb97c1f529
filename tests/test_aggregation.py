"""Several rewards into one advantage (docs/algorithms.md §10): the hand-derived
vectors, a plain loop against the vectorised code, contributions that add up, and gates."""

import math
import random

import pytest
import torch

from grpo_cli.algorithms import ADVANTAGES, AdvantageInputs
from grpo_cli.algorithms.aggregation import GROUP_RULES, reward_advantage_metrics, sequence_advantages
from grpo_cli.config import AlgorithmConfig, RewardConfig, RewardFunctionConfig
from grpo_cli.errors import ConfigError
from grpo_cli.rewards.scoring import RewardSet
from grpo_cli.validation import validate_rewards

NAN = math.nan


def inputs(terms: dict[str, list[float]], group_ids: list[int], weights: dict[str, float] | None = None):
    """AdvantageInputs whose total is the weighted sum of `terms` (NaN: no opinion), as RewardSet makes it."""
    weights = weights or {name: 1.0 for name in terms}
    columns = {name: torch.tensor(values, dtype=torch.float32) for name, values in terms.items()}
    known = torch.stack([~torch.isnan(c) for c in columns.values()]).any(0)
    total = sum(weights[n] * torch.nan_to_num(c, nan=0.0) for n, c in columns.items())
    total = torch.where(known, total, torch.full_like(total, NAN))
    return AdvantageInputs(total, torch.tensor(group_ids), torch.ones(len(group_ids), 2),
                           reward_terms={name: (weights[name], column) for name, column in columns.items()})


def advantage(name, inp, **overrides):
    out = ADVANTAGES[name](inp, AlgorithmConfig(**overrides))
    assert torch.equal(out[:, 0], out[:, 1])
    return out[:, 0].tolist()


# Two groups of two: (1,1) against (0,0), and (1,0) against (0,0).
COLLAPSE = {"a": [1.0, 0.0, 1.0, 0.0], "b": [1.0, 0.0, 0.0, 0.0]}


def test_sum_collapses_different_reward_vectors_onto_one_advantage():
    got = advantage("grpo", inputs(COLLAPSE, [0, 0, 1, 1]), adv_eps=0.0)
    assert got == pytest.approx([1 / math.sqrt(2), -1 / math.sqrt(2)] * 2, abs=1e-6)


@pytest.mark.parametrize("ddof, expected", [
    (1, [1.0954451, -1.0954451, 0.5477226, -0.5477226]),  # sqrt(2) / sqrt(5/3), sqrt(1/2) / sqrt(5/3)
    (0, [1.2649111, -1.2649111, 0.6324555, -0.6324555]),  # sqrt(2) / sqrt(5/4), sqrt(1/2) / sqrt(5/4)
])
def test_decoupled_tells_them_apart(ddof, expected):
    for spelling in ("decoupled", "normalize_then_sum"):
        got = advantage("grpo", inputs(COLLAPSE, [0, 0, 1, 1]), adv_eps=0.0, std_ddof=ddof,
                        reward_aggregation=spelling)
        assert got == pytest.approx(expected, abs=1e-6)


def test_a_reward_constant_in_a_group_adds_nothing_there_and_a_flat_group_gets_zero():
    # Group 0: a varies (z = +-0.8660254), b constant; group 1: both constant -> exactly 0, but
    # its rows count in the batch std: sqrt(4 * 0.75 / 5) = 0.7745967.
    terms = {"a": [1.0, 0.0, 1.0, 0.0, 1.0, 1.0], "b": [1.0, 1.0, 1.0, 1.0, 0.0, 0.0]}
    got = advantage("grpo", inputs(terms, [0, 0, 0, 0, 1, 1]), adv_eps=0.0, reward_aggregation="decoupled")
    assert got == pytest.approx([1.1180340, -1.1180340, 1.1180340, -1.1180340, 0.0, 0.0], abs=1e-6)
    assert got[4] == 0.0 and got[5] == 0.0


def test_missing_rewards_are_left_out_of_their_own_statistics():
    # a has opinions on rows 0, 1 (+-1/sqrt 2), b on rows 0, 2 (+-1/sqrt 2), row 3 on nothing (0,
    # and out of the batch statistics). Weights 2 and 0.5: the parts are 2.5/sqrt 2, -2/sqrt 2,
    # -0.5/sqrt 2 with mean 0 and std sqrt((3.125 + 2 + 0.125) / 2) = 1.6201852.
    terms = {"a": [1.0, 0.0, NAN, NAN], "b": [1.0, NAN, 0.0, NAN]}
    inp = inputs(terms, [0, 0, 0, 0], {"a": 2.0, "b": 0.5})
    got = advantage("grpo", inp, adv_eps=0.0, reward_aggregation="decoupled")
    assert got == pytest.approx([1.0910895, -0.8728716, -0.2182179, 0.0], abs=1e-6)
    assert got[3] == 0.0


def _decoupled_loop(terms, weights, groups, ddof, eps):
    """GDPO by plain loops: GRPO z-score of each reward in its group, weighted sum, whitening."""
    n = len(groups)
    parts, active = [0.0] * n, [False] * n
    for name, values in terms.items():
        for i in range(n):
            members = [v for v, g in zip(values, groups) if g == groups[i] and not math.isnan(v)]
            if math.isnan(values[i]) or len(members) < 2 or max(members) - min(members) <= 1e-6 * max(1.0, abs(sum(members) / len(members))):
                continue
            mean = sum(members) / len(members)
            std = math.sqrt(sum((m - mean) ** 2 for m in members) / (len(members) - ddof))
            parts[i] += weights[name] * (values[i] - mean) / (std + eps)
            active[i] = True
    valid = [i for i in range(n) if any(not math.isnan(v[i]) for v in terms.values())]
    mean = sum(parts[i] for i in valid) / len(valid)
    std = math.sqrt(sum((parts[i] - mean) ** 2 for i in valid) / (len(valid) - ddof))
    return [(parts[i] - mean) / (std + eps) if active[i] else 0.0 for i in range(n)]


@pytest.mark.parametrize("ddof", [0, 1])
def test_vectorised_equals_loop(ddof):
    rng = random.Random(11)
    groups = [g for g in range(10) for _ in range(rng.choice([2, 4, 8]))]
    terms = {"right": [], "short": [], "judge": []}
    for g in groups:
        terms["right"].append(float(rng.random() < 0.4))
        terms["short"].append(0.5 if g % 3 == 0 else rng.random())  # constant in every third group
        terms["judge"].append(NAN if rng.random() < 0.25 else rng.uniform(-2, 2))
    weights = {"right": 1.0, "short": 0.3, "judge": -0.7}
    got = advantage("grpo", inputs(terms, groups, weights), std_ddof=ddof, reward_aggregation="decoupled")
    assert got == pytest.approx(_decoupled_loop(terms, weights, groups, ddof, 1e-6), abs=1e-5)


@pytest.mark.parametrize("rule", sorted(GROUP_RULES))
@pytest.mark.parametrize("aggregation", ["sum", "decoupled"])
def test_contributions_add_up_to_the_sequence_advantage(rule, aggregation):
    generator = torch.Generator().manual_seed(3)
    groups = torch.arange(4).repeat_interleave(4).tolist()
    terms = {"a": torch.randint(0, 2, (16,), generator=generator).float().tolist(),
             "b": torch.rand(16, generator=generator).tolist()}
    terms["b"][5] = NAN
    inp = inputs(terms, groups, {"a": 1.0, "b": 0.5})
    cfg = AlgorithmConfig(reward_aggregation=aggregation)
    result = sequence_advantages(inp.sequence_rewards(), inp, cfg, GROUP_RULES[rule])
    assert torch.allclose(sum(result.per_reward.values()), result.values, atol=1e-9)
    assert result.values.abs().sum() > 0


@pytest.mark.parametrize("name", sorted(GROUP_RULES))
def test_sum_with_reward_terms_is_the_single_reward_path(name):
    """Telling the estimator the terms changes nothing under `sum`: only their total counts."""
    terms = {"a": [1.0, 0.0, 1.0, 1.0, 0.0, 0.0], "b": [0.2, 0.9, NAN, 0.4, 0.4, 0.1]}
    with_terms = inputs(terms, [0, 0, 0, 1, 1, 1], {"a": 1.0, "b": 2.0})
    alone = AdvantageInputs(with_terms.rewards, with_terms.group_ids, with_terms.loss_mask)
    cfg = AlgorithmConfig()
    assert torch.equal(ADVANTAGES[name](with_terms, cfg), ADVANTAGES[name](alone, cfg))


def test_mean_only_rules_change_only_by_the_batch_scale():
    """Dr. GRPO's rule is linear in the reward: decoupled = summed / batch std (docs/algorithms.md §10.1)."""
    terms = {"a": [1.0, 0.0, 1.0, 0.0], "b": [1.0, 0.0, 0.0, 0.0]}
    summed = torch.tensor(advantage("dr_grpo", inputs(terms, [0, 0, 1, 1])))
    decoupled = torch.tensor(advantage("dr_grpo", inputs(terms, [0, 0, 1, 1]), reward_aggregation="decoupled"))
    assert torch.allclose(decoupled, summed / (summed.std() + 1e-6), atol=1e-6)


def test_advantage_metrics_name_each_reward():
    inp = inputs(COLLAPSE, [0, 0, 1, 1])
    metrics = reward_advantage_metrics(inp, AlgorithmConfig(adv_eps=0.0, reward_aggregation="decoupled"))
    # a: +-sqrt(1/2) in both groups, whitened by sqrt(5/3): std over 4 rows 0.5477226
    assert metrics["advantage/a/mean"] == pytest.approx(0.0, abs=1e-9)
    assert metrics["advantage/a/std"] == pytest.approx(0.5477226, abs=1e-6)
    assert metrics["advantage/b/std"] == pytest.approx(0.5477226 / math.sqrt(2), abs=1e-6)
    assert reward_advantage_metrics(AdvantageInputs(inp.rewards, inp.group_ids, inp.loss_mask), AlgorithmConfig()) == {}


def gated_rewards(**gate) -> RewardConfig:
    return RewardConfig(workers=0, functions=[
        RewardFunctionConfig("final_answer", 1.0, {}),
        RewardFunctionConfig("format", 0.5, {"pattern": r"Answer: \d+"}, **gate)])


def test_a_gated_reward_counts_only_where_the_gate_is_open():
    completions = ["Answer: 4", "Answer: 5", "Answer: x", "Answer: 4"]
    with RewardSet(gated_rewards(gate="final_answer")) as rewards:
        scores = rewards.score_texts(["p"] * 4, completions, {"answer": ["4", "4", "4", "5"]})
    assert scores.components["format"].tolist() == [1.0, 0.0, 0.0, 0.0]
    assert scores.gate_open["format"].tolist() == [True, False, False, False]
    assert scores.total.tolist() == [1.5, 0.0, 0.0, 0.0]
    with RewardSet(gated_rewards(gate="final_answer", gate_min=0.0)) as rewards:  # always open
        scores = rewards.score_texts(["p"] * 4, completions, {"answer": ["4", "4", "4", "5"]})
    assert scores.components["format"].tolist() == [1.0, 1.0, 0.0, 1.0]


@pytest.mark.parametrize("gate, message", [
    ({"gate": "format"}, "names no other reward function"),
    ({"gate": "final"}, "names no other reward function; use one of: final_answer"),
])
def test_a_gate_must_name_another_function(gate, message):
    with pytest.raises(ConfigError, match=message):
        validate_rewards(gated_rewards(**gate))


def test_a_gate_without_a_correct_value_needs_gate_min():
    cfg = RewardConfig(workers=0, functions=[RewardFunctionConfig("language", 1.0, {}),
                                             RewardFunctionConfig("format", 1.0, {}, gate="language")])
    with pytest.raises(ConfigError, match=r"language has no `correct` value to reach; set reward.functions\[1\].gate_min"):
        validate_rewards(cfg)


@pytest.mark.parametrize("aggregation", ["sum", "decoupled"])
def test_a_step_logs_each_rewards_advantage_and_its_gate(make_cfg, aggregation):
    from grpo_cli.training.rl import build, train_step

    functions = "[{name:final_answer},{name:format,weight:0.5,gate:final_answer,kwargs:{pattern:'(?:(?!Terms:|Total:).)*'}}]"
    cfg = make_cfg(f"reward.functions={functions}", f"algorithm.reward_aggregation={aggregation}",
                   "trainer.prompts_per_step=4", "reward.workers=0")
    run = build(cfg, cfg.model.name_or_path)
    try:
        metrics = train_step(run, 0).metrics
    finally:
        run.close()
    assert 0 < metrics["reward/format/gate_open"] < 1
    assert metrics["reward/format/gate_open"] == pytest.approx(metrics["accuracy/train"])
    for name in ("final_answer", "format"):
        assert metrics[f"advantage/{name}/std"] > 0
        assert math.isfinite(metrics[f"advantage/{name}/mean"])
