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

from grpo_cli.model_source import CACHE_KEYWORD
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


def _before_completion(model, batch: TrainBatch, whole: bool, share_prompts: bool) -> torch.Tensor:
    """What scores each completion token, from the position before it: the logits [b, C, V]
    (whole: the model's own output layer) or the decoder's hidden states [b, C, H] (for the
    chunked output layer). With share_prompts each distinct prompt runs once and every row
    that repeats it reads its keys and values through the KV cache."""
    width = batch.completion_width
    run = model if whole else model.get_decoder()
    scores = (lambda out: out.logits) if whole else (lambda out: out.last_hidden_state)
    keep = (lambda n: {"logits_to_keep": n}) if whole else (lambda n: {})  # the decoder has no output layer
    if not share_prompts:
        out = run(input_ids=batch.input_ids, attention_mask=batch.attention_mask, position_ids=_positions(batch),
                  use_cache=False, **keep(width + 1))
        return scores(out)[:, -(width + 1):-1]
    prompt_width = batch.input_ids.shape[1] - width
    prompt_ids, prompt_mask, inverse = distinct_prompts(batch)
    prompt = run(input_ids=prompt_ids, attention_mask=prompt_mask, position_ids=(prompt_mask.cumsum(-1) - 1).clamp(min=0),
                 use_cache=True, **keep(1))
    cache = getattr(prompt, CACHE_KEYWORD)
    # The rows' view of the shared keys and values. Not cache.batch_select_indices: indexing's
    # backward adds rows with atomics across CPU threads, so the gradient's last bits would
    # change from process to process; index_select's backward adds them in order.
    for layer in cache.layers:
        layer.keys, layer.values = layer.keys.index_select(0, inverse), layer.values.index_select(0, inverse)
    rest = run(input_ids=batch.input_ids[:, prompt_width:], attention_mask=batch.attention_mask,
               position_ids=_positions(batch)[:, prompt_width:], use_cache=True, **{CACHE_KEYWORD: cache},
               **keep(width))
    return torch.cat([scores(prompt)[:, -1:].index_select(0, inverse), scores(rest)[:, :-1]], 1)


def sequence_logprobs(model, batch: TrainBatch, temperature: float, with_entropy: bool = False, chunk: int = 0,
                      share_prompts: bool = False):
    """Log-probs of the completion tokens, [b, C] fp32 (and the entropy [b, C], else None)."""
    targets = batch.input_ids[:, -batch.completion_width:]
    scores = _before_completion(model, batch, chunk <= 0, share_prompts)
    if chunk <= 0:
        logprobs, entropy = _from_logits(scores, targets, temperature, None)
    else:
        logprobs, entropy = _chunked(model, scores, targets, temperature, chunk)
    return logprobs, entropy if with_entropy else None
