"""Advantage estimators: reward per completion -> advantage per token.

Implements GRPO's group z-score (DeepSeekMath, arXiv 2402.03300, §1.2 of ALGORITHMS.md),
Dr. GRPO's mean-only advantage (arXiv 2503.20783), RLOO's leave-one-out baseline
(arXiv 2402.14740) and REINFORCE++ with and without the group baseline (arXiv 2501.03262,
§7.2). When the KL goes into the reward, sequence-level estimators subtract its sum from R_i
and REINFORCE++ spreads it over the token returns. Where we differ from the papers:
- the std convention is a flag (`std_ddof`, default 1 as in TRL, verl, oat and OpenRLHF);
- groups whose rewards have no spread get exactly 0 (explicit guard, ALGORITHMS.md §0.6),
  rather than relying on `std + eps`;
- rewards that are NaN (a reward function had no opinion or failed) are left out of the
  group statistics and their completion gets advantage 0, as TRL does.

Every estimator has the signature `(AdvantageInputs, AlgorithmConfig) -> Tensor [N, C]`.
Statistics are computed in float64 and the result is returned as float32.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

# Relative spread under which a group counts as having no variance (ALGORITHMS.md §0.6).
ZERO_SPREAD = 1e-6


@dataclass
class AdvantageInputs:
    """rewards: [N] float, NaN = no reward. group_ids: [N] long in 0..B-1. loss_mask: [N, C].
    kl_penalty: [N, C] β·KL per token when the KL goes into the reward (PPO style), else None.
    step_ends / step_rewards: [N, S] process supervision (see Scores), else None."""

    rewards: torch.Tensor
    group_ids: torch.Tensor
    loss_mask: torch.Tensor
    kl_penalty: torch.Tensor | None = None
    step_ends: torch.Tensor | None = None
    step_rewards: torch.Tensor | None = None

    @classmethod
    def from_scores(cls, scores, selected: torch.Tensor, group_ids: torch.Tensor, loss_mask: torch.Tensor,
                    kl_penalty: torch.Tensor | None) -> "AdvantageInputs":
        """Rewards of the completions a group filter left out become NaN: advantage exactly 0."""
        rewards = torch.where(selected, scores.total, torch.nan)
        return cls(rewards, group_ids, loss_mask, kl_penalty, scores.step_ends, scores.step_rewards)

    def sequence_rewards(self) -> torch.Tensor:
        """[N] float64: R_i minus the summed per-token KL penalty, for sequence-level estimators."""
        rewards = self.rewards.to(torch.float64)
        if self.kl_penalty is None:
            return rewards
        return rewards - (self.kl_penalty * self.loss_mask).sum(-1).to(torch.float64)


@dataclass
class GroupStats:
    """Per-group statistics over the valid (non-NaN) rewards; every tensor is [B] float64."""

    count: torch.Tensor
    mean: torch.Tensor
    std: torch.Tensor
    no_spread: torch.Tensor  # bool: fewer than 2 valid rewards, or max - min within tolerance


def group_stats(rewards: torch.Tensor, group_ids: torch.Tensor, std_ddof: int) -> GroupStats:
    """Two-pass mean and std per group, ignoring NaN rewards."""
    num_groups = int(group_ids.max().item()) + 1 if group_ids.numel() else 0
    r = rewards.to(torch.float64)
    valid = ~torch.isnan(r)
    r0 = torch.where(valid, r, torch.zeros_like(r))
    zeros = torch.zeros(num_groups, dtype=torch.float64)
    count = zeros.index_add(0, group_ids, valid.to(torch.float64))
    mean = zeros.index_add(0, group_ids, r0) / count.clamp(min=1)
    dev = torch.where(valid, r - mean[group_ids], torch.zeros_like(r))
    var = zeros.index_add(0, group_ids, dev * dev) / (count - std_ddof).clamp(min=1)
    hi = zeros.scatter_reduce(0, group_ids, torch.where(valid, r, -torch.inf), "amax", include_self=False)
    lo = zeros.scatter_reduce(0, group_ids, torch.where(valid, r, torch.inf), "amin", include_self=False)
    tolerance = ZERO_SPREAD * mean.abs().clamp(min=1.0)
    no_spread = (count < 2) | ((hi - lo) <= tolerance)
    return GroupStats(count=count, mean=mean, std=var.sqrt(), no_spread=no_spread)


def _to_tokens(per_sequence: torch.Tensor, inp: AdvantageInputs, stats: GroupStats) -> torch.Tensor:
    """Zero the no-spread groups and NaN rewards, broadcast to tokens, mask padding."""
    keep = ~stats.no_spread[inp.group_ids] & ~torch.isnan(inp.rewards)
    per_sequence = torch.where(keep, per_sequence, torch.zeros_like(per_sequence))
    return per_sequence.to(torch.float32)[:, None] * inp.loss_mask


def grpo_advantages(inp: AdvantageInputs, cfg) -> torch.Tensor:
    """(R_i - mean_G) / (std_G + eps), eps = cfg.adv_eps, std with cfg.std_ddof."""
    rewards = inp.sequence_rewards()
    stats = group_stats(rewards, inp.group_ids, cfg.std_ddof)
    g = inp.group_ids
    adv = (rewards - stats.mean[g]) / (stats.std[g] + cfg.adv_eps)
    return _to_tokens(adv, inp, stats)


def dr_grpo_advantages(inp: AdvantageInputs, cfg) -> torch.Tensor:
    """R_i - mean_G: no std division, so easy and hard prompts are not up-weighted."""
    rewards = inp.sequence_rewards()
    stats = group_stats(rewards, inp.group_ids, cfg.std_ddof)
    adv = rewards - stats.mean[inp.group_ids]
    return _to_tokens(adv, inp, stats)


def rloo_advantages(inp: AdvantageInputs, cfg) -> torch.Tensor:
    """R_i minus the mean of the other valid rewards of its group = G/(G-1) (R_i - mean)."""
    rewards = inp.sequence_rewards()
    stats = group_stats(rewards, inp.group_ids, cfg.std_ddof)
    count = stats.count[inp.group_ids]
    adv = count / (count - 1).clamp(min=1) * (rewards - stats.mean[inp.group_ids])
    return _to_tokens(adv, inp, stats)


def _whitened_returns(outcome: torch.Tensor, inp: AdvantageInputs, cfg) -> torch.Tensor:
    """REINFORCE++ (arXiv 2501.03262): token rewards r_t = 1[t = last]·outcome_i - β·KL_t,
    returns G_t = Σ_{s≥t} r_s (γ = 1), whitened over every valid token of the batch."""
    mask = inp.loss_mask.to(torch.float64)
    valid = ~torch.isnan(outcome)
    mask = mask * valid[:, None]
    last = (mask.sum(-1).long() - 1).clamp(min=0)  # loss-bearing tokens are a prefix of each row
    token_rewards = torch.zeros_like(mask)
    token_rewards[torch.arange(mask.shape[0]), last] = torch.where(valid, outcome, 0.0)
    if inp.kl_penalty is not None:
        token_rewards = token_rewards - inp.kl_penalty.to(torch.float64)
    returns = (token_rewards * mask).flip(-1).cumsum(-1).flip(-1)
    count = mask.sum().clamp(min=1)
    mean = (returns * mask).sum() / count
    var = (((returns - mean) * mask) ** 2).sum() / count
    if mask.sum() < 2 or var.sqrt() <= ZERO_SPREAD * max(1.0, abs(float(mean))):
        return torch.zeros_like(inp.loss_mask)
    return (((returns - mean) / (var.sqrt() + cfg.adv_eps)) * mask).to(torch.float32)


def reinforce_pp_advantages(inp: AdvantageInputs, cfg) -> torch.Tensor:
    """REINFORCE++: the outcome reward itself is the return's terminal reward."""
    return _whitened_returns(inp.rewards.to(torch.float64), inp, cfg)


def reinforce_pp_baseline_advantages(inp: AdvantageInputs, cfg) -> torch.Tensor:
    """REINFORCE++-baseline: subtract the group mean first, then whiten over the batch."""
    stats = group_stats(inp.rewards, inp.group_ids, cfg.std_ddof)
    centred = inp.rewards.to(torch.float64) - stats.mean[inp.group_ids]
    return _whitened_returns(centred, inp, cfg)


# Process supervision lives in its own module and needs group_stats from this one.
from grpo_cli.algorithms.process import process_advantages  # noqa: E402

ADVANTAGES = {
    "grpo": grpo_advantages,
    "dr_grpo": dr_grpo_advantages,
    "rloo": rloo_advantages,
    "reinforce_pp": reinforce_pp_advantages,
    "reinforce_pp_baseline": reinforce_pp_baseline_advantages,
    "process": process_advantages,
}
