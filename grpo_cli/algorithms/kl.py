"""KL estimators against the frozen reference (Schulman's k1 / k2 / k3, docs/algorithms.md §1.5).

GRPO (arXiv 2402.03300) uses k3 in the loss. k3 is computed from the log difference, never
from probabilities, with verl's clamps: (ℓ_ref - ℓ) to [-20, 20] before exp, result ≤ 10.
Signature: (logprobs [b, C], ref_logprobs [b, C]) -> per-token estimate [b, C].

Where β·KL enters is `algorithm.kl_in`, one of KL_PLACEMENTS: the loss (GRPO) or the reward
(PPO style, REINFORCE++), where `reward_penalty` makes it a per-token penalty for the
advantage estimators.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from grpo_cli.config import AlgorithmConfig
from grpo_cli.types import BatchLogprobs

LOG_DIFF_CLAMP = 20.0
K3_MAX = 10.0


def k1(logprobs: torch.Tensor, ref_logprobs: torch.Tensor) -> torch.Tensor:
    """ℓ - ℓ_ref: unbiased value, zero-mean gradient (only meaningful as a reward penalty)."""
    return logprobs - ref_logprobs


def k2(logprobs: torch.Tensor, ref_logprobs: torch.Tensor) -> torch.Tensor:
    """½(ℓ - ℓ_ref)²: its gradient is the reverse-KL gradient in expectation."""
    return 0.5 * (logprobs - ref_logprobs) ** 2


def k3(logprobs: torch.Tensor, ref_logprobs: torch.Tensor) -> torch.Tensor:
    """exp(d) - d - 1 with d = ℓ_ref - ℓ: non-negative, low variance."""
    d = (ref_logprobs - logprobs).clamp(-LOG_DIFF_CLAMP, LOG_DIFF_CLAMP)
    return (torch.exp(d) - d - 1.0).clamp(max=K3_MAX)


KL_ESTIMATORS = {
    "k1": k1,
    "k2": k2,
    "k3": k3,
}


@dataclass(frozen=True)
class KLPlacement:
    """in_loss: β·KL is added to the policy loss; in_reward: it is subtracted from the reward,
    which needs ℓ_old of every token before the update."""

    in_loss: bool
    in_reward: bool


KL_PLACEMENTS = {
    "loss": KLPlacement(in_loss=True, in_reward=False),
    "reward": KLPlacement(in_loss=False, in_reward=True),
}


def kl_in_loss(cfg: AlgorithmConfig) -> bool:
    """β·KL is a term of the policy loss (compute_loss adds it)."""
    return cfg.kl_coef > 0 and KL_PLACEMENTS[cfg.kl_in].in_loss


def kl_in_reward(cfg: AlgorithmConfig) -> bool:
    """β·KL is subtracted from the reward (reward_penalty), which needs ℓ_old before the update."""
    return cfg.kl_coef > 0 and KL_PLACEMENTS[cfg.kl_in].in_reward


def reward_penalty(logprobs: BatchLogprobs, loss_mask: torch.Tensor, cfg: AlgorithmConfig) -> torch.Tensor | None:
    """β·KL_t per token, [N, C], when the KL goes into the reward; None otherwise."""
    if not kl_in_reward(cfg):
        return None
    kl = KL_ESTIMATORS[cfg.kl_estimator](logprobs.old_logprobs, logprobs.ref_logprobs)
    return cfg.kl_coef * kl * loss_mask
