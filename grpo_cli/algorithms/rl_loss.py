"""The RL objective as the learner runs it: every RL decision about the update, made once.

Which log-probs the update needs before it starts (ℓ_old for the ratio's anchor, ℓ_ref for the
KL), the mini-batch normalisers (docs/algorithms.md §1.4), and per micro-batch the configured
policy loss (losses.compute_loss) with the health metrics that need ℓ: entropy, the
learner–sampler mismatch (docs/algorithms.md §8.1) and, on rollouts generated ahead, the
off-policy metrics (AReaL, arXiv 2505.24298). The learner only runs it: forward, this, backward.
Where β·KL enters (loss or reward) is decided in kl.py alone.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from grpo_cli.algorithms.kl import kl_in_reward
from grpo_cli.algorithms.losses import compute_loss
from grpo_cli.algorithms.offpolicy import IS_WEIGHT_MAX, lag_tokens, offpolicy_metrics
from grpo_cli.algorithms.stage_io import LossInputs, LossNormalisers, LossOutput
from grpo_cli.config import AlgorithmConfig, GrpoConfig
from grpo_cli.types import TrainBatch

# The largest |ℓ - ℓ_sampler| of any token: reduced by max, not summed (docs/algorithms.md §8.1).
MAX_GAP = "mismatch/max_abs_logprob_gap"


@dataclass(frozen=True)
class RLLoss:
    """algorithm: the variant's settings; length_budget: the generation budget, L_norm of
    seq_mean_token_sum_norm unless algorithm.length_norm sets one."""

    algorithm: AlgorithmConfig
    length_budget: int
    # Metrics reduced by max over micro-batches, mini-batches and ranks; every other one adds up.
    max_keys: ClassVar[frozenset[str]] = frozenset({MAX_GAP, IS_WEIGHT_MAX})

    @classmethod
    def of(cls, cfg: GrpoConfig) -> "RLLoss":
        """The run's loss; it reads cfg.algorithm live, so a change to it applies at once."""
        return cls(cfg.algorithm, cfg.sampler.max_new_tokens)

    @property
    def needs_reference(self) -> bool:
        return self.algorithm.kl_coef > 0

    @property
    def needs_old_logprobs(self) -> bool:
        """ℓ_old before the update: unless μ = 1 with one mini-batch, where it equals ℓ.detach()
        (ratio ≡ 1, as TRL does), and the KL is not in the reward, which needs it per token."""
        a = self.algorithm
        return a.epochs > 1 or a.mini_batches > 1 or kl_in_reward(a)

    def normalisers(self, batch: TrainBatch) -> LossNormalisers:
        """Counted over the whole mini-batch, before it is split into micro-batches."""
        lengths = batch.loss_mask.sum(-1)
        lags = lag_tokens(batch.policy_lag, batch.loss_mask) if batch.policy_lag is not None else None
        return LossNormalisers(num_sequences=int((lengths > 0).sum()), num_tokens=int(lengths.sum()),
                               length_norm=float(self.algorithm.length_norm or self.length_budget), lag_tokens=lags)

    def __call__(self, micro: TrainBatch, logprobs: torch.Tensor, entropy: torch.Tensor,
                 norm: LossNormalisers) -> LossOutput:
        """The micro-batch's share of the loss and of each metric (logprobs [b, C] with gradient,
        entropy [b, C])."""
        old = micro.old_logprobs if micro.old_logprobs is not None else logprobs.detach()
        inputs = LossInputs(logprobs=logprobs, old_logprobs=old, ref_logprobs=micro.ref_logprobs,
                            sampler_logprobs=micro.sampler_logprobs, advantages=micro.advantages,
                            loss_mask=micro.loss_mask)
        out = compute_loss(inputs, self.algorithm, norm)
        gap = (logprobs.detach() - micro.sampler_logprobs).abs() * micro.loss_mask
        sums = torch.stack([(entropy * micro.loss_mask).sum(), gap.sum(), gap.max()]).tolist()
        out.metrics["entropy"] = sums[0] / max(1, norm.num_tokens)
        out.metrics["mismatch/abs_logprob_gap"] = sums[1] / max(1, norm.num_tokens)
        out.metrics[MAX_GAP] = sums[2]
        if norm.lag_tokens is not None:
            out.metrics.update(offpolicy_metrics(inputs, out.clipped, micro.policy_lag, norm.lag_tokens, self.algorithm))
        return out
