"""Group filters: which completions of a scored batch take part in the advantage.

GRPO (arXiv 2402.03300) uses every completion. GFPO (Microsoft, arXiv 2508.09726, §5 of
ALGORITHMS.md) keeps the k best of each group by a metric (shortest, or highest reward per
token) and computes the advantage within that subset. A completion that is not selected keeps
its place in the batch (it still counts in the token normaliser and gets the KL term, as in
the paper) but its reward is hidden from the advantage stage, so its advantage is exactly 0.
Where we differ: the paper's adaptive k and TRL's option of dropping rejected completions
come later; ties are broken at random with the step's seeded generator.

Signature: (Rollouts, Scores, AlgorithmConfig, torch.Generator) -> selected [N] bool.
"""

from __future__ import annotations

import torch

from grpo_cli.types import Rollouts, Scores


def select_all(rollouts: Rollouts, scores: Scores, cfg, generator: torch.Generator) -> torch.Tensor:
    return torch.ones(rollouts.group_ids.shape[0], dtype=torch.bool)


def gfpo_metric(rollouts: Rollouts, scores: Scores, metric: str) -> torch.Tensor:
    """[N] higher is better: -|o_i| (shortest first) or R_i / max(|o_i|, 1)."""
    lengths = rollouts.completion_lengths.float()
    if metric == "length":
        return -lengths
    efficiency = scores.total / lengths.clamp(min=1)
    return torch.where(torch.isnan(efficiency), torch.full_like(efficiency, -torch.inf), efficiency)


def top_k_per_group(values: torch.Tensor, group_ids: torch.Tensor, k: int, generator: torch.Generator) -> torch.Tensor:
    """[N] bool: the k highest values of every group; equal values in a random, seeded order."""
    shuffle = torch.randperm(values.shape[0], generator=generator)
    order = shuffle[torch.argsort(values[shuffle], descending=True, stable=True)]
    order = order[torch.argsort(group_ids[order], stable=True)]  # grouped, best first within
    rank = torch.empty_like(order)
    starts = torch.searchsorted(group_ids[order], group_ids[order], side="left")
    rank[order] = torch.arange(order.shape[0]) - starts
    return rank < k


def gfpo(rollouts: Rollouts, scores: Scores, cfg, generator: torch.Generator) -> torch.Tensor:
    values = gfpo_metric(rollouts, scores, cfg.gfpo_metric)
    return top_k_per_group(values, rollouts.group_ids, cfg.gfpo_k, generator)


GROUP_FILTERS = {
    "none": select_all,
    "gfpo": gfpo,
}
