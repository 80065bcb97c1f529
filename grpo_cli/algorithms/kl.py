"""KL estimators against the frozen reference (Schulman's k1 / k2 / k3, ALGORITHMS.md §0.5).

GRPO (arXiv 2402.03300) uses k3 in the loss. k3 is computed from the log difference, never
from probabilities, with verl's clamps: (ℓ_ref - ℓ) to [-20, 20] before exp, result ≤ 10.
Signature: (logprobs [b, C], ref_logprobs [b, C]) -> per-token estimate [b, C].
"""

from __future__ import annotations

import torch

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
