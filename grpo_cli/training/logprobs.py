"""Per-token log-probs of completion tokens at the sampling temperature (docs/algorithms.md §1.2).

Whole: the model's own forward keeps the logits of the completion positions only
(`logits_to_keep`), [b, C, V] in fp32 at once. Chunked (`trainer.logprob_chunk` = positions per
chunk): the decoder's hidden states go through the output layer a slice of positions at a
time under activation checkpointing, so neither the forward nor the backward ever holds
more than [b, chunk, V] fp32 logits; with a 150k vocabulary and long completions that is the
difference between fitting and not (verl and prime-rl chunk the same way). Gemma-style final
logit soft-capping is applied; a model that changes its logits in other ways needs chunk=0.

Shared prompts (`trainer.share_prompts`): the K completions of a group repeat one prompt, so
the prompt's keys and values are computed once per distinct prompt of the micro-batch and
read by every completion of it through the KV cache, as PrefixGrouper does for verl
(arXiv 2506.05433). Gradients of the shared keys and values add up over the rows that read
them, which is what the per-row computation gives, up to float rounding.
"""

from __future__ import annotations

import torch
from torch.utils.checkpoint import checkpoint

from grpo_cli.types import TrainBatch


def _positions(batch: TrainBatch) -> torch.Tensor:
    return (batch.attention_mask.cumsum(-1) - 1).clamp(min=0)


def _from_logits(logits: torch.Tensor, targets: torch.Tensor, temperature: float, softcap: float | None):
    """[b, c, V] logits -> ([b, c] log-probs of targets, [b, c] entropy, detached)."""
    logits = logits.float()
    if softcap:
        logits = softcap * torch.tanh(logits / softcap)
    logp = (logits / temperature).log_softmax(-1)
    with torch.no_grad():
        entropy = -(logp.exp() * logp).sum(-1)
    return logp.gather(-1, targets[..., None]).squeeze(-1), entropy


def _chunked(model, hidden: torch.Tensor, targets: torch.Tensor, temperature: float, chunk: int):
    """hidden [b, C, H] (the position before each completion token) -> ([b, C], [b, C])."""
    softcap = getattr(model.config, "final_logit_softcapping", None)
    head = model.get_output_embeddings()
    pieces = [checkpoint(lambda h, t: _from_logits(head(h), t, temperature, softcap),
                         hidden[:, s:s + chunk], targets[:, s:s + chunk], use_reentrant=False)
              for s in range(0, targets.shape[1], chunk)]
    return torch.cat([p[0] for p in pieces], 1), torch.cat([p[1] for p in pieces], 1)


def distinct_prompts(batch: TrainBatch) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Each distinct prompt once: its ids and mask, [U, P] each, and each row's index into
    them, [b]. Rows are the same prompt when ids and mask both agree."""
    prompt_width = batch.input_ids.shape[1] - batch.completion_width
    key = torch.cat([batch.input_ids[:, :prompt_width], batch.attention_mask[:, :prompt_width]], 1)
    unique, inverse = torch.unique(key, dim=0, return_inverse=True)
    return unique[:, :prompt_width], unique[:, prompt_width:], inverse


def _shared_prompt(model, batch: TrainBatch, temperature: float, chunk: int):
    """Each distinct prompt once, its keys and values then read by every row that repeats it."""
    width = batch.completion_width
    prompt_width = batch.input_ids.shape[1] - width
    targets = batch.input_ids[:, -width:]
    prompt_ids, prompt_mask, inverse = distinct_prompts(batch)
    run = model if chunk <= 0 else model.get_decoder()
    keep = (lambda n: {"logits_to_keep": n}) if chunk <= 0 else (lambda n: {})
    prompt = run(input_ids=prompt_ids, attention_mask=prompt_mask, position_ids=(prompt_mask.cumsum(-1) - 1).clamp(min=0),
                 use_cache=True, **keep(1))
    cache = prompt.past_key_values
    cache.batch_select_indices(inverse)  # the rows' view of the shared keys and values
    rest = run(input_ids=batch.input_ids[:, prompt_width:], attention_mask=batch.attention_mask,
               position_ids=_positions(batch)[:, prompt_width:], past_key_values=cache, use_cache=True, **keep(width))
    if chunk <= 0:
        logits = torch.cat([prompt.logits[inverse, -1:], rest.logits[:, :-1]], 1)
        return _from_logits(logits, targets, temperature, None)
    hidden = torch.cat([prompt.last_hidden_state[inverse, -1:], rest.last_hidden_state[:, :-1]], 1)
    return _chunked(model, hidden, targets, temperature, chunk)


def sequence_logprobs(model, batch: TrainBatch, temperature: float, with_entropy: bool = False, chunk: int = 0,
                      share_prompts: bool = False):
    """Log-probs of the completion tokens, [b, C] fp32 (and the entropy [b, C], else None)."""
    width = batch.completion_width
    targets = batch.input_ids[:, -width:]
    if share_prompts:
        logprobs, entropy = _shared_prompt(model, batch, temperature, chunk)
    elif chunk <= 0:
        out = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask,
                    position_ids=_positions(batch), logits_to_keep=width + 1, use_cache=False)
        logprobs, entropy = _from_logits(out.logits[:, :-1], targets, temperature, None)
    else:
        hidden = model.get_decoder()(input_ids=batch.input_ids, attention_mask=batch.attention_mask,
                                     position_ids=_positions(batch), use_cache=False).last_hidden_state
        logprobs, entropy = _chunked(model, hidden[:, -(width + 1):-1], targets, temperature, chunk)
    return logprobs, entropy if with_entropy else None
