"""Advantage estimators: reward per completion -> advantage per token.

Implements GRPO's group z-score (DeepSeekMath, arXiv 2402.03300, §1.2 of ALGORITHMS.md),
Dr. GRPO's mean-only advantage (arXiv 2503.20783) and RLOO's leave-one-out baseline
(arXiv 2402.14740). Where we differ from the papers:
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
    """rewards: [N] float, NaN = no reward. group_ids: [N] long in 0..B-1. loss_mask: [N, C]."""

    rewards: torch.Tensor
    group_ids: torch.Tensor
    loss_mask: torch.Tensor


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
    stats = group_stats(inp.rewards, inp.group_ids, cfg.std_ddof)
    g = inp.group_ids
    adv = (inp.rewards.to(torch.float64) - stats.mean[g]) / (stats.std[g] + cfg.adv_eps)
    return _to_tokens(adv, inp, stats)


def dr_grpo_advantages(inp: AdvantageInputs, cfg) -> torch.Tensor:
    """R_i - mean_G: no std division, so easy and hard prompts are not up-weighted."""
    stats = group_stats(inp.rewards, inp.group_ids, cfg.std_ddof)
    adv = inp.rewards.to(torch.float64) - stats.mean[inp.group_ids]
    return _to_tokens(adv, inp, stats)


def rloo_advantages(inp: AdvantageInputs, cfg) -> torch.Tensor:
    """R_i minus the mean of the other valid rewards of its group = G/(G-1) (R_i - mean)."""
    stats = group_stats(inp.rewards, inp.group_ids, cfg.std_ddof)
    count = stats.count[inp.group_ids]
    adv = count / (count - 1).clamp(min=1) * (inp.rewards.to(torch.float64) - stats.mean[inp.group_ids])
    return _to_tokens(adv, inp, stats)


ADVANTAGES = {
    "grpo": grpo_advantages,
    "dr_grpo": dr_grpo_advantages,
    "rloo": rloo_advantages,
}
