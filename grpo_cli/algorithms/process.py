"""Process-supervised GRPO: DeepSeekMath (arXiv 2402.03300) §4.1.3; docs/algorithms.md §2.3.

A process reward scores every reasoning step of a completion. All step rewards of a group are
pooled and z-scored together; the advantage of a token is the sum of the normalised rewards of
every step that ends at or after it (a reverse cumulative sum over step ends).

Where we differ from the paper: the std convention is `std_ddof` (the paper does not say) and
`adv_eps` is added as in the outcome estimator; groups whose pooled step rewards have no spread,
completions without steps and completions a filter left out get exactly 0.
"""

from __future__ import annotations

import torch

from grpo_cli.algorithms.stage_io import AdvantageInputs
from grpo_cli.algorithms.stats import group_stats
from grpo_cli.config import AlgorithmConfig


def process_advantages(inp: AdvantageInputs, cfg: AlgorithmConfig) -> torch.Tensor:
    """[N, C] float32 from step_ends / step_rewards [N, S] (-1 / NaN padding)."""
    if inp.step_ends is None or inp.step_rewards is None:
        raise ValueError("the process advantage needs step rewards: set reward.process (e.g. reward=arithmetic_process)")
    ends, rewards = inp.step_ends, inp.step_rewards.to(torch.float64)
    valid = (ends >= 0) & ~torch.isnan(rewards) & inp.valid[:, None]
    groups = inp.group_ids[:, None].expand_as(ends)
    pooled = torch.where(valid, rewards, torch.nan)
    stats = group_stats(pooled.flatten(), groups.flatten(), cfg.std_ddof)
    normalised = (rewards - stats.mean[groups]) / (stats.std[groups] + cfg.adv_eps)
    normalised = torch.where(valid & ~stats.no_spread[groups], normalised, torch.zeros_like(normalised))
    width = inp.loss_mask.shape[1]
    at_ends = torch.zeros(ends.shape[0], width, dtype=torch.float64)
    at_ends.scatter_add_(1, ends.clamp(min=0, max=width - 1), normalised)
    advantages = at_ends.flip(-1).cumsum(-1).flip(-1)
    return (advantages * inp.loss_mask.to(torch.float64)).to(torch.float32)
