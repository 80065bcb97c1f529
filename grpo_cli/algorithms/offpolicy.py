"""Health of an update on rollouts sampled by older weights (trainer.max_staleness > 0).

Under the decoupled objective of asynchronous PPO (AReaL, arXiv 2505.24298) three policies meet:
π_θ (being trained), π_old (the learner's recomputation at its weights before the update: the
clip's anchor) and π_sampler (the weights, possibly s versions older, on the engine that drew
the tokens). The importance weight w = π_old / π_sampler (docs/algorithms.md §8.1) then carries the
staleness as well as the engine mismatch; algorithm.correction truncates or masks it. These
metrics say how far the update is off-policy, per version lag: the weight's mean and largest
value, the share of tokens whose weight the correction changed, and the clip fractions.
"""

from __future__ import annotations

import torch

from grpo_cli.algorithms.losses import CORRECTIONS, TOKEN_LOG_RATIO_CLAMP, mismatch_weight
from grpo_cli.algorithms.stage_io import LossInputs
from grpo_cli.config import AlgorithmConfig

# Reduced by max over micro-batches, mini-batches and ranks; every other metric adds up.
IS_WEIGHT_MAX = "offpolicy/is_weight_max"


def lag_tokens(policy_lag: torch.Tensor, loss_mask: torch.Tensor) -> dict[int, int]:
    """Loss-bearing tokens per version lag in a mini-batch ([N], [N, C] -> {lag: tokens})."""
    tokens = loss_mask.sum(-1)
    return {int(lag): int(tokens[policy_lag == lag].sum()) for lag in policy_lag.unique().tolist()}


def offpolicy_metrics(inp: LossInputs, clipped: torch.Tensor, policy_lag: torch.Tensor,
                      mini_batch_lags: dict[int, int], cfg: AlgorithmConfig) -> dict[str, float]:
    """A micro-batch's share of the mini-batch's off-policy metrics (clipped [b, C] bool,
    policy_lag [b]); shares add up over micro-batches except the maximum."""
    mask = inp.loss_mask
    total = max(1, sum(mini_batch_lags.values()))
    log_w = (inp.old_logprobs - inp.sampler_logprobs).detach().clamp(-TOKEN_LOG_RATIO_CLAMP, TOKEN_LOG_RATIO_CLAMP)
    weight = torch.exp(log_w) * mask  # per token, before any correction
    stats = {"offpolicy/is_weight_mean": weight.sum() / total, IS_WEIGHT_MAX: weight.max()}
    if cfg.correction != "none":
        changed = CORRECTIONS[cfg.correction](inp, cfg) != mismatch_weight(inp, cfg.correction_level)
        stats["offpolicy/corrected_fraction"] = (changed.float() * mask).sum() / total
    for lag, tokens in mini_batch_lags.items():
        rows = (policy_lag == lag).float()[:, None] * mask
        stats[f"offpolicy/lag{lag}/clip_fraction"] = (clipped.float() * rows).sum() / max(1, tokens)
        stats[f"offpolicy/lag{lag}/is_weight_mean"] = (weight * rows).sum() / max(1, tokens)
    return dict(zip(stats, torch.stack([v.float() for v in stats.values()]).tolist()))


def staleness_metrics(policy_lag: torch.Tensor, max_staleness: int) -> dict[str, float]:
    """The step's rollouts by version lag ([N] long): mean, largest, and the share at each lag."""
    lag = policy_lag.float()
    out = {"async/lag_mean": float(lag.mean()), "async/lag_max": float(lag.max())}
    for k in range(max_staleness + 1):
        out[f"async/lag{k}_fraction"] = float((policy_lag == k).float().mean())
    return out
