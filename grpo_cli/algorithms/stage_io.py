"""Typed inputs and outputs of the stage functions (docs/design.md §3): what an advantage
estimator reads, what the policy loss reads per micro-batch, the mini-batch normalisers it
divides by, and what it hands back. Shapes as in grpo_cli/types.py, with b for the sequences
of one micro-batch.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from grpo_cli.types import Scores


@dataclass
class AdvantageInputs:
    """What an advantage estimator reads, N completions.

    rewards:      [N] float; NaN where no reward function had an opinion.
    group_ids:    [N] long in 0..B-1.
    loss_mask:    [N, C].
    kl_penalty:   [N, C] β·KL per token when the KL goes into the reward (PPO style), else None.
    step_ends / step_rewards: [N, S] process supervision (see Scores), else None.
    selected:     [N] bool, the completions a group filter chose to learn from (None: all);
                  the others are left out of the group statistics and get advantage 0.
    reward_terms: name -> (weight, [N] float): each reward as it enters `rewards` (gated, times the
                  episode's turn discount; NaN: no opinion), with its weight. None: one reward.
    """

    rewards: torch.Tensor
    group_ids: torch.Tensor
    loss_mask: torch.Tensor
    kl_penalty: torch.Tensor | None = None
    step_ends: torch.Tensor | None = None
    step_rewards: torch.Tensor | None = None
    selected: torch.Tensor | None = None
    reward_terms: dict[str, tuple[float, torch.Tensor]] | None = None

    @classmethod
    def from_scores(cls, scores: Scores, selected: torch.Tensor, group_ids: torch.Tensor, loss_mask: torch.Tensor,
                    kl_penalty: torch.Tensor | None, weights: dict[str, float] | None = None,
                    reward_scale: torch.Tensor | None = None) -> "AdvantageInputs":
        """weights: by reward name (absent: 1, as the environment's); reward_scale: [N] turn discount."""
        scale = 1.0 if reward_scale is None else reward_scale
        terms = {name: ((weights or {}).get(name, 1.0), values * scale) for name, values in scores.components.items()}
        return cls(scores.total, group_ids, loss_mask, kl_penalty, scores.step_ends, scores.step_rewards, selected,
                   terms or None)

    @property
    def valid(self) -> torch.Tensor:
        """[N] bool: selected and scored, the completions whose reward enters the statistics."""
        scored = ~torch.isnan(self.rewards)
        return scored if self.selected is None else scored & self.selected

    def sequence_rewards(self) -> torch.Tensor:
        """[N] float64: R_i minus the summed per-token KL penalty, for sequence-level estimators."""
        rewards = self.rewards.to(torch.float64)
        if self.kl_penalty is None:
            return rewards
        return rewards - (self.kl_penalty * self.loss_mask).sum(-1).to(torch.float64)


@dataclass
class LossInputs:
    """Per-token inputs of the policy loss for one micro-batch of b sequences.

    logprobs:         [b, C] current policy, carries the gradient.
    old_logprobs:     [b, C] behaviour policy as recomputed by the learner, no gradient.
    ref_logprobs:     [b, C] frozen reference or None.
    sampler_logprobs: [b, C] what the sampler reported, no gradient.
    advantages:       [b, C]
    loss_mask:        [b, C] float.
    """

    logprobs: torch.Tensor
    old_logprobs: torch.Tensor
    ref_logprobs: torch.Tensor | None
    sampler_logprobs: torch.Tensor
    advantages: torch.Tensor
    loss_mask: torch.Tensor


@dataclass
class LossNormalisers:
    """Normalisers of the optimizer-step mini-batch, counted before micro-batching so that
    summing micro-batch losses gives exactly the full mini-batch loss (docs/algorithms.md §1.4).

    num_sequences: sequences with at least one loss-bearing token (empty ones are excluded).
    num_tokens:    loss-bearing tokens in the mini-batch.
    length_norm:   the constant L_norm of `seq_mean_token_sum_norm` (the generation budget).
    lag_tokens:    loss-bearing tokens per policy-version lag, {lag: tokens}, on rollouts
                   generated ahead (the off-policy metrics' denominators); None otherwise.
    """

    num_sequences: int
    num_tokens: int
    length_norm: float
    lag_tokens: dict[int, int] | None = None


@dataclass
class LossOutput:
    """The micro-batch's share of the mini-batch loss, and its metrics.

    loss:    scalar tensor with gradient; micro-batch losses add up to the mini-batch loss.
    metrics: flat name -> float, each already divided by the mini-batch normaliser so that it
             adds up across micro-batches the same way.
    clipped: [b, C] bool, detached: where a bound of the policy loss was active.
    """

    loss: torch.Tensor
    metrics: dict[str, float] = field(default_factory=dict)
    clipped: torch.Tensor | None = None
