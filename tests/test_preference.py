"""DPO / IPO and the group-robust weighting against docs/algorithms.md §9, §11.11 and §11.12."""

import pytest
import torch

from grpo_cli.algorithms.preference import (GroupState, PairLogprobs, dpo_loss, group_losses, group_robust_weights, ipo_loss,
                                 mean_weights, preference_accuracy, preference_loss, updated_alpha)

SIZES = [300, 100]  # docs/algorithms.md §11.11: K = 2, N_1 = 300, N_2 = 100


def test_alpha_update_and_policy_step_weight_of_8_8():
    per_pair = torch.tensor([0.7], dtype=torch.float64)  # one pair, from group 2
    weights, alpha = group_robust_weights(per_pair, torch.tensor([1]), GroupState.uniform(SIZES), eta=0.01)
    assert alpha.tolist() == pytest.approx([0.4930005, 0.5069995], abs=1e-7)
    assert weights.item() == pytest.approx(2.0279982, abs=1e-7)  # N·α_2/N_2 with the updated α: dloss/dl


def test_weights_times_losses_is_the_weighted_group_loss():
    """Σ_i w_i l_i = Σ_g α_g G_g (docs/algorithms.md §9.4) with the updated α."""
    state = GroupState.uniform([50, 30, 20])
    per_pair = torch.tensor([0.5, 0.9, 0.2, 1.3], dtype=torch.float64)
    groups = torch.tensor([0, 0, 1, 2])
    weights, alpha = group_robust_weights(per_pair, groups, state, eta=0.1)
    assert float((weights * per_pair).sum()) == pytest.approx(float((alpha * group_losses(per_pair, groups, state.sizes)).sum()))


def test_the_wrong_sign_moves_alpha_the_wrong_way():
    """docs/algorithms.md §11.11: with l = log σ(βh) = −0.6209570 (the DPO vector's pair), α goes
    to (0.5062, 0.4938)."""
    wrong = torch.tensor([-0.6209570], dtype=torch.float64)
    alpha = updated_alpha(torch.tensor([0.5, 0.5]), group_losses(wrong, torch.tensor([1]), torch.tensor(SIZES)), 0.01)
    assert alpha.tolist() == pytest.approx([0.5062, 0.4938], abs=1e-4)


def test_dpo_loss_and_gradient_of_8_8():
    pairs = PairLogprobs(chosen=torch.tensor([-10.0], requires_grad=True), rejected=torch.tensor([-12.0]),
                         ref_chosen=torch.tensor([-11.0]), ref_rejected=torch.tensor([-11.5]), groups=torch.tensor([0]))
    h = pairs.margins()
    assert h.item() == pytest.approx(1.5)
    loss = dpo_loss(h, beta=0.1)
    assert loss.item() == pytest.approx(0.6209570, abs=1e-6)
    loss.backward()
    assert pairs.chosen.grad.item() == pytest.approx(-0.0462570, abs=1e-6)  # −β·σ(−βh)
    assert bool(preference_accuracy(pairs).all())


def test_ipo_loss_is_the_squared_distance_to_half_over_beta():
    h = torch.tensor([1.5, 5.0, 0.0])
    assert ipo_loss(h, beta=0.1).tolist() == pytest.approx([(1.5 - 5) ** 2, 0.0, 25.0])


@pytest.mark.parametrize("scale", [1.0, 1e3, 1e8, 1e300])
def test_alpha_stays_on_the_simplex_for_any_losses(scale):
    losses = torch.tensor([scale, -scale, 0.0, scale / 2], dtype=torch.float64)
    alpha = updated_alpha(torch.tensor([0.1, 0.2, 0.3, 0.4], dtype=torch.float64), losses, eta=1.0)
    assert torch.isfinite(alpha).all() and (alpha >= 0).all()
    assert alpha.sum().item() == pytest.approx(1.0, abs=1e-12)
    if scale >= 1e3:  # the losses outweigh the prior: the worst group takes (almost) all the weight
        assert int(alpha.argmax()) == 0


def test_a_group_absent_from_the_batch_has_zero_loss_and_loses_weight():
    """docs/algorithms.md §9.4: G_g = 0 for a group with no pair in the batch; with positive losses elsewhere its
    weight shrinks after renormalisation."""
    state = GroupState.uniform([50, 30, 20])
    per_pair = torch.tensor([0.5, 0.9, 0.2], dtype=torch.float64)
    groups = torch.tensor([0, 0, 1])
    G = group_losses(per_pair, groups, state.sizes)
    assert G.tolist() == pytest.approx([100 * 1.4 / 50, 100 * 0.2 / 30, 0.0])
    _, alpha = group_robust_weights(per_pair, groups, state, eta=0.1)
    assert alpha[2] < 1 / 3 and alpha[0] > alpha[1] > alpha[2]


def test_group_loss_is_a_plain_loop():
    generator = torch.Generator().manual_seed(0)
    per_pair = torch.rand(40, generator=generator, dtype=torch.float64)
    groups = torch.randint(0, 4, (40,), generator=generator)
    sizes = torch.tensor([500.0, 250.0, 200.0, 50.0], dtype=torch.float64)
    looped = [sum(float(l) for l, g in zip(per_pair, groups) if g == k) * 1000 / float(sizes[k]) for k in range(4)]
    assert group_losses(per_pair, groups, sizes).tolist() == pytest.approx(looped, rel=1e-12)


def test_plain_dpo_is_the_batch_mean_and_keeps_alpha():
    pairs = PairLogprobs(chosen=torch.tensor([-1.0, -2.0]), rejected=torch.tensor([-2.0, -1.0]),
                         ref_chosen=torch.zeros(2), ref_rejected=torch.zeros(2), groups=torch.tensor([0, 1]))
    state = GroupState.uniform(SIZES)
    out = preference_loss(pairs, state, loss="dpo", weighting="mean", beta=0.5, eta=0.01)
    expected = (torch.nn.functional.softplus(torch.tensor(-0.5)) + torch.nn.functional.softplus(torch.tensor(0.5))) / 2
    assert out.loss.item() == pytest.approx(expected.item())
    assert torch.equal(out.alpha, state.alpha)
    assert mean_weights(out.per_pair, pairs.groups, state, 0.01)[0].tolist() == [0.5, 0.5]
