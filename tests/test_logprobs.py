"""Chunked log-probs (output layer a slice of positions at a time, checkpointed) and shared
prompts (each distinct prompt computed once) equal the whole computation in value, entropy and
gradient, on the shipped model and real padding."""

import subprocess
import sys
from dataclasses import fields
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM

from grpo_cli.sampler import SamplingParams, engine
from grpo_cli.training.logprobs import distinct_prompts, sequence_logprobs
from grpo_cli.types import BatchLogprobs, Sequences, TrainBatch

from conftest import TINY, seeds


def padded_batch(pad: int, prompt_ids: list[list[int]], completion_ids: list[list[int]]) -> TrainBatch:
    """Prompts left-padded, completions right-padded, as the learner gets them."""
    p_width, c_width = max(map(len, prompt_ids)), max(map(len, completion_ids))
    ids = torch.tensor([[pad] * (p_width - len(p)) + p + c + [pad] * (c_width - len(c))
                        for p, c in zip(prompt_ids, completion_ids)])
    mask = torch.tensor([[0] * (p_width - len(p)) + [1] * (len(p) + len(c)) + [0] * (c_width - len(c))
                         for p, c in zip(prompt_ids, completion_ids)])
    loss_mask = torch.tensor([[1.0] * len(c) + [0.0] * (c_width - len(c)) for c in completion_ids])
    return TrainBatch(input_ids=ids, attention_mask=mask, loss_mask=loss_mask,
                      advantages=torch.zeros_like(loss_mask), sampler_logprobs=torch.zeros_like(loss_mask))


def batch_of(tokenizer) -> TrainBatch:
    prompts = [tokenizer("3+4+12=")["input_ids"], tokenizer("5+1=")["input_ids"]]
    completions = [tokenizer("3+4=7\n7+12=19\nAnswer: 19")["input_ids"], tokenizer("Answer: 6")["input_ids"]]
    return padded_batch(tokenizer.pad_token_id, prompts, completions)


@pytest.mark.parametrize("chunk, temperature", [(1, 1.0), (4, 0.7), (1000, 1.0)])
def test_chunked_equals_whole(tokenizer, chunk, temperature):
    batch = batch_of(tokenizer)
    results = []
    for size in (0, chunk):
        model = AutoModelForCausalLM.from_pretrained(TINY)
        logprobs, entropy = sequence_logprobs(model, batch, temperature, with_entropy=True, chunk=size)
        (logprobs * batch.loss_mask).sum().backward()
        grads = torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])
        results.append((logprobs.detach() * batch.loss_mask, entropy * batch.loss_mask, grads))
    (whole, whole_entropy, whole_grad), (chunked, chunked_entropy, chunked_grad) = results
    assert torch.allclose(chunked, whole, atol=1e-5)
    assert torch.allclose(chunked_entropy, whole_entropy, atol=1e-5)
    # Summed chunk by chunk instead of in one matmul: equal up to float32 rounding.
    assert whole_grad.norm() > 0
    assert (chunked_grad - whole_grad).norm() / whole_grad.norm() < 1e-6


def grouped_batch(tokenizer) -> TrainBatch:
    """Two prompts of different lengths (left padding), each repeated with completions of
    different lengths (right padding), rows interleaved as a shuffled mini-batch has them."""
    prompts = ["3+4+12=", "5+1=", "3+4+12=", "5+1=", "5+1="]
    completions = ["3+4=7\n7+12=19\nAnswer: 19", "Answer: 6", "Answer: 19", "1+5=6\nAnswer: 6", "Answer: 7"]
    return padded_batch(tokenizer.pad_token_id, [tokenizer(p)["input_ids"] for p in prompts],
                        [tokenizer(c)["input_ids"] for c in completions])


def logprobs_and_gradient(model, batch: TrainBatch, **kwargs):
    logprobs, entropy = sequence_logprobs(model, batch, 0.7, with_entropy=True, **kwargs)
    weights = torch.arange(1, len(batch) + 1)[:, None]  # rows of one prompt weigh differently
    (logprobs * batch.loss_mask * weights).sum().backward()
    grads = torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])
    return logprobs.detach() * batch.loss_mask, entropy * batch.loss_mask, grads


def test_distinct_prompts_map_every_row_to_its_own(tokenizer):
    batch = grouped_batch(tokenizer)
    prompt_ids, prompt_mask, inverse = distinct_prompts(batch)
    width = prompt_ids.shape[1]
    assert len(prompt_ids) == 2
    assert torch.equal(prompt_ids[inverse], batch.input_ids[:, :width])
    assert torch.equal(prompt_mask[inverse], batch.attention_mask[:, :width])


@pytest.mark.parametrize("chunk", [0, 4])
def test_shared_prompts_equal_the_whole_computation(tokenizer, chunk):
    """Each distinct prompt computed once: log-probs, entropy and gradient as every row computing
    its own. In float64 the log-probs are equal and the gradient within 1e-6 (the log-softmax
    runs in float32 either way, and the shared rows' float32 gradients are summed before the
    cast); in float32 the attention rounds differently, by up to 4.3e-5 on this batch's
    log-probs (1.6e-5 relative)."""
    batch = grouped_batch(tokenizer)
    for dtype, atol, grad_rtol in ((torch.float64, 1e-12, 1e-6), (torch.float32, 1e-4, 1e-4)):
        whole = logprobs_and_gradient(AutoModelForCausalLM.from_pretrained(TINY, dtype=dtype), batch, chunk=chunk)
        shared = logprobs_and_gradient(AutoModelForCausalLM.from_pretrained(TINY, dtype=dtype), batch, chunk=chunk,
                                       share_prompts=True)
        assert torch.allclose(shared[0], whole[0], rtol=1e-5, atol=atol), dtype
        assert torch.allclose(shared[1], whole[1], rtol=1e-5, atol=atol), dtype
        assert whole[2].norm() > 0
        assert (shared[2] - whole[2]).norm() / whole[2].norm() < grad_rtol, dtype


REPLAY = """
import hashlib, sys, torch
sys.path.insert(0, {tests!r})
from conftest import rl_learner
from grpo_cli.algorithms.rl_loss import RLLoss
from grpo_cli.compose import compose, to_object
from grpo_cli.types import TrainBatch
torch.set_num_threads(2)
cfg = to_object(compose(["trainer.share_prompts=true"]))
learner = rl_learner(cfg)
learner.update(TrainBatch(**torch.load({batch!r})), 1, RLLoss.of(cfg))
print(hashlib.sha256(torch.cat([p.detach().flatten() for p in learner.model.parameters()]).numpy()).hexdigest())
"""


def test_shared_prompt_update_repeats_bit_for_bit_across_processes(tokenizer, eval_prompts, tmp_path):
    """The rows of a shared prompt add their gradients in a fixed order: two processes make the
    same update to the last bit. (Indexing's backward adds with atomics over threads, so the
    order, and the last bits, changed from process to process.)"""
    sampler = engine("hf")(model_path=TINY, tokenizer=tokenizer, device=torch.device("cpu"), dtype=torch.float32,
                           batch_size=128)
    rollouts = sampler.generate(eval_prompts.take(list(range(16))), SamplingParams(8, 1.0, 1.0, 0, 48),
                                seeds=seeds(7, 16))
    sequences = Sequences.from_rollouts(rollouts)
    advantages = torch.randn(sequences.loss_mask.shape, generator=torch.Generator().manual_seed(0))
    batch = TrainBatch.assemble(sequences, advantages * sequences.loss_mask, BatchLogprobs(None, None))
    torch.save({f.name: getattr(batch, f.name) for f in fields(batch)}, tmp_path / "batch.pt")
    script = REPLAY.format(tests=str(Path(__file__).parent), batch=str(tmp_path / "batch.pt"))
    digests = {subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
               .stdout.strip() for _ in range(2)}
    assert len(digests) == 1, digests
