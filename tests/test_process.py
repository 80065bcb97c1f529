"""Process supervision (docs/algorithms.md §2.3): the docs/algorithms.md §11.8 vectors, a plain loop against the
vectorised advantage, step segmentation on the real tiny tokenizer, the rule-based step
checker, and a Hugging Face process reward model loaded from a local folder."""

import math
import random

import pytest
import torch

from grpo_cli.algorithms import ADVANTAGES, AdvantageInputs
from grpo_cli.config import AlgorithmConfig, ProcessRewardConfig
from grpo_cli.errors import ConfigError
from grpo_cli.rewards.process import ArithmeticSteps, HFProcessRewardModel, ProcessScorer, segment
from conftest import TINY

NAN = math.nan


def process(ends, rewards, lengths, groups, ddof, outcome=None, eps=0.0):
    width = max(lengths)
    mask = (torch.arange(width)[None, :] < torch.tensor(lengths)[:, None]).float()
    outcome = torch.zeros(len(lengths)) if outcome is None else torch.tensor(outcome)
    inp = AdvantageInputs(outcome, torch.tensor(groups), mask, step_ends=torch.tensor(ends),
                          step_rewards=torch.tensor(rewards, dtype=torch.float32))
    return ADVANTAGES["process"](inp, AlgorithmConfig(std_ddof=ddof, adv_eps=eps))


@pytest.mark.parametrize("ddof, first, second", [
    (0, [-0.8615, -2.0103, -1.7231], [0.8615, 0.0718]),
    (1, [-0.7706, -1.7981, -1.5412], [0.7706, 0.0642]),
])
def test_vector_8_6(ddof, first, second):
    # 1-based step ends {4, 9, 12} and {5, 8} of the reference are 0-based {3, 8, 11} and {4, 7}.
    adv = process([[3, 8, 11], [4, 7, -1]], [[0.9, 0.5, 0.1], [0.8, 0.6, NAN]], [12, 8], [0, 0], ddof)
    expected_first = [first[0]] * 4 + [first[1]] * 5 + [first[2]] * 3
    expected_second = [second[0]] * 5 + [second[1]] * 3 + [0.0] * 4
    assert adv[0].tolist() == pytest.approx(expected_first, abs=1e-4)
    assert adv[1].tolist() == pytest.approx(expected_second, abs=1e-4)


def test_zero_variance_step_rewards_give_exactly_zero():
    adv = process([[1, 3], [2, -1]], [[0.7, 0.7], [0.7, NAN]], [4, 3], [0, 0], ddof=1, eps=1e-6)
    assert torch.count_nonzero(adv) == 0


def loop_reference(ends, rewards, lengths, groups, outcome, ddof, eps):
    """docs/algorithms.md §2.3 written out: pool, z-score, sum over steps ending at or after each token."""
    out = [[0.0] * max(lengths) for _ in lengths]
    for group in set(groups):
        members = [i for i, g in enumerate(groups) if g == group and not math.isnan(outcome[i])]
        pooled = [r for i in members for e, r in zip(ends[i], rewards[i]) if e >= 0 and not math.isnan(r)]
        if len(pooled) < 2 or max(pooled) - min(pooled) <= 1e-6 * max(1.0, abs(sum(pooled) / len(pooled))):
            continue
        mean = sum(pooled) / len(pooled)
        std = math.sqrt(sum((r - mean) ** 2 for r in pooled) / (len(pooled) - ddof))
        for i in members:
            for t in range(lengths[i]):
                out[i][t] = sum((r - mean) / (std + eps) for e, r in zip(ends[i], rewards[i])
                                if e >= t and e >= 0 and not math.isnan(r))
    return out


@pytest.mark.parametrize("seed", range(5))
def test_vectorised_equals_loop(seed):
    rng = random.Random(seed)
    groups, ends, rewards, lengths, outcome = [], [], [], [], []
    for group in range(4):
        for _ in range(3):
            length = rng.randint(1, 12)
            steps = sorted(rng.sample(range(length), rng.randint(0, min(4, length))))
            values = [rng.choice([0.0, 1.0, 0.5, NAN, rng.random()]) for _ in steps]
            if group == 3:
                values = [0.7] * len(steps)  # a group with no spread
            groups.append(group), lengths.append(length), ends.append(steps), rewards.append(values)
            outcome.append(NAN if rng.random() < 0.15 else 1.0)
    width = max(len(e) for e in ends)
    ends_padded = [e + [-1] * (width - len(e)) for e in ends]
    rewards_padded = [r + [NAN] * (width - len(r)) for r in rewards]
    for ddof in (0, 1):
        adv = process(ends_padded, rewards_padded, lengths, groups, ddof, outcome, eps=1e-6)
        expected = loop_reference(ends, rewards, lengths, groups, outcome, ddof, 1e-6)
        assert torch.allclose(adv, torch.tensor(expected), atol=1e-5)
        assert adv.abs().sum() > 0
        assert torch.isfinite(adv).all()


def test_segmentation_on_the_tiny_tokenizer(tokenizer):
    text = "3+5=8\n8+2=10\nAnswer: 10"
    ids = tokenizer(text, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    scorer = ProcessScorer(ProcessRewardConfig(name="arithmetic_steps", separator="\n"), tokenizer)
    pieces = [scorer.decode(t) for t in ids]
    ends, texts = segment(pieces, "\n")
    assert texts == ["3+5=8", "8+2=10", "Answer: 10"]
    assert ends == [5, 12, len(ids) - 1]  # the two newlines, then the EOS token (forced)
    assert [tokenizer.decode([ids[e]]) for e in ends[:2]] == ["\n", "\n"]
    assert segment(pieces[:-1] + ["\n"], "\n")[0][-1] == len(ids) - 1  # trailing separator: no empty step
    assert segment(list("no separator"), "\n\n") == ([11], ["no separator"])
    assert segment([], "\n") == ([], [])
    # A blank line is not a step: it joins the next one.
    assert segment(list("1+2=3\n\nAnswer: 3"), "\n") == ([5, 15], ["1+2=3", "Answer: 3"])


def test_arithmetic_checker_labels_until_the_first_mistake():
    check = ArithmeticSteps()
    right = ["Terms: 3,5,2", "3+5=8", "8+2=10", "Total: 10", "Answer: 10"]
    slip = ["3+5=9", "9+2=11", "Answer: 11"]
    late = ["3+5=8", "8+2=10", "Answer: 11"]
    values = check(["", "", ""], [right, slip, late], question=["3+5+2"] * 3, answer=["10"] * 3)
    assert values == [[1.0] * 5, [0.0, 0.0, 0.0], [1.0, 1.0, 0.0]]
    assert check([""], [["3+5=8", "Answer: 8"]], question=["3+5+2"], answer=["10"]) == [[1.0, 0.0]]
    # The answer is compared as a number, exactly as the outcome reward final_answer does.
    assert check([""], [["3+5=8", "Answer: 8.0"]], question=["3+5"], answer=["8"]) == [[1.0, 1.0]]


def test_scorer_pads_steps_per_completion(tokenizer):
    scorer = ProcessScorer(ProcessRewardConfig(name="arithmetic_steps", separator="\n"), tokenizer)
    texts = ["3+5=8\nAnswer: 8", "3+5=9\nAnswer: 9\n"]
    ids = [tokenizer(t, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id] for t in texts]
    ends, rewards = scorer(["", ""], ids, {"question": ["3+5"] * 2, "answer": ["8"] * 2})
    assert ends.tolist() == [[5, len(ids[0]) - 1], [5, len(ids[1]) - 1]]
    assert rewards.tolist() == [[1.0, 1.0], [0.0, 0.0]]


def test_hf_prm_loads_a_local_token_classification_model(tmp_path):
    from transformers import AutoConfig, AutoTokenizer, LlamaForTokenClassification

    config = AutoConfig.from_pretrained(TINY, num_labels=2)
    torch.manual_seed(0)
    LlamaForTokenClassification(config).save_pretrained(tmp_path / "prm")
    AutoTokenizer.from_pretrained(TINY).save_pretrained(tmp_path / "prm")
    prm = HFProcessRewardModel(str(tmp_path / "prm"), step_tag="\n", batch_size=2)
    values = prm(["1+2", "3+4+5", "6+1"], [["1+2=3", "Answer: 3"], ["3+4=7", "7+5=12", "Answer: 12"], ["x"]])
    assert [len(v) for v in values] == [2, 3, 1]
    assert all(0.0 < v < 1.0 for row in values for v in row)
    alone = prm(["3+4+5"], [["3+4=7", "7+5=12", "Answer: 12"]])
    assert alone[0] == pytest.approx(values[1], abs=1e-5)  # padding in a batch changes nothing


def test_process_advantage_needs_step_rewards(make_cfg):
    with pytest.raises(ConfigError, match="reward.process"):
        make_cfg("algorithm.advantage=process")
    with pytest.raises(ConfigError, match="valid: arithmetic_steps, hf_prm"):
        make_cfg("algorithm=grpo_process", "reward.process.name=nope")
    assert make_cfg("algorithm=grpo_process").reward.process.separator == "\n"
    with pytest.raises(ConfigError, match="algorithm.kl_in=loss"):
        make_cfg("algorithm=grpo_process", "algorithm.kl_in=reward")
    with pytest.raises(ConfigError, match="reward.process.kwargs for hf_prm: missing a required argument: 'model'"):
        make_cfg("algorithm=grpo_process", "reward.process={name:hf_prm}")


def test_reward_set_fills_steps_that_reach_the_advantage(make_cfg, tokenizer):
    from grpo_cli.rewards.scoring import RewardSet
    from grpo_cli.types import PromptBatch, Rollouts, Scores

    cfg = make_cfg("algorithm=grpo_process")
    texts = ["3+5=8\nAnswer: 8", "3+5=9\nAnswer: 9", "Answer: 8"]
    ids = [tokenizer(t, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id] for t in texts]
    width = max(map(len, ids))
    completion_ids = torch.tensor([row + [0] * (width - len(row)) for row in ids])
    mask = (torch.arange(width)[None, :] < torch.tensor([len(row) for row in ids])[:, None]).long()
    zeros = torch.zeros(3, 1, dtype=torch.long)
    rollouts = Rollouts(zeros, zeros, completion_ids, mask, torch.zeros(3, width), torch.zeros(3, dtype=torch.bool),
                        torch.tensor([0, 0, 0]), texts, torch.zeros(3, dtype=torch.long))
    batch = PromptBatch([[1]], ["p"], [{"question": "3+5", "answer": "8"}])
    with RewardSet(cfg.reward, tokenizer) as rewards:
        scores = rewards.score(batch, rollouts)
        outcome_only = rewards.score(batch, rollouts, steps=False)
    assert scores.total.tolist() == [1.0, 0.0, 1.0]
    assert scores.step_ends.tolist() == [[5, len(ids[0]) - 1], [5, len(ids[1]) - 1], [len(ids[2]) - 1, -1]]
    # An answer without its working is right for the outcome reward, not for the step checker.
    assert scores.step_rewards[:, 0].tolist() == [1.0, 0.0, 0.0] and math.isnan(scores.step_rewards[2, 1])
    assert outcome_only.step_ends is None
    joined = Scores.cat([scores.select(torch.tensor([2])), scores.select(torch.tensor([0, 1]))])
    assert joined.step_ends[0].tolist() == [len(ids[2]) - 1, -1]  # -1 padding survives a join
    inp = AdvantageInputs.from_scores(scores, torch.ones(3, dtype=torch.bool), rollouts.group_ids, mask.float(), None)
    adv = ADVANTAGES["process"](inp, cfg.algorithm)
    # Pooled {1, 1, 0, 0, 0}: right steps are credited, the others pushed down.
    assert (adv[0, :len(ids[0])] > 0).all() and (adv[1, :len(ids[1])] < 0).all() and (adv[2, :len(ids[2])] < 0).all()
    assert (adv * (1 - mask)).abs().sum() == 0
