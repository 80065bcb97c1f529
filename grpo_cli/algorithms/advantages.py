"""Advantage estimators: reward per completion -> advantage per token.

Implements GRPO's group z-score (DeepSeekMath, arXiv 2402.03300; docs/algorithms.md §2.2),
Dr. GRPO's mean-only advantage (arXiv 2503.20783), RLOO's leave-one-out baseline
(arXiv 2402.14740) and REINFORCE++ with and without the group baseline (arXiv 2501.03262;
docs/algorithms.md §7.2). When the KL goes into the reward, sequence-level estimators subtract its sum from R_i
and REINFORCE++ spreads it over the token returns. Where we differ from the papers:
- the std convention is a flag (`std_ddof`, default 1 as in TRL, verl, oat and OpenRLHF);
- groups whose rewards have no spread get exactly 0 (explicit guard, docs/algorithms.md §1.6),
  rather than relying on `std + eps`;
- rewards that are NaN (a reward function had no opinion or failed) and completions a group
  filter did not select are left out of the group statistics and get advantage 0, as TRL does.

How several reward functions become R_i (summed first, or normalised one by one as in
GDPO) is `algorithm.reward_aggregation`, in aggregation.py, which also holds each estimator's
group rule. Every estimator has the signature `(AdvantageInputs, AlgorithmConfig) -> Tensor [N, C]`.
Statistics are computed in float64 and the result is returned as float32.
"""

from __future__ import annotations

import torch

from grpo_cli.algorithms.aggregation import GROUP_RULES, sequence_advantages
from grpo_cli.algorithms.process import process_advantages
from grpo_cli.algorithms.stage_io import AdvantageInputs
from grpo_cli.algorithms.stats import ZERO_SPREAD
from grpo_cli.config import AlgorithmConfig


def _per_sequence(inp: AdvantageInputs, cfg: AlgorithmConfig, rule) -> torch.Tensor:
    """The rule's advantage of R_i (less the summed KL penalty when the KL is in the reward),
    aggregated over the rewards as configured, on every loss-bearing token."""
    values = sequence_advantages(inp.sequence_rewards(), inp, cfg, rule).values
    return values.to(torch.float32)[:, None] * inp.loss_mask


def grpo_advantages(inp: AdvantageInputs, cfg: AlgorithmConfig) -> torch.Tensor:
    """(R_i - mean_G) / (std_G + eps), eps = cfg.adv_eps, std with cfg.std_ddof."""
    return _per_sequence(inp, cfg, GROUP_RULES["grpo"])


def dr_grpo_advantages(inp: AdvantageInputs, cfg: AlgorithmConfig) -> torch.Tensor:
    """R_i - mean_G: no std division, so easy and hard prompts are not up-weighted."""
    return _per_sequence(inp, cfg, GROUP_RULES["dr_grpo"])


def rloo_advantages(inp: AdvantageInputs, cfg: AlgorithmConfig) -> torch.Tensor:
    """R_i minus the mean of the other valid rewards of its group = G/(G-1) (R_i - mean)."""
    return _per_sequence(inp, cfg, GROUP_RULES["rloo"])


def _whitened_returns(outcome: torch.Tensor, inp: AdvantageInputs, cfg: AlgorithmConfig) -> torch.Tensor:
    """REINFORCE++ (arXiv 2501.03262): token rewards r_t = 1[t = last]·outcome_i - β·KL_t,
    returns G_t = Σ_{s≥t} r_s (γ = 1), whitened over every valid token of the batch."""
    mask = inp.loss_mask.to(torch.float64)
    valid = inp.valid
    mask = mask * valid[:, None]
    # The last loss-bearing token: in a multi-turn episode the environment's tokens leave gaps.
    positions = torch.arange(mask.shape[1]).expand_as(mask)
    last = torch.where(mask > 0, positions, -1).max(-1).values.clamp(min=0)
    token_rewards = torch.zeros_like(mask)
    token_rewards[torch.arange(mask.shape[0]), last] = torch.where(valid, outcome, 0.0)
    if inp.kl_penalty is not None:
        token_rewards = token_rewards - inp.kl_penalty.to(torch.float64)
    returns = (token_rewards * mask).flip(-1).cumsum(-1).flip(-1)
    count = mask.sum().clamp(min=1)
    mean = (returns * mask).sum() / count
    var = (((returns - mean) * mask) ** 2).sum() / count
    if mask.sum() < 2 or var.sqrt() <= ZERO_SPREAD * max(1.0, abs(float(mean))):
        return torch.zeros_like(inp.loss_mask)
    return (((returns - mean) / (var.sqrt() + cfg.adv_eps)) * mask).to(torch.float32)


def reinforce_pp_advantages(inp: AdvantageInputs, cfg: AlgorithmConfig) -> torch.Tensor:
    """REINFORCE++: the outcome reward itself is the return's terminal reward."""
    return _whitened_returns(sequence_advantages(inp.rewards, inp, cfg, GROUP_RULES["reinforce_pp"]).values, inp, cfg)


def reinforce_pp_baseline_advantages(inp: AdvantageInputs, cfg: AlgorithmConfig) -> torch.Tensor:
    """REINFORCE++-baseline: subtract the group mean first, then whiten over the batch."""
    centred = sequence_advantages(inp.rewards, inp, cfg, GROUP_RULES["reinforce_pp_baseline"]).values
    return _whitened_returns(centred, inp, cfg)


ADVANTAGES = {
    "grpo": grpo_advantages,
    "dr_grpo": dr_grpo_advantages,
    "rloo": rloo_advantages,
    "reinforce_pp": reinforce_pp_advantages,
    "reinforce_pp_baseline": reinforce_pp_baseline_advantages,
    "process": process_advantages,
}
