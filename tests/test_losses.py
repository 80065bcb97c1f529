"""docs/algorithms.md §11.3, §11.4, §11.5 and §11.6 vectors; where the clip removes the gradient."""

import math

import pytest
import torch

from grpo_cli.algorithms import AGGREGATIONS, KL_ESTIMATORS, compute_loss
from grpo_cli.algorithms.losses import RATIOS, clipped_surrogate
from grpo_cli.algorithms.stage_io import LossInputs, LossNormalisers
from grpo_cli.config import AlgorithmConfig


def inputs(logprobs, old, advantages, mask=None, ref=None):
    logprobs = torch.tensor(logprobs, dtype=torch.float32, requires_grad=True)
    old = torch.tensor(old, dtype=torch.float32)
    adv = torch.tensor(advantages, dtype=torch.float32)
    mask = torch.ones_like(old) if mask is None else torch.tensor(mask, dtype=torch.float32)
    ref = None if ref is None else torch.tensor(ref, dtype=torch.float32)
    return LossInputs(logprobs=logprobs, old_logprobs=old, ref_logprobs=ref, sampler_logprobs=old.clone(),
                      advantages=adv, loss_mask=mask)


def norm_of(mask, length_norm=8.0):
    return LossNormalisers(num_sequences=int((mask.sum(-1) > 0).sum()), num_tokens=int(mask.sum()),
                           length_norm=length_norm)


def test_aggregation_vector_8_3():
    token_loss = torch.tensor([[1.0, 1.0, 0, 0], [4.0, 4.0, 4.0, 4.0]])
    mask = torch.tensor([[1.0, 1, 0, 0], [1, 1, 1, 1]])
    norm = norm_of(mask, length_norm=8.0)
    assert AGGREGATIONS["seq_mean_token_mean"](token_loss, mask, norm).item() == pytest.approx(2.5)
    assert AGGREGATIONS["token_mean"](token_loss, mask, norm).item() == pytest.approx(3.0)
    assert AGGREGATIONS["seq_mean_token_sum_norm"](token_loss, mask, norm).item() == pytest.approx(1.125)


def test_empty_sequences_leave_the_count():
    token_loss = torch.tensor([[1.0, 1.0], [5.0, 5.0]])
    mask = torch.tensor([[1.0, 1.0], [0.0, 0.0]])
    assert AGGREGATIONS["seq_mean_token_mean"](token_loss, mask, norm_of(mask)).item() == pytest.approx(1.0)


def test_dapo_clip_high_vector_8_4():
    cfg = AlgorithmConfig(clip_eps_low=0.2, clip_eps_high=0.28)
    inp = inputs([0.3], [0.0], [1.0])
    terms = clipped_surrogate(RATIOS["token"](inp), inp, cfg)
    assert math.exp(0.3) == pytest.approx(1.3498588, abs=1e-7)
    assert terms.token_loss.item() == pytest.approx(-1.28, abs=1e-6)
    terms.token_loss.sum().backward()
    assert inp.logprobs.grad.item() == 0.0
    assert terms.clipped_high.item() and not terms.clipped_low.item()


def test_negative_advantage_clip_low_vector_8_4():
    cfg = AlgorithmConfig(clip_eps_low=0.2, clip_eps_high=0.28)
    inp = inputs([math.log(0.7)], [0.0], [-1.0])
    terms = clipped_surrogate(RATIOS["token"](inp), inp, cfg)
    assert terms.token_loss.item() == pytest.approx(0.8, abs=1e-6)
    terms.token_loss.sum().backward()
    assert inp.logprobs.grad.item() == 0.0
    assert terms.clipped_low.item()


@pytest.mark.parametrize("log_ratio, adv, zero", [
    (0.1, 1.0, False), (0.25, 1.0, True), (-0.3, 1.0, False),
    (-0.3, -1.0, True), (0.25, -1.0, False), (-0.1, -1.0, False),
])
def test_gradient_is_zero_exactly_where_the_clip_is_active(log_ratio, adv, zero):
    cfg = AlgorithmConfig(clip_eps_low=0.2, clip_eps_high=0.2)
    inp = inputs([log_ratio], [0.0], [adv])
    clipped_surrogate(RATIOS["token"](inp), inp, cfg).token_loss.sum().backward()
    grad = inp.logprobs.grad.item()
    if zero:
        assert grad == 0.0
    else:
        assert grad == pytest.approx(-adv * math.exp(log_ratio), rel=1e-6)  # -A ρ ∇ℓ


def test_dual_clip_bounds_negative_advantage_loss():
    cfg = AlgorithmConfig(clip_eps_low=0.2, clip_eps_high=0.2, dual_clip_c=3.0)
    inp = inputs([math.log(5.0)], [0.0], [-1.0])
    terms = clipped_surrogate(RATIOS["token"](inp), inp, cfg)
    assert terms.token_loss.item() == pytest.approx(3.0)
    terms.token_loss.sum().backward()
    assert inp.logprobs.grad.item() == 0.0


def test_gspo_sequence_clip_vector_8_4():
    cfg = AlgorithmConfig(ratio="sequence", clip_eps_low=3e-4, clip_eps_high=4e-4)
    inp = inputs([[0.1, -0.2, 0.3]], [[0.0, 0.0, 0.0]], [[1.0, 1.0, 1.0]])
    log_s = RATIOS["sequence"](inp)
    assert math.exp(log_s[0, 0].item()) == pytest.approx(1.0689391, abs=1e-6)
    terms = clipped_surrogate(log_s, inp, cfg)
    terms.token_loss.sum().backward()
    assert torch.count_nonzero(inp.logprobs.grad) == 0


@pytest.mark.parametrize("lp, ref, k1, k2, k3", [(-1.0, -1.5, 0.5, 0.125, 0.1065307), (-2.0, -1.0, -1.0, 0.5, 0.7182818)])
def test_kl_vectors_8_5(lp, ref, k1, k2, k3):
    lp, ref = torch.tensor([lp]), torch.tensor([ref])
    assert KL_ESTIMATORS["k1"](lp, ref).item() == pytest.approx(k1, abs=1e-7)
    assert KL_ESTIMATORS["k2"](lp, ref).item() == pytest.approx(k2, abs=1e-7)
    assert KL_ESTIMATORS["k3"](lp, ref).item() == pytest.approx(k3, abs=1e-6)


def test_grpo_loss_adds_beta_k3_aggregated_like_the_policy_term():
    cfg = AlgorithmConfig(kl_coef=0.04)
    mask = [[1.0, 1.0, 0.0], [1.0, 1.0, 1.0]]
    inp = inputs([[-1.0, -2.0, 0.0], [-1.0, -1.0, -1.0]], [[-1.0, -2.0, 0.0], [-1.0, -1.0, -1.0]],
                 [[0.5, 0.5, 0.0], [-0.5, -0.5, -0.5]], mask=mask, ref=[[-1.5, -1.0, 0.0], [-1.0, -1.0, -1.0]])
    out = compute_loss(inp, cfg, norm_of(torch.tensor(mask)))
    # ratio 1: policy per token = -A; seq means -0.5 and 0.5 -> 0. KL seq means (0.1065307+0.7182818)/2, 0.
    expected = 0.04 * ((0.1065307 + 0.7182818) / 2 + 0.0) / 2
    assert out.loss.item() == pytest.approx(expected, abs=1e-7)
    assert out.metrics["kl"] == pytest.approx((0.1065307 + 0.7182818) / 4, abs=1e-6)


def _random_case(seed, per_sequence_advantage=True):
    g = torch.Generator().manual_seed(seed)
    mask = (torch.rand(6, 9, generator=g) < 0.8).float()
    mask[:, 0] = 1.0
    old = -torch.rand(6, 9, generator=g) * 3 * mask
    logprobs = (old + 0.003 * torch.randn(6, 9, generator=g)) * mask
    adv = torch.randn(6, 1, generator=g).expand(6, 9) if per_sequence_advantage else torch.randn(6, 9, generator=g)
    return inputs(logprobs.tolist(), old.tolist(), (adv * mask).tolist(), mask=mask.tolist())


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_gspo_token_equals_gspo_for_sequence_advantages(seed):
    results = {}
    for ratio in ("sequence", "sequence_token"):
        inp = _random_case(seed)
        cfg = AlgorithmConfig(ratio=ratio, clip_eps_low=3e-4, clip_eps_high=4e-4)
        out = compute_loss(inp, cfg, norm_of(inp.loss_mask))
        out.loss.backward()
        results[ratio] = (out.loss.item(), inp.logprobs.grad.clone(), out.metrics["clip/sequence_fraction"])
    (loss_a, grad_a, clip_a), (loss_b, grad_b, clip_b) = results["sequence"], results["sequence_token"]
    assert loss_a == pytest.approx(loss_b, abs=1e-7)
    assert torch.allclose(grad_a, grad_b, atol=1e-7)
    assert clip_a == clip_b and 0 < clip_a < 1  # some sequences clipped, some not


def test_gspo_clipped_sequence_has_no_gradient_and_others_do():
    inp = _random_case(3)
    cfg = AlgorithmConfig(ratio="sequence", clip_eps_low=3e-4, clip_eps_high=4e-4)
    log_s = RATIOS["sequence"](inp)
    terms = clipped_surrogate(log_s, inp, cfg)
    AGGREGATIONS["seq_mean_token_mean"](terms.token_loss, inp.loss_mask, norm_of(inp.loss_mask)).backward()
    clipped = (terms.clipped_low | terms.clipped_high).any(-1)
    has_grad = (inp.logprobs.grad.abs() > 0).any(-1)
    assert clipped.any() and (~clipped).any()
    assert torch.equal(has_grad, ~clipped)


@pytest.mark.parametrize("mode, level, expected", [
    ("tis", "token", [math.exp(0.5), 2.0, math.exp(-0.2)]),
    ("mis", "token", [math.exp(0.5), 0.0, math.exp(-0.2)]),
    ("tis", "sequence", [2.0, 2.0, 2.0]),                      # exp(0.5 + 1.0 - 0.2) = 3.67 -> 2
    ("mis", "sequence", [0.0, 0.0, 0.0]),
])
def test_mismatch_correction_vectors(mode, level, expected):
    from grpo_cli.algorithms import CORRECTIONS

    inp = inputs([[0.0, 0.0, 0.0]], [[-1.0, -1.0, -1.0]], [[1.0, 1.0, 1.0]])
    inp.sampler_logprobs = torch.tensor([[-1.5, -2.0, -0.8]])
    weight = CORRECTIONS[mode](inp, AlgorithmConfig(correction=mode, correction_level=level, correction_max=2.0))
    assert weight[0].tolist() == pytest.approx(expected, rel=1e-6)


def test_tis_lower_bound_and_weight_scales_the_loss():
    from grpo_cli.algorithms import CORRECTIONS

    inp = inputs([[0.0, 0.0]], [[0.0, 0.0]], [[1.0, 1.0]])
    inp.sampler_logprobs = torch.tensor([[3.0, 0.0]])  # w = e^-3 and 1
    cfg = AlgorithmConfig(correction="tis", correction_min=0.5, correction_max=2.0)
    assert CORRECTIONS["tis"](inp, cfg)[0].tolist() == pytest.approx([0.5, 1.0])
    out = compute_loss(inp, AlgorithmConfig(correction="tis", correction_min=0.5, kl_coef=0.0),
                       norm_of(inp.loss_mask))
    assert out.loss.item() == pytest.approx(-(0.5 + 1.0) / 2)


def test_cispo_vector_8_4():
    cfg = AlgorithmConfig(policy_loss="cispo", clip_eps_low=1.0, clip_eps_high=0.28)
    inp = inputs([-0.7], [-1.2], [1.0])  # log-ratio 0.5: ρ = 1.6487213
    from grpo_cli.algorithms.losses import cispo

    terms = cispo(RATIOS["token"](inp), inp, cfg)
    assert terms.ratio.item() == pytest.approx(1.6487213, abs=1e-6)
    assert terms.token_loss.item() == pytest.approx(-1.28 * -0.7, abs=1e-6)  # -1.28 · ℓ
    terms.token_loss.sum().backward()
    assert inp.logprobs.grad.item() == pytest.approx(-1.28, abs=1e-6)  # non-zero: the token keeps its gradient
    assert terms.clipped_high.item()
