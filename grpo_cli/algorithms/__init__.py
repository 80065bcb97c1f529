"""The stage dictionaries of DESIGN.md: pure tensor functions picked by config name."""

from grpo_cli.algorithms.advantages import ADVANTAGES, AdvantageInputs
from grpo_cli.algorithms.filters import GROUP_FILTERS
from grpo_cli.algorithms.kl import KL_ESTIMATORS
from grpo_cli.algorithms.losses import AGGREGATIONS, CORRECTIONS, POLICY_LOSSES, RATIOS, compute_loss

__all__ = [
    "ADVANTAGES",
    "AGGREGATIONS",
    "AdvantageInputs",
    "CORRECTIONS",
    "GROUP_FILTERS",
    "KL_ESTIMATORS",
    "POLICY_LOSSES",
    "RATIOS",
    "compute_loss",
]
