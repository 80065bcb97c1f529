"""Several reward functions, one advantage: summed first (GRPO), or normalised one by one (GDPO).

Every sequence-level estimator is a group rule: it turns one reward per completion into
(r - baseline) / divisor within the prompt's group (GRPO: mean and std; Dr. GRPO: mean only;
RLOO: mean, scaled by G/(G-1); REINFORCE++: no baseline). `algorithm.reward_aggregation`
decides what the rule is applied to:

- `sum` (TRL's `sum_then_normalize`, every paper before GDPO): the weighted sum of the rewards.
  Different reward vectors can then get the same advantage: a group scoring (1,1) against
  (0,0) on two rewards and one scoring (1,0) against (0,0) both become (+0.71, -0.71).
- `decoupled` (GDPO, arXiv 2601.05242; TRL's `normalize_then_sum`): the rule is applied to
  each reward on its own, the results are summed with the reward weights, and the sum is
  whitened over the batch, (A - mean_batch) / (std_batch + eps).

Where we differ from the paper and TRL:
- a reward with no spread in a group contributes exactly 0 there (the estimators' guard), and a
  completion none of whose rewards has a spread in its group gets exactly 0 after the whitening
  (TRL gives it -mean_batch / std_batch); it still counts in the batch statistics, as in TRL;
- a reward that has no opinion (None / NaN) on a completion is left out of that reward's group
  statistics and contributes 0 there; a completion without any opinion gets 0;
- the batch std uses `std_ddof` and `adv_eps`, as the group statistics do;
- for the mean-only rules (Dr. GRPO, RLOO, REINFORCE++) normalising each reward first changes
  nothing but the batch whitening, since their rule is linear in the reward: the decoupling
  matters where the rule divides by the reward's own spread (GRPO).

Per-reward contributions (logged as advantage/NAME/mean and /std) split the sequence advantage
into one part per reward that adds up to it: under `sum`, w_k (r_k - baseline_k) / divisor with
the rule's divisor of the summed reward; under `decoupled`, the whitened w_k Â_k.
Rule signature: (rewards [N], valid [N] bool, group_ids [N], AlgorithmConfig) -> GroupRule.
Aggregation signature: (rewards [N], AdvantageInputs, AlgorithmConfig, rule) -> SequenceAdvantages.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from grpo_cli.algorithms.stage_io import AdvantageInputs
from grpo_cli.algorithms.stats import ZERO_SPREAD, group_stats
from grpo_cli.config import AlgorithmConfig


@dataclass
class GroupRule:
    """One reward vector's normalisation within groups, every tensor [N]: the advantage is
    (r - baseline) / divisor on the rows in `keep` (float64), exactly 0 elsewhere."""

    baseline: torch.Tensor
    divisor: torch.Tensor
    keep: torch.Tensor

    def apply(self, rewards: torch.Tensor) -> torch.Tensor:
        centred = (rewards.to(torch.float64) - self.baseline) / self.divisor
        return torch.where(self.keep, centred, torch.zeros_like(centred))


def z_score(rewards: torch.Tensor, valid: torch.Tensor, group_ids: torch.Tensor, cfg: AlgorithmConfig) -> GroupRule:
    """GRPO: (r - mean_G) / (std_G + eps); groups without a spread get 0."""
    stats = group_stats(rewards, group_ids, cfg.std_ddof, valid)
    return GroupRule(stats.mean[group_ids], stats.std[group_ids] + cfg.adv_eps, valid & ~stats.no_spread[group_ids])


def centred(rewards: torch.Tensor, valid: torch.Tensor, group_ids: torch.Tensor, cfg: AlgorithmConfig) -> GroupRule:
    """Dr. GRPO, REINFORCE++-baseline: r - mean_G."""
    stats = group_stats(rewards, group_ids, cfg.std_ddof, valid)
    return GroupRule(stats.mean[group_ids], torch.ones_like(stats.mean[group_ids]), valid & ~stats.no_spread[group_ids])


def leave_one_out(rewards: torch.Tensor, valid: torch.Tensor, group_ids: torch.Tensor, cfg: AlgorithmConfig) -> GroupRule:
    """RLOO: r minus the mean of the others = (r - mean_G) / ((G - 1) / G), G the valid count."""
    stats = group_stats(rewards, group_ids, cfg.std_ddof, valid)
    count = stats.count[group_ids]
    return GroupRule(stats.mean[group_ids], (count - 1).clamp(min=1) / count.clamp(min=1),
                     valid & ~stats.no_spread[group_ids])


def uncentred(rewards: torch.Tensor, valid: torch.Tensor, group_ids: torch.Tensor, cfg: AlgorithmConfig) -> GroupRule:
    """REINFORCE++: the reward itself (its baseline is the batch whitening that follows)."""
    zeros = torch.zeros_like(rewards, dtype=torch.float64)
    return GroupRule(zeros, torch.ones_like(zeros), valid.clone())


# The group rule of each sequence-level estimator (algorithm.advantage); `process` has none.
GROUP_RULES = {
    "grpo": z_score,
    "dr_grpo": centred,
    "rloo": leave_one_out,
    "reinforce_pp": uncentred,
    "reinforce_pp_baseline": centred,
}


def weighted_terms(inp: AdvantageInputs) -> dict[str, tuple[float, torch.Tensor]]:
    """name -> (weight, [N] term); the total reward as the one term `reward` when none are given."""
    return inp.reward_terms or {"reward": (1.0, inp.rewards)}


@dataclass
class SequenceAdvantages:
    """values: [N] float64, one advantage per completion (0 where it takes no part).
    per_reward: reward name -> [N] float64, its contribution; the contributions add up to values
    (under `sum`, less the KL penalty's share when the KL is in the reward)."""

    values: torch.Tensor
    per_reward: dict[str, torch.Tensor]


def summed(rewards: torch.Tensor, inp: AdvantageInputs, cfg: AlgorithmConfig, rule) -> SequenceAdvantages:
    """The rule on the weighted sum (`rewards`, KL penalty included when it is in the reward)."""
    normalised = rule(rewards, inp.valid, inp.group_ids, cfg)
    per_reward = {}
    for name, (weight, term) in weighted_terms(inp).items():
        filled = torch.where(torch.isnan(term), torch.zeros_like(term), term).to(torch.float64)
        baseline = rule(filled, inp.valid, inp.group_ids, cfg).baseline  # linear: the parts add up
        part = weight * (filled - baseline) / normalised.divisor
        per_reward[name] = torch.where(normalised.keep, part, torch.zeros_like(part))
    return SequenceAdvantages(normalised.apply(rewards), per_reward)


def decoupled(rewards: torch.Tensor, inp: AdvantageInputs, cfg: AlgorithmConfig, rule) -> SequenceAdvantages:
    """GDPO: the rule on each reward alone, the weighted sum, whitened over the batch's valid rows."""
    parts, active = {}, torch.zeros_like(inp.valid)
    for name, (weight, term) in weighted_terms(inp).items():
        normalised = rule(term, inp.valid & ~torch.isnan(term), inp.group_ids, cfg)
        parts[name] = weight * normalised.apply(torch.where(torch.isnan(term), torch.zeros_like(term), term))
        active |= normalised.keep
    total = sum(parts.values())
    count = int(inp.valid.sum())
    mean = total[inp.valid].mean() if count else total.new_zeros(())
    std = ((total[inp.valid] - mean) ** 2).sum().div(max(count - cfg.std_ddof, 1)).sqrt()
    if count < 2 or std <= ZERO_SPREAD * max(1.0, abs(float(mean))):
        zeros = torch.zeros_like(total)
        return SequenceAdvantages(zeros, {name: zeros for name in parts})
    scale = std + cfg.adv_eps
    per_reward = {name: torch.where(active, (part - part[inp.valid].mean()) / scale, torch.zeros_like(part))
                  for name, part in parts.items()}
    return SequenceAdvantages(torch.where(active, (total - mean) / scale, torch.zeros_like(total)), per_reward)


# algorithm.reward_aggregation; TRL's spellings are accepted as the same thing.
REWARD_AGGREGATIONS = {
    "sum": summed,
    "decoupled": decoupled,
    "sum_then_normalize": summed,
    "normalize_then_sum": decoupled,
}


def sequence_advantages(rewards: torch.Tensor, inp: AdvantageInputs, cfg: AlgorithmConfig, rule) -> SequenceAdvantages:
    """The configured aggregation of the estimator's rule."""
    return REWARD_AGGREGATIONS[cfg.reward_aggregation](rewards, inp, cfg, rule)


def reward_advantage_metrics(inp: AdvantageInputs, cfg: AlgorithmConfig) -> dict[str, float]:
    """advantage/NAME/mean and /std over the completions that take part, for each reward of a
    step scored by two or more (with one, its contribution is the advantage itself)."""
    rule = GROUP_RULES.get(cfg.advantage)
    if rule is None or len(weighted_terms(inp)) < 2:
        return {}
    result = sequence_advantages(inp.sequence_rewards(), inp, cfg, rule)
    taking_part = inp.valid
    out = {}
    for name, part in result.per_reward.items():
        values = part[taking_part]
        out[f"advantage/{name}/mean"] = float(values.mean()) if values.numel() else 0.0
        out[f"advantage/{name}/std"] = float(values.std(correction=0)) if values.numel() else 0.0
    return out
