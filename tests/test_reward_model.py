"""A Hugging Face sequence-classification reward model, made from the shipped tiny model's
weights with a seeded one-logit head and loaded from a folder, as a hub model would be."""

import pytest
import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from grpo_cli.config import RewardConfig, RewardFunctionConfig
from grpo_cli.rewards.scoring import RewardSet

from conftest import TINY


@pytest.fixture(scope="module")
def reward_model_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("rm")
    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_pretrained(TINY, num_labels=1)
    model.save_pretrained(folder)
    AutoTokenizer.from_pretrained(TINY).save_pretrained(folder)
    return folder


def reference_scores(folder, conversations):
    """One conversation at a time, no padding: the head's logit on the last token."""
    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForSequenceClassification.from_pretrained(folder).eval()
    out = []
    for conversation in conversations:
        ids = tokenizer(tokenizer.apply_chat_template(conversation, tokenize=False), return_tensors="pt",
                        add_special_tokens=False)["input_ids"]
        with torch.no_grad():
            out.append(float(model(input_ids=ids).logits[0, 0]))
    return out


def test_reward_model_scores_the_conversation_batched_like_one_at_a_time(reward_model_dir):
    prompts = ["3+4", "12+5+1", "2+2"]
    completions = ["3+4=7\nAnswer: 7", "12+5=17\n17+1=18\nAnswer: 18 and then some more words", "Answer: 5"]
    messages = [[{"role": "user", "content": p}] for p in prompts]
    expected = reference_scores(reward_model_dir, [m + [{"role": "assistant", "content": c}]
                                                    for m, c in zip(messages, completions)])
    cfg = RewardConfig(functions=[RewardFunctionConfig("reward_model", 1.0,
                                                       {"model": str(reward_model_dir), "batch_size": 2,
                                                        "device": "cpu"})])
    with RewardSet(cfg) as rewards:
        assert rewards.workers is None  # a model runs in the trainer's process
        scores = rewards.score_texts(["rendered"] * 3, completions, {"messages": messages})
    assert scores.components["reward_model"].tolist() == pytest.approx(expected, abs=1e-5)
    assert len(set(round(v, 4) for v in expected)) == 3  # the head tells the three apart


def test_reward_model_with_several_labels_is_refused(tmp_path):
    from grpo_cli.rewards.model import HFRewardModel

    AutoModelForSequenceClassification.from_pretrained(TINY, num_labels=3).save_pretrained(tmp_path)
    AutoTokenizer.from_pretrained(TINY).save_pretrained(tmp_path)
    with pytest.raises(ValueError, match="has 3 labels; a reward model has one"):
        HFRewardModel(str(tmp_path), device="cpu")
