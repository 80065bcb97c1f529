"""Group filters: which completions take part in the advantage, and which stay in the batch.

GRPO (arXiv 2402.03300) uses every completion. DAPO's dynamic sampling (arXiv 2503.14476,
docs/algorithms.md §4.2) drops every group whose correctness has no spread; the loop then
samples fresh prompts until the batch is full. GFPO (Microsoft, arXiv 2508.09726; docs/algorithms.md §6.1) keeps
the k best of each group by a metric (shortest, or highest reward per token) and computes the
advantage within that subset; adaptive GFPO (docs/algorithms.md §6.2) picks k per prompt from the quartiles of
recent prompt difficulties.

Where we differ:
- GFPO's rejected completions keep their place in the batch by default (the paper: they stay
  in the token normaliser and get the KL term, with advantage exactly 0); `gfpo.rejected: drop`
  removes them as TRL's experimental trainer did.
- Adaptive GFPO reads exact quartiles of a window of recent prompt difficulties instead of a
  t-digest: a run sees thousands of prompts, not millions, so the exact answer is cheap.
- Ties in the GFPO metric are broken at random with the step's seeded generator.

Signature: (Rollouts, Scores, AlgorithmConfig, FilterContext) -> Selection.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

import torch

from grpo_cli.algorithms.stats import group_stats
from grpo_cli.config import AlgorithmConfig
from grpo_cli.types import Rollouts, Scores


@dataclass
class Selection:
    """selected: [N] bool, completions whose reward enters the advantage (the rest get 0).
    kept:     [N] bool, completions that stay in the training batch (the rest are removed).
    metrics:  name -> float, what the filter wants logged."""

    selected: torch.Tensor
    kept: torch.Tensor
    metrics: dict[str, float] = field(default_factory=dict)

    @staticmethod
    def cat(parts: list["Selection"]) -> "Selection":
        return Selection(torch.cat([p.selected for p in parts]), torch.cat([p.kept for p in parts]))


class DifficultyTracker:
    """Streaming difficulty of prompts: the mean reward of each group, over a window."""

    def __init__(self, window: int):
        self.values: deque[float] = deque(maxlen=window)

    def record(self, rewards: torch.Tensor, group_ids: torch.Tensor) -> None:
        stats = group_stats(rewards, group_ids, std_ddof=0)
        self.values.extend(stats.mean[stats.count > 0].tolist())

    def quartiles(self, min_count: int) -> torch.Tensor | None:
        """[3] float64 q25, q50, q75, or None until `min_count` prompts have been seen."""
        if len(self.values) < max(1, min_count):
            return None
        return torch.quantile(torch.tensor(list(self.values), dtype=torch.float64),
                              torch.tensor([0.25, 0.5, 0.75], dtype=torch.float64))

    def state_dict(self) -> dict:
        return {"values": list(self.values)}

    def load_state_dict(self, state: dict) -> None:
        self.values.clear()
        self.values.extend(state["values"])


@dataclass
class FilterContext:
    """generator: seeded, for tie-breaking. difficulty: recent prompt difficulties (adaptive GFPO)."""

    generator: torch.Generator
    difficulty: DifficultyTracker


def select_all(rollouts: Rollouts, scores: Scores, cfg: AlgorithmConfig, ctx: FilterContext) -> Selection:
    everything = torch.ones(rollouts.group_ids.shape[0], dtype=torch.bool)
    return Selection(selected=everything, kept=everything.clone())


def dynamic_sampling(rollouts: Rollouts, scores: Scores, cfg: AlgorithmConfig, ctx: FilterContext) -> Selection:
    """Keep the groups whose correctness varies (0 < #correct < G). Correctness, not the shaped
    reward: an all-correct group of different lengths is still dropped (verl filters on `acc`)."""
    stats = group_stats(scores.correct.double(), rollouts.group_ids, std_ddof=0)
    spread = ~stats.no_spread[rollouts.group_ids]
    return Selection(selected=spread, kept=spread.clone())


def shortest(rollouts: Rollouts, scores: Scores) -> torch.Tensor:
    """[N] -|o_i|: the shortest completions first."""
    return -rollouts.completion_lengths.float()


def token_efficiency(rollouts: Rollouts, scores: Scores) -> torch.Tensor:
    """[N] R_i / max(|o_i|, 1): the most reward per token first; no reward ranks last."""
    efficiency = scores.total / rollouts.completion_lengths.float().clamp(min=1)
    return torch.where(torch.isnan(efficiency), torch.full_like(efficiency, -torch.inf), efficiency)


# GFPO's ranking of a group's completions, higher is better: (Rollouts, Scores) -> [N].
GFPO_METRICS = {
    "length": shortest,
    "token_efficiency": token_efficiency,
}

# What happens to the completions GFPO did not keep: selected [N] bool -> kept [N] bool.
GFPO_REJECTED = {
    "zero_adv": torch.ones_like,  # the paper: they stay in the batch, with advantage 0
    "drop": torch.clone,  # TRL: they leave the batch
}


def top_k_per_group(values: torch.Tensor, group_ids: torch.Tensor, k: int | torch.Tensor,
                    generator: torch.Generator) -> torch.Tensor:
    """[N] bool: the k highest values of every group (k an int, or [B] per group); equal
    values in a random, seeded order."""
    shuffle = torch.randperm(values.shape[0], generator=generator)
    order = shuffle[torch.argsort(values[shuffle], descending=True, stable=True)]
    order = order[torch.argsort(group_ids[order], stable=True)]  # grouped, best first within
    rank = torch.empty_like(order)
    starts = torch.searchsorted(group_ids[order], group_ids[order], side="left")
    rank[order] = torch.arange(order.shape[0]) - starts
    limit = k[group_ids] if isinstance(k, torch.Tensor) else k
    return rank < limit


def _subset(rollouts: Rollouts, scores: Scores, cfg: AlgorithmConfig, ctx: FilterContext, k: int | torch.Tensor) -> Selection:
    """Keep k per group by cfg.gfpo.metric; log the kept and rejected lengths (docs/algorithms.md §6.4)."""
    selected = top_k_per_group(GFPO_METRICS[cfg.gfpo.metric](rollouts, scores), rollouts.group_ids, k, ctx.generator)
    kept = GFPO_REJECTED[cfg.gfpo.rejected](selected)
    lengths = rollouts.completion_lengths.float()
    subset = group_stats(scores.total, rollouts.group_ids, cfg.std_ddof, selected)
    sizes = torch.zeros(rollouts.num_groups).index_add(0, rollouts.group_ids, selected.float())
    metrics = {
        "gfpo/mean_k": float(sizes.mean()),
        "gfpo/kept_mean_length": float(lengths[selected].mean()),
        "gfpo/rejected_mean_length": float(lengths[~selected].mean()) if (~selected).any() else 0.0,
        "gfpo/subset_no_spread_fraction": float(subset.no_spread.float().mean()),
    }
    return Selection(selected=selected, kept=kept, metrics=metrics)


def gfpo(rollouts: Rollouts, scores: Scores, cfg: AlgorithmConfig, ctx: FilterContext) -> Selection:
    return _subset(rollouts, scores, cfg, ctx, cfg.gfpo.k)


def gfpo_adaptive(rollouts: Rollouts, scores: Scores, cfg: AlgorithmConfig, ctx: FilterContext) -> Selection:
    """k per prompt by difficulty bucket: mean reward below q25, q50, q75 or above, read from
    the prompts seen before this batch; the largest k until enough have been seen."""
    ks = torch.tensor(list(cfg.gfpo.adaptive_k))
    quartiles = ctx.difficulty.quartiles(cfg.gfpo.adaptive_warmup)
    if quartiles is None:
        k = ks.max().expand(rollouts.num_groups)
    else:
        difficulty = group_stats(scores.total, rollouts.group_ids, std_ddof=0).mean
        k = ks[torch.bucketize(difficulty, quartiles, right=True)]
    return _subset(rollouts, scores, cfg, ctx, k)


GROUP_FILTERS = {
    "none": select_all,
    "dynamic_sampling": dynamic_sampling,
    "gfpo": gfpo,
    "gfpo_adaptive": gfpo_adaptive,
}
