"""transformers sampler: batched ancestral sampling with the model's KV cache.

We run our own decoding loop rather than `model.generate` so that the log-prob of every drawn
token is recorded exactly as the learner recomputes it (fp32 log_softmax of logits / T over the
full vocabulary, docs/algorithms.md §1.2) when top-p and top-k are off, the random stream is
ours to seed (a resumed run draws the same completions), and positions follow the attention
mask of left-padded prompts the same way in sampling and in training. Every completion draws
from its own generator, seeded by its prompt's seed and its sample index, so what a prompt gets
does not depend on which other prompts share its batch or its rank (the distributed run draws
what a single process does, as vLLM's per-request seeds do). With top-p < 1 or top-k > 0 the
draw is from the truncated distribution, and the recorded log-prob is that distribution's, as
vLLM's processed log-probs are: the sampler reports the policy that drew the token, so the
TIS/MIS weight against the learner's full-softmax ℓ sees the truncation. Finished rows leave
the batch as they accumulate, so the steps after most completions ended cost what the
unfinished rows cost.
The model calls themselves (one prompt pass per group, then a token per row, and for Llama-family
models decoding steps of our own) are sampler/decode.py's.
"""

from __future__ import annotations

import torch

from grpo_cli.model_source import load_causal_lm
from grpo_cli.sampler.base import SamplingParams
from grpo_cli.sampler.decode import decoder_for
from grpo_cli.types import PromptBatch, Rollouts, left_pad


def filter_logits(scaled: torch.Tensor, top_k: int, top_p: float) -> torch.Tensor:
    """Set logits outside the top-k / nucleus to -inf ([B, V] -> [B, V])."""
    if top_k > 0 and top_k < scaled.shape[-1]:
        kth = torch.topk(scaled, top_k, dim=-1).values[:, -1:]
        scaled = scaled.masked_fill(scaled < kth, float("-inf"))
    if top_p < 1.0:
        sorted_logits, order = torch.sort(scaled, descending=True, dim=-1)
        cumulative = sorted_logits.softmax(-1).cumsum(-1)
        drop_sorted = cumulative - sorted_logits.softmax(-1) > top_p  # keeps the token crossing p
        drop = drop_sorted.scatter(-1, order, drop_sorted)
        scaled = scaled.masked_fill(drop, float("-inf"))
    return scaled


def inverse_cdf(probs: torch.Tensor, uniform: torch.Tensor) -> torch.Tensor:
    """One token per row ([B, V], [B] in [0, 1) -> [B]): the first whose cumulative
    probability exceeds u. Summed in float64 so a 150k vocabulary's tail keeps its mass."""
    cumulative = probs.double().cumsum(-1)
    target = uniform.double()[:, None] * cumulative[:, -1:]
    return torch.searchsorted(cumulative, target, right=True).squeeze(-1).clamp(max=probs.shape[-1] - 1)


class RowNoise:
    """The uniforms of one completion, drawn in blocks from a generator of its own."""

    BLOCK = 64

    def __init__(self, prompt_seed: int, sample: int):
        self.generator = torch.Generator().manual_seed(hash((prompt_seed, sample)) % 2**63)

    def next_block(self) -> torch.Tensor:
        """The uniforms of the next BLOCK tokens ([BLOCK] float64)."""
        return torch.rand(self.BLOCK, generator=self.generator, dtype=torch.float64)


class HFSampler:
    """Holds its own copy of the policy weights; `load_weights` overwrites them in place."""

    @classmethod
    def check_available(cls, device: torch.device) -> None:
        """transformers runs wherever torch does."""

    def __init__(self, model_path: str, tokenizer, device: torch.device, dtype: torch.dtype,
                 batch_size: int, trust_remote_code: bool = False, **_):
        self.model = load_causal_lm(model_path, dtype, device, trust_remote_code).eval()
        self.decoder = decoder_for(self.model)
        self.device = device
        self.batch_size = batch_size
        self.pad_id = tokenizer.pad_token_id
        self.eos_ids = set(_eos_ids(tokenizer, self.model))
        self.tokenizer = tokenizer
        self.version = 0

    def load_weights(self, named_tensors: dict[str, torch.Tensor], version: int) -> None:
        self.model.load_state_dict(named_tensors, strict=True)  # copies into the existing tensors
        self.version = version

    def sleep(self) -> None:
        """Nothing to release: the hf engine allocates its cache per call."""

    def wake(self) -> None:
        """Nothing to take back."""

    def close(self) -> None:
        """Nothing outlives the object."""

    def generate(self, batch: PromptBatch, params: SamplingParams, seeds: list[int]) -> Rollouts:
        if len(seeds) != len(batch):
            raise ValueError(f"{len(seeds)} seeds for {len(batch)} prompts: the sampler takes one seed per prompt")
        rows = [ids for ids in batch.prompt_ids for _ in range(params.n)]
        noise = [RowNoise(seed, j) for seed in seeds for j in range(params.n)]
        group_ids = torch.arange(len(batch)).repeat_interleave(params.n)
        # Inference mode skips autograd's bookkeeping on each of the loop's small operations (the
        # generation 6% faster than under no_grad on one thread). Its tensors cannot enter the
        # learner's graph, so the rollouts are assembled outside it, from copies.
        with torch.inference_mode():
            chunks = [self._decode(rows[i:i + self.batch_size], params, noise[i:i + self.batch_size])
                      for i in range(0, len(rows), self.batch_size)]
        return self._assemble(chunks, rows, group_ids)

    def _decode(self, rows: list[list[int]], params: SamplingParams, noise: list["RowNoise"]):
        """Sample up to max_new_tokens per row: [b, c] tokens and log-probs, [b] lengths and finished.
        A run of equal prompts (a group's n rows) passes through the model once. Rows that
        finished leave the batch (and the KV cache) once they are an eighth of it: each row's
        computation and draws are its own, so the others' results do not change."""
        first = [i == 0 or rows[i] != rows[i - 1] for i in range(len(rows))]
        copies = (torch.tensor(first).cumsum(0) - 1).to(self.device)  # [b]: each row's prompt pass
        ids, mask = left_pad([row for row, new in zip(rows, first) if new], self.pad_id)
        ids, mask = ids.to(self.device), mask.to(self.device)
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        shared = self.decoder.prefill(ids, mask, positions)
        self.decoder.take(copies)
        logits, next_position = shared[copies], positions[copies, -1:] + 1
        finished = torch.zeros(len(rows), dtype=torch.bool, device=self.device)
        lengths = torch.zeros(len(rows), dtype=torch.long, device=self.device)
        tokens = torch.full((len(rows), params.max_new_tokens), self.pad_id, dtype=torch.long, device=self.device)
        logprobs = torch.zeros(len(rows), params.max_new_tokens, device=self.device)
        # The rows still in the batch, in its order, and their state: the loop's work stays on
        # them, and the whole batch's tensors are written where a row leaves.
        alive = torch.arange(len(rows), device=self.device)
        done, alive_lengths = finished.clone(), lengths.clone()
        eos = torch.tensor(sorted(self.eos_ids), device=self.device)
        for t in range(params.max_new_tokens):
            drawn_from = filter_logits(logits.float() / params.temperature, params.top_k, params.top_p)
            probs = drawn_from.softmax(-1)
            if t % RowNoise.BLOCK == 0:
                uniforms = torch.stack([noise[row].next_block() for row in alive.tolist()]).to(self.device)
            drawn = torch.where(done, self.pad_id, inverse_cdf(probs, uniforms[:, t % RowNoise.BLOCK]))
            logprob = drawn_from.log_softmax(-1).gather(-1, drawn[:, None]).squeeze(-1)
            tokens[alive, t] = drawn
            logprobs[alive, t] = logprob.masked_fill_(done, 0.0)
            alive_lengths += ~done
            done = done | torch.isin(drawn, eos)
            ended = int(done.sum())
            if ended == len(alive):
                break
            if ended * 8 >= len(alive):
                finished[alive], lengths[alive] = done, alive_lengths
                keep = (~done).nonzero().squeeze(-1)
                alive, next_position, drawn = alive[keep], next_position[keep], drawn[keep]
                done, alive_lengths, uniforms = done[keep], alive_lengths[keep], uniforms[keep]
                self.decoder.take(keep)
            logits = self.decoder.step(drawn, next_position)
            next_position = next_position + 1
        finished[alive], lengths[alive] = done, alive_lengths
        steps = t + 1
        return tokens[:, :steps].cpu(), logprobs[:, :steps].cpu(), lengths.cpu(), finished.cpu()

    def _assemble(self, chunks, rows, group_ids) -> Rollouts:
        width = max(c[0].shape[1] for c in chunks)
        pad = lambda t, value: torch.nn.functional.pad(t, (0, width - t.shape[1]), value=value)  # noqa: E731
        completion_ids = torch.cat([pad(c[0], self.pad_id) for c in chunks])
        lengths = torch.cat([c[2] for c in chunks])
        completion_mask = (torch.arange(width)[None, :] < lengths[:, None]).long()
        prompt_ids, prompt_mask = left_pad(rows, self.pad_id)
        texts = self.tokenizer.batch_decode(
            [ids[:n] for ids, n in zip(completion_ids.tolist(), lengths.tolist())], skip_special_tokens=True)
        return Rollouts(
            prompt_ids=prompt_ids, prompt_mask=prompt_mask, completion_ids=completion_ids,
            completion_mask=completion_mask, sampler_logprobs=torch.cat([pad(c[1], 0.0) for c in chunks]),
            truncated=~torch.cat([c[3] for c in chunks]), group_ids=group_ids, completions=texts,
            policy_version=torch.full((len(rows),), self.version),
        )


def _eos_ids(tokenizer, model) -> list[int]:
    configured = model.generation_config.eos_token_id if model.generation_config is not None else None
    ids = list(configured) if isinstance(configured, list) else [configured] if configured is not None else []
    if tokenizer.eos_token_id is not None:
        ids.append(tokenizer.eos_token_id)
    if not ids:
        raise ValueError("the tokenizer and the model's generation config define no EOS token")
    return sorted(set(ids))
