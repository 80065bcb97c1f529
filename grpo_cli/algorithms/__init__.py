"""The stage dictionaries (docs/design.md §3): pure tensor functions picked by config name, and
the dictionaries of the modes they read; each dictionary holds its option's valid values."""

from grpo_cli.algorithms.advantages import ADVANTAGES
from grpo_cli.algorithms.aggregation import GROUP_RULES, REWARD_AGGREGATIONS
from grpo_cli.algorithms.filters import GFPO_METRICS, GFPO_REJECTED, GROUP_FILTERS
from grpo_cli.algorithms.kl import KL_ESTIMATORS, KL_PLACEMENTS
from grpo_cli.algorithms.losses import (
    AGGREGATIONS,
    CORRECTION_LEVELS,
    CORRECTIONS,
    POLICY_LOSSES,
    RATIOS,
    compute_loss,
)
from grpo_cli.algorithms.preference import PAIR_LOSSES, WEIGHTINGS
from grpo_cli.algorithms.stage_io import AdvantageInputs

__all__ = [
    "ADVANTAGES",
    "AGGREGATIONS",
    "AdvantageInputs",
    "CORRECTIONS",
    "CORRECTION_LEVELS",
    "GFPO_METRICS",
    "GFPO_REJECTED",
    "GROUP_FILTERS",
    "GROUP_RULES",
    "KL_ESTIMATORS",
    "KL_PLACEMENTS",
    "PAIR_LOSSES",
    "POLICY_LOSSES",
    "RATIOS",
    "REWARD_AGGREGATIONS",
    "WEIGHTINGS",
    "compute_loss",
]
