"""Process rewards: one score per reasoning step, for process-supervised GRPO.

Steps are found on the sampled token ids, never by re-tokenising the text
(docs/algorithms.md §2.3): each token is decoded on its own, a separator occurrence ends a
step at the token that holds its last character, and the last step always ends at the last
valid token.

A process reward is `(prompts, steps, **columns) -> list[list[float | None]]`, one value per
step. Built in: `arithmetic_steps`, a rule-based checker for the embedded task, and `hf_prm`,
a Hugging Face token-classification process reward model (Math-Shepherd / Qwen-PRM style: the
probability of the positive label at the end of a step tag appended after every step).
"""

from __future__ import annotations

import bisect
import math
import re

import torch

from grpo_cli.config import ProcessRewardConfig
from grpo_cli.rewards.builtin import extract_final_answer, parse_number, same_number
from grpo_cli.tasks.arithmetic import parse_question

STEP_LINE = re.compile(r"^(\d+)\+(\d+)=(\d+)$")


def segment(pieces: list[str], separator: str) -> tuple[list[int], list[str]]:
    """Step end token indices (0-based) and step texts of one completion, from the decoded
    text of each of its valid tokens."""
    if not pieces:
        return [], []
    offsets, total = [], 0
    for piece in pieces:
        total += len(piece)
        offsets.append(total)  # token i holds characters [offsets[i-1], offsets[i])
    text = "".join(pieces)
    ends = []
    for match in re.finditer(re.escape(separator), text):
        token = bisect.bisect_right(offsets, match.end() - 1)
        start = offsets[ends[-1]] if ends else 0
        # A step of only whitespace (a blank line, repeated separators) is not a step: it
        # joins the next one, so no checker or PRM scores an empty string.
        if (not ends or token > ends[-1]) and text[start:match.start()].strip():
            ends.append(token)
    last = len(pieces) - 1
    tail = text[offsets[ends[-1]]:] if ends else text
    if not ends or (ends[-1] < last and tail.strip()):
        ends.append(last)
    else:
        ends[-1] = last  # only whitespace or special tokens after the last separator
    starts = [0] + [offsets[e] for e in ends[:-1]]
    texts = [text[s:offsets[e]].strip() for s, e in zip(starts, ends)]
    return ends, texts


class ArithmeticSteps:
    """The embedded task's step checker, labelled as Math-Shepherd and PRM800K label steps: a
    step scores 1 while everything up to and including it is right (the terms in order, the
    running sum, the final answer against the reference) and 0 from the first mistake on.
    `Total:` and `Answer:` count as right only once every term has been added, so an answer
    without its working, right or not, scores 0: process supervision rewards the procedure."""

    def __init__(self, question_key: str = "question", answer_key: str = "answer"):
        self.question_key, self.answer_key = question_key, answer_key

    def __call__(self, prompts, steps, **columns) -> list[list[float]]:
        return [self.label(texts, question, answer) for texts, question, answer
                in zip(steps, columns[self.question_key], columns[self.answer_key])]

    def label(self, texts: list[str], question: str, answer) -> list[float]:
        terms = parse_question(str(question))
        state = {"total": terms[0], "next": 1}
        labels, right = [], True
        for text in texts:
            right = right and self.step_is_right(text, terms, state, str(answer))
            labels.append(1.0 if right else 0.0)
        return labels

    @staticmethod
    def step_is_right(text: str, terms: list[int], state: dict, answer: str) -> bool:
        done = state["next"] == len(terms)
        if text.startswith("Terms:"):
            return text[len("Terms:"):].strip() == ",".join(map(str, terms))
        if text.startswith("Total:"):
            return done and text[len("Total:"):].strip() == str(state["total"])
        if text.startswith("Answer:"):
            # Compared as numbers, as final_answer does, so step and outcome rewards agree.
            return done and same_number(extract_final_answer(text), parse_number(answer))
        step = STEP_LINE.match(text)
        if step is None or done:
            return False
        left, term, result = map(int, step.groups())
        if left != state["total"] or term != terms[state["next"]] or result != left + term:
            return False
        state["total"], state["next"] = result, state["next"] + 1
        return True


class HFProcessRewardModel:
    """A token-classification PRM from a hub id or local folder."""

    def __init__(self, model: str, step_tag: str = "\n\n", positive_label: int = 1, device: str = "cpu",
                 batch_size: int = 8, trust_remote_code: bool = False):
        from transformers import AutoModelForTokenClassification, AutoTokenizer

        self.tokenizer = AutoTokenizer.from_pretrained(model, trust_remote_code=trust_remote_code)
        self.tokenizer.padding_side = "right"
        if self.tokenizer.pad_token is None:  # many PRM tokenizers have none; padding only needs an id
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.model = AutoModelForTokenClassification.from_pretrained(model, trust_remote_code=trust_remote_code)
        self.model.to(device).eval()
        self.step_tag, self.positive_label, self.device, self.batch_size = step_tag, positive_label, device, batch_size

    def __call__(self, prompts, steps, **columns) -> list[list[float]]:
        out: list[list[float]] = []
        for start in range(0, len(prompts), self.batch_size):
            out.extend(self.score_batch(prompts[start:start + self.batch_size], steps[start:start + self.batch_size]))
        return out

    @torch.no_grad()
    def score_batch(self, prompts: list[str], steps: list[list[str]]) -> list[list[float]]:
        texts, tag_ends = [], []
        for prompt, parts in zip(prompts, steps):
            text, ends = prompt, []
            for part in parts:
                text += part + self.step_tag
                ends.append(len(text) - 1)  # the character that closes this step's tag
            texts.append(text)
            tag_ends.append(ends)
        encoded = self.tokenizer(texts, return_tensors="pt", padding=True, return_offsets_mapping=True,
                                 add_special_tokens=False)
        offsets = encoded.pop("offset_mapping")
        logits = self.model(**{k: v.to(self.device) for k, v in encoded.items()}).logits
        positive = logits.float().softmax(-1)[..., self.positive_label].cpu()
        out = []
        lengths = encoded["attention_mask"].sum(-1).tolist()
        for row, ends in enumerate(tag_ends):
            stops = offsets[row, :lengths[row], 1].tolist()  # token i ends before character stops[i]
            index = [min(bisect.bisect_right(stops, end), lengths[row] - 1) for end in ends]
            out.append([float(positive[row, i]) for i in index])
        return out


PROCESS_REWARDS = {
    "arithmetic_steps": ArithmeticSteps,
    "hf_prm": HFProcessRewardModel,
}


class ProcessScorer:
    """Segments completions and applies the configured process reward: [N, S] tensors."""

    def __init__(self, process_cfg: ProcessRewardConfig, tokenizer):
        if tokenizer is None:
            raise ValueError("reward.process needs the policy's tokenizer: steps are found on the sampled token ids")
        self.name, self.separator = process_cfg.name, process_cfg.separator
        self.tokenizer = tokenizer
        self.function = PROCESS_REWARDS[process_cfg.name](**dict(process_cfg.kwargs))
        self.pieces: dict[int, str] = {}

    def decode(self, token: int) -> str:
        if token not in self.pieces:
            self.pieces[token] = self.tokenizer.decode([token], skip_special_tokens=True)
        return self.pieces[token]

    def __call__(self, prompts: list[str], completion_ids: list[list[int]], columns: dict):
        found = [segment([self.decode(t) for t in ids], self.separator) for ids in completion_ids]
        values = self.function(prompts, [texts for _, texts in found], **columns)
        width = max(1, max(len(ends) for ends, _ in found))
        step_ends = torch.full((len(found), width), -1, dtype=torch.long)
        step_rewards = torch.full((len(found), width), math.nan)
        for row, ((ends, _), scores) in enumerate(zip(found, values)):
            if len(scores) != len(ends):
                raise ValueError(f"process reward {self.name} gave {len(scores)} values for {len(ends)} steps (row {row})")
            step_ends[row, :len(ends)] = torch.tensor(ends, dtype=torch.long)
            step_rewards[row, :len(ends)] = torch.tensor([math.nan if v is None else float(v) for v in scores])
        return step_ends, step_rewards
