"""Built-in rewards and their combination into Scores, on real completions' shapes."""

import math

import pytest
import torch

from grpo_cli.config import RewardConfig, RewardFunctionConfig
from grpo_cli.rewards.scoring import RewardSet
from grpo_cli.rewards.builtin import extract_final_answer, final_answer
from grpo_cli.types import PromptBatch, Rollouts


@pytest.mark.parametrize("text, expected", [
    ("3+5=8\n8+2=10\nAnswer: 10", 10.0), ("Answer: 7\nAnswer: 1,234", 1234.0), ("Answer: $-3.5", -3.5),
    ("no answer 12", None), ("Answer: x", None),
])
def test_extract_final_answer(text, expected):
    assert extract_final_answer(text) == expected


def test_final_answer_scores_and_dapo_sign():
    completions = ["Answer: 10", "Answer: 11", "nothing"]
    assert final_answer()(["p"] * 3, completions, answer=["10", "10", "10"]) == [1.0, 0.0, 0.0]
    assert final_answer(1.0, -1.0)(["p"] * 3, completions, answer=[10, 10, 10]) == [1.0, -1.0, -1.0]


def _rollouts(texts, groups):
    n = len(texts)
    zeros = torch.zeros(n, 1, dtype=torch.long)
    return Rollouts(prompt_ids=zeros, prompt_mask=zeros, completion_ids=zeros, completion_mask=zeros,
                    sampler_logprobs=torch.zeros(n, 1), truncated=torch.zeros(n, dtype=torch.bool),
                    group_ids=torch.tensor(groups), completions=texts, policy_version=torch.zeros(n, dtype=torch.long))


def test_weighted_total_components_and_correctness():
    cfg = RewardConfig(functions=[RewardFunctionConfig("final_answer", 1.0, {}),
                                  RewardFunctionConfig("final_answer", 0.5, {"correct": 2.0, "incorrect": -2.0})])
    batch = PromptBatch(prompt_ids=[[1], [2]], prompts=["a", "b"], examples=[{"answer": "3"}, {"answer": "4"}])
    with RewardSet(cfg) as rewards:  # the real path: two worker processes
        scores = rewards.score(batch, _rollouts(["Answer: 3", "Answer: 5", "Answer: 4"], [0, 0, 1]))
    assert scores.total.tolist() == pytest.approx([2.0, -1.0, 2.0])
    assert sorted(scores.components) == ["final_answer", "final_answer_2"]
    assert scores.correct.tolist() == [True, False, True]


def test_none_means_no_opinion(tmp_path):
    (tmp_path / "abstain.py").write_text("def abstain(prompts, completions, **_):\n    return [None] * len(completions)\n")
    cfg = RewardConfig(functions=[RewardFunctionConfig(f"{tmp_path}/abstain.py:abstain", 1.0, {})], workers=0)
    batch = PromptBatch(prompt_ids=[[1]], prompts=["a"], examples=[{"answer": "3"}])
    scores = RewardSet(cfg).score(batch, _rollouts(["x", "y"], [0, 0]))
    assert all(math.isnan(v) for v in scores.total.tolist())
    assert scores.failed["abstain"].tolist() == [False, False]  # no opinion is not a failure


@pytest.mark.parametrize("length, expected", [(16000, 0.0), (16384, 0.0), (18000, -0.39453125), (20480, -1.0), (21000, -1.0)])
def test_overlong_vector_8_2(length, expected):
    from grpo_cli.rewards.builtin import overlong_penalty

    assert overlong_penalty(length, max_length=20480, cache_length=4096) == pytest.approx(expected, abs=1e-12)


def test_overlong_counts_completion_tokens_including_eos():
    cfg = RewardConfig(functions=[RewardFunctionConfig("final_answer", 1.0, {}),
                                  RewardFunctionConfig("overlong", 1.0, {"max_length": 4, "cache_length": 2})])
    rollouts = _rollouts(["Answer: 3", "Answer: 3"], [0, 0])
    rollouts.completion_ids = torch.tensor([[5, 6, 2, 0], [5, 6, 7, 2]])
    rollouts.completion_mask = torch.tensor([[1, 1, 1, 0], [1, 1, 1, 1]])
    batch = PromptBatch(prompt_ids=[[1]], prompts=["a"], examples=[{"answer": "3"}])
    with RewardSet(cfg) as rewards:
        scores = rewards.score(batch, rollouts)
    assert scores.components["overlong"].tolist() == pytest.approx([-0.5, -1.0])  # lengths 3 and 4
    assert scores.total.tolist() == pytest.approx([0.5, 0.0])
    assert scores.correct.tolist() == [True, True]  # correctness comes from the first function only
