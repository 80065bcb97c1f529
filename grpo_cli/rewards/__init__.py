"""Rewards: built-in functions by name, weighted and combined into `Scores`."""

from __future__ import annotations

import math
from collections import Counter

import torch

from grpo_cli.rewards.builtin import REWARDS
from grpo_cli.rewards.process import ProcessScorer
from grpo_cli.types import PromptBatch, Rollouts, Scores

__all__ = ["REWARDS", "RewardSet"]


class RewardSet:
    """The configured reward functions, built once, applied to every batch."""

    def __init__(self, reward_cfg, tokenizer=None):
        self.specs = list(reward_cfg.functions)
        self.functions = [REWARDS[spec.name](**dict(spec.kwargs)) for spec in self.specs]
        # The same function twice (different kwargs) is logged as name, name_2, ...
        seen: Counter[str] = Counter()
        self.names = []
        for spec in self.specs:
            seen[spec.name] += 1
            self.names.append(spec.name if seen[spec.name] == 1 else f"{spec.name}_{seen[spec.name]}")
        self.correct_above = reward_cfg.correct_above
        # Step rewards (process supervision) need the tokenizer: steps are found on token ids.
        self.process = None if reward_cfg.process is None else ProcessScorer(reward_cfg.process, tokenizer)

    def score(self, batch: PromptBatch, rollouts: Rollouts, steps: bool = True) -> Scores:
        """Call every function on all N completions; None becomes NaN. `steps=False` skips
        the process reward (evaluation needs only the outcome)."""
        index = rollouts.group_ids.tolist()
        prompts = [batch.prompts[i] for i in index]
        columns = {key: [batch.examples[i].get(key) for i in index] for key in batch.examples[0]}
        columns["completion_ids"] = [ids[:n] for ids, n in zip(rollouts.completion_ids.tolist(),
                                                                 rollouts.completion_lengths.tolist())]
        components: dict[str, torch.Tensor] = {}
        total = torch.zeros(len(index), dtype=torch.float64)
        opinions = torch.zeros(len(index), dtype=torch.bool)
        for name, spec, fn in zip(self.names, self.specs, self.functions):
            values = fn(prompts, rollouts.completions, **columns)
            column = torch.tensor([math.nan if v is None else float(v) for v in values], dtype=torch.float64)
            components[name] = column.float()
            known = ~torch.isnan(column)
            total += torch.where(known, spec.weight * column, torch.zeros_like(column))
            opinions |= known
        total = torch.where(opinions, total, torch.full_like(total, math.nan)).float()
        first = components[self.names[0]]
        scores = Scores(total=total, components=components, correct=first > self.correct_above)
        if steps and self.process is not None:
            scores.step_ends, scores.step_rewards = self.process(prompts, columns.pop("completion_ids"), columns)
        return scores
