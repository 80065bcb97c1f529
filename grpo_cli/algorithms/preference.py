"""Offline preference losses: DPO (Rafailov et al. 2023, arXiv 2305.18290), IPO (Azar et al.
2023, arXiv 2310.12036), and their group-robust forms GR-DPO / GR-IPO (Ramesh et al. 2024,
arXiv 2405.20304; docs/algorithms.md §9). Not DeepSeek's GRPO: there is no sampler and no reward.

A pair's margin is h = [ℓ(y_w) − ℓ_ref(y_w)] − [ℓ(y_l) − ℓ_ref(y_l)], with ℓ the sequence
log-prob summed over response tokens. DPO's loss is the positive −log σ(βh) (docs/algorithms.md §9.6: the
paper's Algorithm section writes it without the minus, which would up-weight the best group).

The group-robust step is the authors' mini-batch form (docs/algorithms.md §9.4): group losses
G_g = N · Σ_{i∈B, g_i=g} l_i / N_g, weights α ← normalise(α ⊙ exp(η_α · G)), policy loss
Σ_g α_g G_g with the updated α (detached), written as per-pair weights α_g N / N_g so that a
mini-batch can be split into micro-batches. Where we differ: the exponentiated-gradient step is
taken in log space (log α + η_α G, then a softmax), which is the same update but keeps α on
the simplex, with no inf or NaN, however large the losses. Weightings are picked from
WEIGHTINGS by name: `mean` (plain DPO / IPO: the batch mean) and `group_robust`; each returns
per-pair weights and the new α.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass
class PairLogprobs:
    """Summed response log-probs of B preference pairs ([B] each) and their group ids ([B] long, 0..K-1)."""

    chosen: torch.Tensor
    rejected: torch.Tensor
    ref_chosen: torch.Tensor
    ref_rejected: torch.Tensor
    groups: torch.Tensor

    def margins(self) -> torch.Tensor:
        """h_θ per pair ([B])."""
        return (self.chosen - self.ref_chosen) - (self.rejected - self.ref_rejected)


@dataclass
class GroupState:
    """What the group-robust weighting carries between steps (checkpointed with the trainer).

    alpha: [K] on the simplex; sizes: [K] pairs per group in the training set (N_g)."""

    alpha: torch.Tensor
    sizes: torch.Tensor

    @staticmethod
    def uniform(sizes: list[int]) -> "GroupState":
        k = len(sizes)
        return GroupState(alpha=torch.full((k,), 1.0 / k, dtype=torch.float64),
                          sizes=torch.tensor(sizes, dtype=torch.float64))


@dataclass
class PreferenceLoss:
    """loss: the scalar to back-propagate; per_pair: [B] detached losses; alpha: [K] after the step."""

    loss: torch.Tensor
    per_pair: torch.Tensor
    alpha: torch.Tensor


def dpo_loss(h: torch.Tensor, beta: float) -> torch.Tensor:
    """−log σ(βh) ≥ 0, as softplus(−βh) for stability ([B] -> [B])."""
    return F.softplus(-beta * h)


def ipo_loss(h: torch.Tensor, beta: float) -> torch.Tensor:
    """(h − 1/(2β))² ([B] -> [B])."""
    return (h - 1.0 / (2.0 * beta)) ** 2


PAIR_LOSSES = {"dpo": dpo_loss, "ipo": ipo_loss}


def group_losses(per_pair: torch.Tensor, groups: torch.Tensor, sizes: torch.Tensor) -> torch.Tensor:
    """G_g = N · Σ_{i∈B, g_i=g} l_i / N_g ([B], [B], [K] -> [K]); 0 for a group absent from B."""
    sums = torch.zeros(len(sizes), dtype=per_pair.dtype, device=per_pair.device).index_add(0, groups, per_pair)
    return sums * (sizes.sum() / sizes).to(per_pair)


def updated_alpha(alpha: torch.Tensor, group_loss: torch.Tensor, eta: float) -> torch.Tensor:
    """α ← normalise(α ⊙ exp(η·G)), computed as softmax(log α + η·G) ([K], [K] -> [K])."""
    return torch.softmax(alpha.double().log() + eta * group_loss.detach().double(), dim=0)


def mean_weights(per_pair: torch.Tensor, groups: torch.Tensor, state: GroupState, eta: float):
    """Plain DPO / IPO: every pair 1/B (the batch mean); α is left as it is."""
    return torch.full_like(per_pair, 1.0 / len(per_pair)), state.alpha


def group_robust_weights(per_pair: torch.Tensor, groups: torch.Tensor, state: GroupState, eta: float):
    """α updated first from this batch's G (docs/algorithms.md §9.4), then pair i weighs α_g N / N_g for its group
    g, so Σ_i w_i l_i = Σ_g α_g G_g and the gradient flows through G only."""
    alpha = updated_alpha(state.alpha, group_losses(per_pair, groups, state.sizes), eta)
    per_group = (alpha * state.sizes.sum() / state.sizes).to(per_pair)
    return per_group[groups], alpha


WEIGHTINGS = {"mean": mean_weights, "group_robust": group_robust_weights}


def pair_losses(pairs: PairLogprobs, loss: str, beta: float) -> torch.Tensor:
    """The configured per-pair loss ([B])."""
    return PAIR_LOSSES[loss](pairs.margins(), beta)


def preference_loss(pairs: PairLogprobs, state: GroupState, loss: str, weighting: str, beta: float,
                    eta: float) -> PreferenceLoss:
    """One mini-batch in one piece: weights from the detached losses, then Σ_i w_i l_i. (With
    micro-batches the caller computes the weights from a first, gradient-free pass.)"""
    per_pair = pair_losses(pairs, loss, beta)
    weights, alpha = WEIGHTINGS[weighting](per_pair.detach(), pairs.groups, state, eta)
    return PreferenceLoss(loss=(weights * per_pair).sum(), per_pair=per_pair.detach(), alpha=alpha)


# A margin this small is a tie: two float32 passes over the same weights (the policy and its
# frozen copy) can differ by about 1e-5 in a summed log-prob, as matrix products are split
# differently when parameters require grad.
MARGIN_TIE = 1e-4


def ranked_above(margins: torch.Tensor) -> torch.Tensor:
    """[B] margins h -> [B] bool: chosen ranked above rejected, h > MARGIN_TIE."""
    return margins > MARGIN_TIE


def preference_accuracy(pairs: PairLogprobs) -> torch.Tensor:
    """Per pair ([B] bool): the policy ranks chosen above rejected relative to the reference."""
    return ranked_above(pairs.margins())
