"""Per-token log-probs of completion tokens at the sampling temperature (docs/algorithms.md §1.2).

Whole: the model's own forward keeps the logits of the completion positions only
(`logits_to_keep`), [b, C, V] in fp32 at once. Chunked (`trainer.logprob_chunk` = positions per
chunk): the decoder's hidden states go through the output layer a slice of positions at a
time under activation checkpointing, so neither the forward nor the backward ever holds
more than [b, chunk, V] fp32 logits; with a 150k vocabulary and long completions that is the
difference between fitting and not (verl and prime-rl chunk the same way). Gemma-style final
logit soft-capping is applied; a model that changes its logits in other ways needs chunk=0.
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


def sequence_logprobs(model, batch: TrainBatch, temperature: float, with_entropy: bool = False, chunk: int = 0):
    """Log-probs of the completion tokens, [b, C] fp32 (and the entropy [b, C], else None)."""
    width = batch.completion_width
    targets = batch.input_ids[:, -width:]
    softcap = getattr(model.config, "final_logit_softcapping", None)
    if chunk <= 0:
        out = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask,
                    position_ids=_positions(batch), logits_to_keep=width + 1, use_cache=False)
        logprobs, entropy = _from_logits(out.logits[:, :-1], targets, temperature, None)
        return logprobs, entropy if with_entropy else None
    hidden = model.get_decoder()(input_ids=batch.input_ids, attention_mask=batch.attention_mask,
                                 position_ids=_positions(batch), use_cache=False).last_hidden_state
    hidden = hidden[:, -(width + 1):-1]  # the position before each completion token predicts it
    head = model.get_output_embeddings()
    pieces = [checkpoint(lambda h, t: _from_logits(head(h), t, temperature, softcap),
                         hidden[:, s:s + chunk], targets[:, s:s + chunk], use_reentrant=False)
              for s in range(0, width, chunk)]
    logprobs = torch.cat([p[0] for p in pieces], 1)
    return logprobs, torch.cat([p[1] for p in pieces], 1) if with_entropy else None
