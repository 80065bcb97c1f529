"""Held-out evaluation: accuracy (mean@k) and the unbiased pass@k.

pass@k follows Chen et al. 2021 (arXiv 2107.03374): with n samples of which c are correct,
pass@k = 1 - C(n-c, k) / C(n, k), computed as a product to stay finite. Here the number of
samples per prompt equals k, so pass@k is the share of prompts with any correct sample; the
general form is kept so that more samples than k can be drawn.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch

from grpo_cli.data import PromptSet
from grpo_cli.rewards.scoring import RewardSet
from grpo_cli.sampler import SamplingParams


def pass_at_k(num_samples: int, num_correct: int, k: int) -> float:
    """Unbiased estimator of P(at least one of k draws is correct)."""
    if num_samples - num_correct < k:
        return 1.0
    miss = 1.0
    for i in range(num_samples - num_correct + 1, num_samples + 1):
        miss *= 1.0 - k / i
    return 1.0 - miss


@dataclass
class EvalResult:
    accuracy: float  # mean over prompts of the mean correctness of its k samples
    pass_at_k: float
    k: int
    n: int  # prompts
    mean_reward: float
    mean_length: float
    truncated_fraction: float

    def to_dict(self) -> dict:
        return asdict(self)


def evaluate(sampler, prompts: PromptSet, rewards: RewardSet, params: SamplingParams, seed: int,
             prompts_per_call: int = 64) -> EvalResult:
    """Sample params.n completions for every prompt and score them."""
    correct_per_prompt: list[torch.Tensor] = []
    rewards_all, lengths, truncated = [], [], []
    for start in range(0, len(prompts), prompts_per_call):
        batch = prompts.take(list(range(start, min(start + prompts_per_call, len(prompts)))))
        rollouts = sampler.generate(batch, params, seed=seed + start)
        scores = rewards.score(batch, rollouts, steps=False)
        correct_per_prompt.extend(scores.correct.view(len(batch), params.n))
        rewards_all.append(scores.total)
        lengths.append(rollouts.completion_lengths.float())
        truncated.append(rollouts.truncated.float())
    counts = [int(c.sum()) for c in correct_per_prompt]
    return EvalResult(
        accuracy=sum(counts) / (len(counts) * params.n),
        pass_at_k=sum(pass_at_k(params.n, c, params.n) for c in counts) / len(counts),
        k=params.n,
        n=len(counts),
        mean_reward=float(torch.cat(rewards_all).nanmean()),
        mean_length=float(torch.cat(lengths).mean()),
        truncated_fraction=float(torch.cat(truncated).mean()),
    )
