"""Group statistics: the mean, std and spread of each prompt's rewards (docs/algorithms.md §1.6).

Shared by the advantage estimators, the group filters and the step metrics. Computed in
float64 with two passes; values outside `valid` (or NaN) take no part.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

# Relative spread under which a group counts as having no variance (docs/algorithms.md §1.6).
ZERO_SPREAD = 1e-6


@dataclass
class GroupStats:
    """Per-group statistics over the valid (non-NaN) rewards; every tensor is [B] float64."""

    count: torch.Tensor
    mean: torch.Tensor
    std: torch.Tensor
    no_spread: torch.Tensor  # bool: fewer than 2 valid rewards, or max - min within tolerance


def group_stats(rewards: torch.Tensor, group_ids: torch.Tensor, std_ddof: int,
                valid: torch.Tensor | None = None) -> GroupStats:
    """Two-pass mean and std per group over the rewards in `valid` ([N] bool; None: all)
    that are not NaN. rewards, group_ids: [N]."""
    num_groups = int(group_ids.max().item()) + 1 if group_ids.numel() else 0
    r = rewards.to(torch.float64)
    valid = ~torch.isnan(r) if valid is None else valid & ~torch.isnan(r)
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
