"""Policy losses: ratio, surrogate, mismatch correction, KL term and aggregation.

The per-token clipped surrogate is PPO's as used by GRPO (DeepSeekMath, arXiv 2402.03300) and
DAPO's clip-higher (arXiv 2503.14476); dual clip follows verl. GRPO's KL is k3 added to the
loss (not the reward), aggregated the same way as the policy term. Aggregation modes follow
docs/algorithms.md §1.4 exactly, with one decision made explicit: sequences with no loss-bearing
token are left out of the sequence count B (verl's choice; TRL keeps them).

Each stage is a plain dict from config name to a pure function; one signature per dict.
`compute_loss` composes them and is the only place the config picks a function.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from grpo_cli.algorithms.kl import KL_ESTIMATORS, kl_in_loss
from grpo_cli.algorithms.stage_io import LossInputs, LossNormalisers, LossOutput
from grpo_cli.config import AlgorithmConfig

# Log-ratio clamps before exp (verl): token ratios to ±20, sequence log-ratio to ≤ 10.
TOKEN_LOG_RATIO_CLAMP = 20.0
SEQUENCE_LOG_RATIO_MAX = 10.0


def _masked_seq_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """[b, C] -> [b]: per-sequence mean over loss-bearing tokens (0 for empty sequences)."""
    return (values * mask).sum(-1) / mask.sum(-1).clamp(min=1)


# ---- ratio: (LossInputs) -> log-ratio [b, C] ---------------------------------------------

def token_log_ratio(inp: LossInputs) -> torch.Tensor:
    """log ρ_{i,t} = ℓ - ℓ_old per token."""
    return (inp.logprobs - inp.old_logprobs).clamp(-TOKEN_LOG_RATIO_CLAMP, TOKEN_LOG_RATIO_CLAMP)


def sequence_log_ratio(inp: LossInputs) -> torch.Tensor:
    """GSPO: log s_i = mean_t(ℓ - ℓ_old), broadcast to every token of the sequence."""
    seq = _masked_seq_mean(inp.logprobs - inp.old_logprobs, inp.loss_mask)
    return seq.clamp(max=SEQUENCE_LOG_RATIO_MAX)[:, None].expand_as(inp.logprobs)


def sequence_token_log_ratio(inp: LossInputs) -> torch.Tensor:
    """GSPO-token: sg(log s_i) + ℓ - sg(ℓ); the value is s_i, the gradient per token s_i ∇ℓ."""
    seq = sequence_log_ratio(inp).detach()
    return (seq + inp.logprobs - inp.logprobs.detach()).clamp(max=SEQUENCE_LOG_RATIO_MAX)


RATIOS = {
    "token": token_log_ratio,
    "sequence": sequence_log_ratio,
    "sequence_token": sequence_token_log_ratio,
}


# ---- policy loss: (log_ratio, LossInputs, cfg) -> PolicyTerms ----------------------------

@dataclass
class PolicyTerms:
    """token_loss [b, C]; clipped_low / clipped_high [b, C] bool where that bound was active
    (for the clipped surrogate: where it removed the gradient, A < 0 with ρ < 1-ε_low or A > 0
    with ρ > 1+ε_high; for CISPO: where it capped the weight); ratio [b, C] detached."""

    token_loss: torch.Tensor
    clipped_low: torch.Tensor
    clipped_high: torch.Tensor
    ratio: torch.Tensor


def clipped_surrogate(log_ratio: torch.Tensor, inp: LossInputs, cfg: AlgorithmConfig) -> PolicyTerms:
    """-min(ρA, clip(ρ, 1-ε_low, 1+ε_high)A), bounded by -c·A for A < 0 under dual clip."""
    ratio = torch.exp(log_ratio)
    adv = inp.advantages
    unclipped = ratio * adv
    clipped = ratio.clamp(1.0 - cfg.clip_eps_low, 1.0 + cfg.clip_eps_high) * adv
    token_loss = -torch.minimum(unclipped, clipped)
    if cfg.dual_clip_c is not None:
        bounded = torch.minimum(token_loss, -cfg.dual_clip_c * adv)
        token_loss = torch.where(adv < 0, bounded, token_loss)
    r = ratio.detach()
    return PolicyTerms(
        token_loss=token_loss,
        clipped_low=(adv < 0) & (r < 1.0 - cfg.clip_eps_low),
        clipped_high=(adv > 0) & (r > 1.0 + cfg.clip_eps_high),
        ratio=r,
    )


def policy_gradient(log_ratio: torch.Tensor, inp: LossInputs, cfg: AlgorithmConfig) -> PolicyTerms:
    """-ρA with no clip: REINFORCE with importance weight (gradient A ρ ∇ℓ)."""
    ratio = torch.exp(log_ratio)
    never = torch.zeros_like(ratio, dtype=torch.bool)
    return PolicyTerms(-ratio * inp.advantages, never, never, ratio.detach())


def cispo(log_ratio: torch.Tensor, inp: LossInputs, cfg: AlgorithmConfig) -> PolicyTerms:
    """CISPO (MiniMax-M1, arXiv 2506.13585): -sg(clip(ρ, 1-ε_low, 1+ε_high)) A ℓ.
    The weight is detached and bounded, so every token keeps its gradient; ε_low = 1 removes
    the lower bound as MiniMax does. The clip flags mark where the weight was capped."""
    ratio = torch.exp(log_ratio).detach()
    weight = ratio.clamp(1.0 - cfg.clip_eps_low, 1.0 + cfg.clip_eps_high)
    return PolicyTerms(
        token_loss=-weight * inp.advantages * inp.logprobs,
        clipped_low=ratio < 1.0 - cfg.clip_eps_low,
        clipped_high=ratio > 1.0 + cfg.clip_eps_high,
        ratio=ratio,
    )


POLICY_LOSSES = {
    "clip": clipped_surrogate,
    "pg": policy_gradient,
    "cispo": cispo,
}


# ---- mismatch correction: (LossInputs, cfg) -> detached weight [b, C] ---------------------
# The sampler's log-probs can differ from the learner's (another engine, kernels, precision);
# the weight corrects for the samples having come from the sampler (docs/algorithms.md §8.1).
# Masked tokens still count in the token-mean normaliser (TRL).

def no_correction(inp: LossInputs, cfg: AlgorithmConfig) -> torch.Tensor:
    return torch.ones_like(inp.loss_mask)


# The level of the weight: per token, or per sequence as the product of its token weights (a
# sum of logs); log w [b, C] -> log w [b, C].
CORRECTION_LEVELS = {
    "token": lambda log_w: log_w,
    "sequence": lambda log_w: log_w.sum(-1, keepdim=True).expand_as(log_w),
}


def mismatch_weight(inp: LossInputs, level: str) -> torch.Tensor:
    """w = π_old / π_sampler at the configured level."""
    log_w = CORRECTION_LEVELS[level]((inp.old_logprobs - inp.sampler_logprobs).detach() * inp.loss_mask)
    return torch.exp(log_w.clamp(-TOKEN_LOG_RATIO_CLAMP, TOKEN_LOG_RATIO_CLAMP))


def truncated_importance_sampling(inp: LossInputs, cfg: AlgorithmConfig) -> torch.Tensor:
    """TIS: min(w, C), optionally max(., C_min) (oat `tis_c`, verl `rollout_is_threshold`)."""
    weight = mismatch_weight(inp, cfg.correction_level)
    return weight.clamp(min=cfg.correction_min, max=cfg.correction_max)


def masked_importance_sampling(inp: LossInputs, cfg: AlgorithmConfig) -> torch.Tensor:
    """MIS: w where C_min <= w <= C_max, else 0 (TRL `sequence_mask`)."""
    weight = mismatch_weight(inp, cfg.correction_level)
    low = cfg.correction_min if cfg.correction_min is not None else 0.0
    return weight * ((weight >= low) & (weight <= cfg.correction_max))


CORRECTIONS = {
    "none": no_correction,
    "tis": truncated_importance_sampling,
    "mis": masked_importance_sampling,
}


# ---- aggregation: (token_loss [b, C], loss_mask [b, C], LossNormalisers) -> scalar ---------------

def seq_mean_token_mean(token_loss: torch.Tensor, mask: torch.Tensor, norm: LossNormalisers) -> torch.Tensor:
    """(1/B) Σ_i Σ_t m L / |o_i|: the GRPO paper's and GSPO's."""
    per_seq = (token_loss * mask).sum(-1) / mask.sum(-1).clamp(min=1)
    return per_seq.sum() / max(1, norm.num_sequences)


def token_mean(token_loss: torch.Tensor, mask: torch.Tensor, norm: LossNormalisers) -> torch.Tensor:
    """Σ_i Σ_t m L / Σ_i |o_i| over the whole mini-batch: DAPO's, CISPO's, GFPO's."""
    return (token_loss * mask).sum() / max(1, norm.num_tokens)


def seq_mean_token_sum_norm(token_loss: torch.Tensor, mask: torch.Tensor, norm: LossNormalisers) -> torch.Tensor:
    """(1/B) Σ_i Σ_t m L / L_norm with L_norm the generation budget: Dr. GRPO's."""
    return (token_loss * mask).sum() / (norm.length_norm * max(1, norm.num_sequences))


AGGREGATIONS = {
    "seq_mean_token_mean": seq_mean_token_mean,
    "token_mean": token_mean,
    "seq_mean_token_sum_norm": seq_mean_token_sum_norm,
}


# ---- composition -------------------------------------------------------------------------

def compute_loss(inp: LossInputs, cfg: AlgorithmConfig, norm: LossNormalisers) -> LossOutput:
    """The micro-batch's share of the mini-batch loss for the configured variant."""
    aggregate = AGGREGATIONS[cfg.aggregation]
    mask = inp.loss_mask
    terms = POLICY_LOSSES[cfg.policy_loss](RATIOS[cfg.ratio](inp), inp, cfg)
    policy_token_loss = terms.token_loss * CORRECTIONS[cfg.correction](inp, cfg).detach()
    policy_loss = aggregate(policy_token_loss, mask, norm)
    loss = policy_loss
    tokens, sequences = max(1, norm.num_tokens), max(1, norm.num_sequences)
    clipped = terms.clipped_low | terms.clipped_high
    stats = {
        "loss/policy": policy_loss.detach(),
        "clip/low_fraction": (terms.clipped_low.float() * mask).sum() / tokens,
        "clip/high_fraction": (terms.clipped_high.float() * mask).sum() / tokens,
        "clip/fraction": (clipped.float() * mask).sum() / tokens,
        # GSPO clips whole sequences; token and sequence fractions differ (docs/algorithms.md §12.6).
        "clip/sequence_fraction": (((clipped.float() * mask).sum(-1) > 0).float()).sum() / sequences,
        "ratio/mean": (terms.ratio * mask).sum() / tokens,
    }
    if inp.ref_logprobs is not None:
        kl = KL_ESTIMATORS[cfg.kl_estimator](inp.logprobs, inp.ref_logprobs)
        kl_value = aggregate(kl, mask, norm)
        if kl_in_loss(cfg):
            loss = loss + cfg.kl_coef * kl_value
        stats["kl"] = kl_value.detach()
    stats["loss/total"] = loss.detach()
    # One device-to-host copy for all metrics: each .item() would wait for the GPU.
    metrics = dict(zip(stats, torch.stack([v.float() for v in stats.values()]).tolist()))
    return LossOutput(loss=loss, metrics=metrics, clipped=clipped.detach())
