"""Chunked log-probs (output layer a slice of positions at a time, checkpointed) equal the
whole computation in value, entropy and gradient, on the shipped model and real padding."""

import pytest
import torch
from transformers import AutoModelForCausalLM

from grpo_cli.training.logprobs import sequence_logprobs
from grpo_cli.types import TrainBatch

from conftest import TINY


def batch_of(tokenizer) -> TrainBatch:
    prompts = [tokenizer("3+4+12=")["input_ids"], tokenizer("5+1=")["input_ids"]]
    completions = [tokenizer("3+4=7\n7+12=19\nAnswer: 19")["input_ids"], tokenizer("Answer: 6")["input_ids"]]
    p_width, c_width = max(map(len, prompts)), max(map(len, completions))
    pad = tokenizer.pad_token_id
    ids = torch.tensor([[pad] * (p_width - len(p)) + p + c + [pad] * (c_width - len(c))
                        for p, c in zip(prompts, completions)])
    mask = torch.tensor([[0] * (p_width - len(p)) + [1] * (len(p) + len(c)) + [0] * (c_width - len(c))
                         for p, c in zip(prompts, completions)])
    loss_mask = torch.tensor([[1.0] * len(c) + [0.0] * (c_width - len(c)) for c in completions])
    return TrainBatch(input_ids=ids, attention_mask=mask, loss_mask=loss_mask,
                      advantages=torch.zeros_like(loss_mask), sampler_logprobs=torch.zeros_like(loss_mask))


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
