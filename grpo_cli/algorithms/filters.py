"""Group filters: which completions of a scored batch take part in the advantage.

GRPO (arXiv 2402.03300) uses every completion. DAPO's dynamic sampling and GFPO's subset
selection plug in here. A completion that is not selected keeps its place in the batch but
its reward is hidden from the advantage stage, so it gets advantage exactly 0.
Signature: (Rollouts, Scores, AlgorithmConfig) -> selected [N] bool.
"""

from __future__ import annotations

import torch

from grpo_cli.types import Rollouts, Scores


def select_all(rollouts: Rollouts, scores: Scores, cfg) -> torch.Tensor:
    return torch.ones(rollouts.group_ids.shape[0], dtype=torch.bool)


GROUP_FILTERS = {
    "none": select_all,
}
