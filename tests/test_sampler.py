"""The hf sampler on the shipped tiny model: masks, determinism, and log-probs that agree
with the learner's recomputation (same positions, temperature and fp32 softmax)."""

import pytest
import torch
from transformers import AutoModelForCausalLM

from grpo_cli.sampler import SamplingParams, engine
from grpo_cli.sampler.hf import filter_logits
from grpo_cli.training.logprobs import sequence_logprobs
from grpo_cli.types import left_pad

from conftest import TINY, drawn_from_logprobs, seeds


@pytest.fixture(scope="module")
def sampler(tokenizer):
    return engine("hf")(model_path=TINY, tokenizer=tokenizer, device=torch.device("cpu"),
                        dtype=torch.float32, batch_size=32)


def params(**kw):
    base = dict(n=4, temperature=1.0, top_p=1.0, top_k=0, max_new_tokens=48)
    return SamplingParams(**{**base, **kw})


def test_rollout_shapes_masks_and_groups(sampler, eval_prompts, tokenizer):
    batch = eval_prompts.take(list(range(6)))
    out = sampler.generate(batch, params(), seeds=seeds(1, 6))
    n = 6 * 4
    assert out.completion_ids.shape[0] == n and out.sampler_logprobs.shape == out.completion_ids.shape
    assert out.group_ids.tolist() == [g for g in range(6) for _ in range(4)]
    eos = tokenizer.eos_token_id
    for ids, mask, truncated in zip(out.completion_ids, out.completion_mask, out.truncated):
        length = int(mask.sum())
        assert mask[:length].all() and not mask[length:].any()
        ended = eos in ids[:length].tolist()
        assert ended != bool(truncated)
        if ended:
            assert ids[length - 1] == eos and eos not in ids[:length - 1].tolist()
    assert (out.sampler_logprobs[out.completion_mask == 0] == 0).all()
    assert (out.sampler_logprobs[out.completion_mask == 1] < 0).all()
    # Decoded in inference mode, handed on as ordinary tensors the learner's graph can hold.
    assert not any(t.is_inference() for t in vars(out).values() if isinstance(t, torch.Tensor))


def test_same_seed_same_completions(sampler, eval_prompts):
    batch = eval_prompts.take([0, 1, 2])
    a = sampler.generate(batch, params(), seeds=seeds(5, 3))
    b = sampler.generate(batch, params(), seeds=seeds(5, 3))
    c = sampler.generate(batch, params(), seeds=seeds(6, 3))
    assert torch.equal(a.completion_ids, b.completion_ids)
    assert a.completions != c.completions


def test_a_prompt_draws_the_same_whatever_shares_its_batch(sampler, eval_prompts):
    """What the two ranks of a distributed run draw equals what one process draws."""
    whole = sampler.generate(eval_prompts.take([0, 1, 2, 3]), params(), seeds=[7, 8, 9, 10])
    first = sampler.generate(eval_prompts.take([0, 1]), params(), seeds=[7, 8])
    second = sampler.generate(eval_prompts.take([2, 3]), params(), seeds=[9, 10])
    assert whole.completions == first.completions + second.completions
    halves = torch.cat([first.sampler_logprobs.sum(-1), second.sampler_logprobs.sum(-1)])
    assert torch.allclose(whole.sampler_logprobs.sum(-1), halves, atol=1e-5)


def test_batch_size_does_not_change_the_layout(tokenizer, eval_prompts):
    """Chunked generation pads every chunk to one width and keeps masks right."""
    small = engine("hf")(model_path=TINY, tokenizer=tokenizer, device=torch.device("cpu"), dtype=torch.float32, batch_size=5)
    out = small.generate(eval_prompts.take([0, 1, 2, 3]), params(), seeds=seeds(3, 4))
    assert out.completion_ids.shape[0] == 16
    assert out.completion_mask.sum(-1).tolist() == [len(tokenizer(c, add_special_tokens=False)["input_ids"]) + (0 if t else 1)
                                                     for c, t in zip(out.completions, out.truncated.tolist())]


@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_sampler_logprobs_match_the_learner(sampler, eval_prompts, temperature):
    from grpo_cli.training.learner import Learner  # noqa: F401  (layout shared with the learner)
    from grpo_cli.types import TrainBatch

    out = sampler.generate(eval_prompts.take(list(range(8))), params(temperature=temperature), seeds=seeds(2, 8))
    ids = torch.cat([out.prompt_ids, out.completion_ids], 1)
    mask = torch.cat([out.prompt_mask, out.completion_mask], 1)
    batch = TrainBatch(input_ids=ids, attention_mask=mask, loss_mask=out.completion_mask.float(),
                       advantages=torch.zeros_like(out.sampler_logprobs), sampler_logprobs=out.sampler_logprobs)
    with torch.no_grad():
        learner_logprobs, _ = sequence_logprobs(sampler.model, batch, temperature)
    gap = (learner_logprobs - out.sampler_logprobs).abs() * batch.loss_mask
    assert gap.max().item() < 1e-4


@pytest.mark.parametrize("top_p, top_k", [(0.7, 0), (1.0, 3)])
def test_under_top_p_or_top_k_the_sampler_records_the_distribution_it_drew_from(sampler, eval_prompts, top_p, top_k):
    out = sampler.generate(eval_prompts.take(list(range(8))), params(top_p=top_p, top_k=top_k), seeds=seeds(2, 8))
    drawn_from, full = drawn_from_logprobs(sampler.model, out, 1.0, top_p, top_k)
    real = out.completion_mask.bool()
    assert (out.sampler_logprobs - drawn_from)[real].abs().max() < 1e-4
    # The filters took mass off: the full softmax's log-probs are lower, so recording them would fail.
    assert (drawn_from - full)[real].max() > 0.05


def test_top_k_one_is_greedy(sampler, eval_prompts, tokenizer):
    batch = eval_prompts.take([0, 1, 2, 3])
    out = sampler.generate(batch, params(n=1, top_k=1), seeds=seeds(0, 4))
    model = AutoModelForCausalLM.from_pretrained(TINY)
    ids, mask = left_pad(batch.prompt_ids, tokenizer.pad_token_id)
    greedy = model.generate(input_ids=ids, attention_mask=mask, do_sample=False, max_new_tokens=48,
                            pad_token_id=tokenizer.pad_token_id)
    expected = tokenizer.batch_decode(greedy[:, ids.shape[1]:], skip_special_tokens=True)
    assert out.completions == expected


def test_filter_logits_top_p_and_top_k():
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]]))
    kept = torch.isfinite(filter_logits(logits, top_k=0, top_p=0.7))
    assert kept.tolist() == [[True, True, False, False]]  # 0.5 < 0.7, 0.5 + 0.3 crosses it
    kept = torch.isfinite(filter_logits(logits, top_k=3, top_p=1.0))
    assert kept.tolist() == [[True, True, True, False]]


def _models_to_decode(name: str):
    """The shipped tiny Llama; a Qwen2 with grouped keys and values and biased projections;
    Llamas with scaled rotary frequencies (linear: fixed, so LlamaDecode's tables hold them;
    dynamic: recomputed from each call's positions, so transformers' forward decodes); and a
    GPT-2, which only transformers' forward decodes."""
    from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(0)
    small = dict(vocab_size=86, hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
                 max_position_embeddings=128)
    scaled = lambda kind: LlamaForCausalLM(LlamaConfig(  # noqa: E731
        **small, rope_parameters={"rope_type": kind, "factor": 2.0, "rope_theta": 10000.0}))
    return {
        "tiny llama": lambda: AutoModelForCausalLM.from_pretrained(TINY),
        "qwen2": lambda: Qwen2ForCausalLM(Qwen2Config(**small, num_key_value_heads=2)),
        "llama, linear rope": lambda: scaled("linear"),
        "llama, dynamic rope": lambda: scaled("dynamic"),
        "gpt2": lambda: GPT2LMHeadModel(GPT2Config(vocab_size=86, n_embd=64, n_layer=2, n_head=4, n_positions=128,
                                                   bos_token_id=1, eos_token_id=2)),
    }[name]()


def decoding_gaps(model, decoder, vocab: int) -> list[float]:
    """Largest |logit gap| at each of 40 decoding steps between `decoder` (shared prompt pass,
    rows dropped and repeated after step 2, again after step 20) and one forward over the whole
    left-padded sequence. 40 steps outgrow the cache's first room twice (LlamaDecode.ROOM)."""
    generator = torch.Generator().manual_seed(1)
    prompts = [torch.randint(3, vocab, (length,), generator=generator).tolist() for length in (5, 9, 2)]
    ids, mask = left_pad(prompts, 0)
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    rows = torch.tensor([0, 0, 1, 2, 2, 2])  # prompts repeated as a group's rows are
    gaps = []
    with torch.inference_mode():
        logits = decoder.prefill(ids, mask, positions)[rows]
        decoder.take(rows)
        ids, mask, positions = ids[rows], mask[rows], positions[rows]
        for step in range(40):
            full = model(input_ids=ids, attention_mask=mask, position_ids=positions).logits[:, -1]
            gaps.append((logits - full).abs().max().item())
            if step in (2, 20):  # rows leave the batch, one stays twice
                keep = torch.tensor([0, 2, 3, 3]) if step == 2 else torch.tensor([3, 0, 1])
                decoder.take(keep)
                ids, mask, positions = ids[keep], mask[keep], positions[keep]
            tokens = torch.randint(3, vocab, (len(ids),), generator=generator)
            ids, mask = torch.cat([ids, tokens[:, None]], 1), torch.cat([mask, torch.ones_like(mask[:, :1])], 1)
            positions = torch.cat([positions, positions[:, -1:] + 1], 1)
            logits = decoder.step(tokens, positions[:, -1:])
    return gaps


@pytest.mark.parametrize("name, decoded_by", [("tiny llama", "LlamaDecode"), ("qwen2", "LlamaDecode"),
                                              ("llama, linear rope", "LlamaDecode"),
                                              ("llama, dynamic rope", "TransformersDecode"),
                                              ("gpt2", "TransformersDecode")])
def test_decoding_steps_equal_the_full_sequence_forward(name, decoded_by):
    """Each step's logits equal one forward over the whole sequence (float32: 5e-5, the rounding
    of 40 steps on the trained tiny model, whose concatenating cache had reached 1.7e-5)."""
    from grpo_cli.sampler.decode import decoder_for

    model = _models_to_decode(name).eval()
    decoder = decoder_for(model)
    assert type(decoder).__name__ == decoded_by
    assert max(decoding_gaps(model, decoder, 86)) < 5e-5


def test_llama_decoding_follows_loaded_weights_and_draws_what_transformers_does(tokenizer, eval_prompts):
    """The fused projections are views of the model's weights: after load_weights the sampler
    draws what transformers' own forward draws with those weights, token for token."""
    from grpo_cli.sampler.decode import LlamaDecode, TransformersDecode

    fused, plain = (engine("hf")(model_path=TINY, tokenizer=tokenizer, device=torch.device("cpu"),
                                 dtype=torch.float32, batch_size=32) for _ in range(2))
    plain.decoder = TransformersDecode(plain.model)
    assert isinstance(fused.decoder, LlamaDecode)
    torch.manual_seed(3)
    moved = {k: v + 0.05 * torch.randn_like(v) for k, v in fused.model.state_dict().items()}
    batch = eval_prompts.take(list(range(6)))
    before = fused.generate(batch, params(), seeds=seeds(4, 6))
    for sampler in (fused, plain):
        sampler.load_weights(moved, version=1)
    drawn, expected = (s.generate(batch, params(), seeds=seeds(4, 6)) for s in (fused, plain))
    assert drawn.completions == expected.completions != before.completions
    assert (drawn.sampler_logprobs - expected.sampler_logprobs).abs().max().item() < 1e-4  # rounding, as above


def test_fused_projections_equal_the_separate_ones_and_follow_their_weights():
    """Layers with and without a bias, fused: the same outputs stacked, and load_state_dict
    into a layer reaches the fused weight."""
    import torch.nn.functional as F

    from grpo_cli.sampler.decode import _fuse

    torch.manual_seed(0)
    layers = [torch.nn.Linear(8, 3), torch.nn.Linear(8, 5, bias=False), torch.nn.Linear(8, 2)]
    weight, bias = _fuse(*layers)
    x = torch.randn(4, 8)
    with torch.no_grad():
        assert torch.allclose(F.linear(x, weight, bias), torch.cat([layer(x) for layer in layers], -1), atol=1e-6)
        layers[2].load_state_dict({"weight": torch.ones(2, 8), "bias": torch.full((2,), 3.0)})
        assert torch.allclose(F.linear(x, weight, bias)[:, 8:], (x.sum(-1, keepdim=True) + 3.0).expand(4, 2), atol=1e-6)
