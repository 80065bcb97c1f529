"""The hf sampler's model calls: a prompt pass, then one token per row per step, with a KV cache.

`TransformersDecode` calls the model's own forward with transformers' DynamicCache and works
for every causal language model. For the Llama family (Llama, SmolLM2, Qwen2 and the shipped
tiny models) `LlamaDecode` runs the decoding steps itself, on the model's own modules and
weights: at one new token per row the step is made of many small operations, and
transformers' forward spends as much time around them as in them (a causal mask built on
every call, three separate query, key and value products in every layer, scaled-dot-product
attention with a boolean mask, which on the CPU takes twice as long for one query row as two
matrix products and a softmax).
Here each layer runs one product for query, key and value and one for gate and up
(the model's weights become views into one tensor each, so `load_state_dict` still writes
them in place), and attention is two products around a softmax with an additive mask. The
cache grows ROOM positions at a time and a step writes its key and value in place: growing it
by one position a token, as transformers' cache does, copies every earlier key and value on
every token (a third of the default's generation, by torch's profiler). Attention reads the
whole buffer, its unwritten positions masked out (zeros there keep the scores finite),
because matrix products over a contiguous buffer beat the same products over a slice of it
(a buffer with room for the whole completion, read through slices, was slower than
concatenation; README, Performance). The step keeps its own attention bias, each row's
positions 0 or -inf, and takes cos and sin from tables of every position the cache holds,
computed by the model's rotary embedding when the cache grows (not on every token); models
whose rotary frequencies follow the positions of each call (dynamic, longrope) decode through
transformers. The norms compute what the model's RMSNorm does, through `F.rms_norm`; the
activation, embedding and output layer are the model's own modules. In float32 its logits
equal one forward over the whole sequence within 5e-5 over 40 steps (tests/test_sampler.py),
and the embedded default draws the same tokens either way; in bfloat16 both paths round the
attention differently, each about as far from float32 as the other, so their draws part. With
the shared prompt pass below, the default's generation takes a quarter less time on one
thread than transformers' forward over every row took (README, Performance).

Both share the prompt pass across a group: the n completions of a prompt start from the
same prompt, so the prompt runs once and its cache is copied to the n rows (vLLM's prefix
caching does the same; Kwon et al. 2023, arXiv 2309.06180).

Only this module knows the layout of a transformers Llama model (the module names in
`LlamaDecode`); a model it does not know decodes through `TransformersDecode`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from transformers import DynamicCache

from grpo_cli.model_source import CACHE_KEYWORD

# model_type -> whether LlamaDecode runs this configuration (its layers are Llama's: RMS norms,
# rotary attention without a sliding window, a gated MLP).
LLAMA_FAMILY = {
    "llama": lambda config: True,
    "qwen2": lambda config: not getattr(config, "use_sliding_window", False),
}

# Rotary embeddings whose frequencies transformers recomputes from the positions of each call:
# LlamaDecode's tables of cos and sin, computed once for all positions, would not match.
POSITION_DEPENDENT_ROPE = ("dynamic", "longrope")


class TransformersDecode:
    """The model's own forward over a DynamicCache."""

    def __init__(self, model):
        self.model = model
        self.cache = DynamicCache()
        self.mask = torch.ones(0, 0, dtype=torch.long)  # [b, t]: which cached positions each row attends to

    def prompt_pass(self, ids: torch.Tensor, mask: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """A fresh cache holding the prompts ([u, P] ids, mask, positions): [u, V] last-position logits."""
        self.cache = DynamicCache()
        out = self.model(input_ids=ids, attention_mask=mask, position_ids=positions,
                         use_cache=True, logits_to_keep=1, **{CACHE_KEYWORD: self.cache})
        return out.logits[:, -1]

    def prefill(self, ids: torch.Tensor, mask: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """The prompt pass; the rows attend where `mask` is 1."""
        self.mask = mask
        return self.prompt_pass(ids, mask, positions)

    def take(self, index: torch.Tensor) -> None:
        """Keep (or repeat) the cache's rows `index` ([b'] row numbers)."""
        self.cache.batch_select_indices(index)
        self.mask = self.mask[index]

    def step(self, tokens: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """One token per row ([b] tokens at [b, 1] positions), attending to everything cached
        and to itself -> [b, V] logits."""
        self.mask = torch.cat([self.mask, self.mask.new_ones(len(tokens), 1)], 1)
        out = self.model(input_ids=tokens[:, None], attention_mask=self.mask, position_ids=positions,
                         use_cache=True, **{CACHE_KEYWORD: self.cache})
        return out.logits[:, -1]


class LlamaDecode(TransformersDecode):
    """transformers' prompt pass; the decoding steps run here (module docstring)."""

    ROOM = 16  # positions the cache grows by at once: 8 and 32 were slower on the default

    def __init__(self, model):
        super().__init__(model)
        self.length = 0  # positions written in every layer's cache
        self.bias = torch.zeros(0, 0)  # [b, capacity]: 0 where a row attends, -inf elsewhere
        self.cos = self.sin = torch.zeros(0, 0)  # [capacity, d]: _rotary_tables
        config = model.config
        self.heads = config.num_attention_heads
        self.kv_heads = config.num_key_value_heads
        self.head_dim = getattr(config, "head_dim", None) or config.hidden_size // self.heads
        with torch.no_grad():
            for layer in model.model.layers:
                attention, mlp = layer.self_attn, layer.mlp
                attention.qkv_weight, attention.qkv_bias = _fuse(attention.q_proj, attention.k_proj, attention.v_proj)
                mlp.gate_up_weight, mlp.gate_up_bias = _fuse(mlp.gate_proj, mlp.up_proj)

    def prefill(self, ids: torch.Tensor, mask: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        logits = self.prompt_pass(ids, mask, positions)
        self.length = ids.shape[1]
        dtype = self.model.model.embed_tokens.weight.dtype
        self.bias = torch.zeros(mask.shape, dtype=dtype, device=mask.device).masked_fill_(mask == 0, float("-inf"))
        return logits  # the cache is full: the first step grows it, and the rotary tables with it

    def take(self, index: torch.Tensor) -> None:
        self.cache.batch_select_indices(index)
        self.bias = self.bias[index]

    def step(self, tokens: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        inner = self.model.model
        if self.length == self.bias.shape[1]:
            self._grow()
        x = inner.embed_tokens(tokens)  # [b, H]
        cos, sin = (table.index_select(0, positions.view(-1))[:, None] for table in (self.cos, self.sin))  # [b, 1, d]
        self.bias[:, self.length] = 0.0  # the step's own position
        bias = self.bias[:, None, None, :]  # [b, 1, 1, capacity]: every head, the one query
        for index, layer in enumerate(inner.layers):
            x = x + self._attention(layer.self_attn, _rms_norm(layer.input_layernorm, x), cos, sin, bias, index)
            x = x + self._mlp(layer.mlp, _rms_norm(layer.post_attention_layernorm, x))
        self.length += 1
        return self.model.lm_head(_rms_norm(inner.norm, x))

    def _grow(self) -> None:
        """ROOM more positions: zeros in every layer's keys and values ([b, kv_heads, t, d]),
        masked out in the bias until a step writes them."""
        for layer in self.cache.layers:
            b, kv_heads, _, d = layer.keys.shape
            zeros = layer.keys.new_zeros(b, kv_heads, self.ROOM, d)
            layer.keys, layer.values = torch.cat([layer.keys, zeros], 2), torch.cat([layer.values, zeros], 2)
        self.bias = F.pad(self.bias, (0, self.ROOM), value=float("-inf"))
        self._rotary_tables(self.bias.shape[1])

    def _rotary_tables(self, positions: int) -> None:
        """cos and sin of positions 0..positions-1 ([positions, d] each), from the model's own
        rotary embedding; sin's first half negated, so that rotate_half(x) * sin is
        x.roll(d / 2) * self.sin (the roll swaps the halves, the sign is in the table)."""
        rotary = self.model.model.rotary_emb
        weight = self.model.model.embed_tokens.weight  # the rotary module reads only its device and dtype
        like = torch.empty(0, dtype=weight.dtype, device=weight.device)
        cos, sin = rotary(like, torch.arange(positions, device=weight.device)[None])
        half = self.head_dim // 2
        self.cos, self.sin = cos[0], torch.cat([-sin[0, :, :half], sin[0, :, half:]], -1)

    def _attention(self, attention, x, cos, sin, bias, index):
        """[b, H] normalised states -> [b, H] attention output; the step's key and value go into
        the layer's cache at position `length`."""
        b, heads, kv_heads, d = len(x), self.heads, self.kv_heads, self.head_dim
        qkv = F.linear(x, attention.qkv_weight, attention.qkv_bias).view(b, heads + 2 * kv_heads, d)
        qk = qkv[:, :heads + kv_heads]
        qk = qk * cos + qk.roll(d // 2, -1) * sin  # rotary, as rotate_half (_rotary_tables)
        layer = self.cache.layers[index]  # keys, values: [b, kv_heads, capacity, d]
        layer.keys[:, :, self.length] = qk[:, heads:]
        layer.values[:, :, self.length] = qkv[:, heads + kv_heads:]
        # Query heads grouped by the key-value head they read (transformers' repeat_kv order).
        query = qk[:, :heads].reshape(b, kv_heads, heads // kv_heads, d)
        scores = torch.matmul(query, layer.keys.transpose(-1, -2)) * attention.scaling + bias
        weights = scores.softmax(-1, dtype=torch.float32).to(layer.values.dtype)  # as transformers' eager attention
        out = torch.matmul(weights, layer.values)  # [b, kv_heads, group, d]
        return attention.o_proj(out.reshape(b, heads * d))

    @staticmethod
    def _mlp(mlp, x):
        gate, up = F.linear(x, mlp.gate_up_weight, mlp.gate_up_bias).chunk(2, -1)
        return mlp.down_proj(mlp.act_fn(gate) * up)


def _rms_norm(norm, x: torch.Tensor) -> torch.Tensor:
    """The model's RMSNorm module applied as it computes it (normalised in float32, cast back,
    then scaled by its weight), in two calls instead of its eight operations."""
    return norm.weight * F.rms_norm(x, x.shape[-1:], eps=norm.variance_epsilon)


def _fuse(*linears) -> tuple[torch.Tensor, torch.Tensor | None]:
    """One weight (and bias) for several linear layers over the same input, their outputs
    stacked; each layer's own parameter becomes a view into it, so an in-place copy into
    the layer (load_state_dict) updates the fused one. A layer without a bias contributes
    zeros (Qwen2 and biased Llamas have one on all or none)."""
    fused = []
    for name in ("weight", "bias"):
        parts = [getattr(linear, name) for linear in linears]
        if all(p is None for p in parts):
            fused.append(None)
            continue
        whole = torch.cat([p.data if p is not None else linear.weight.new_zeros(linear.out_features)
                           for p, linear in zip(parts, linears)])
        start = 0
        for p, linear in zip(parts, linears):
            if p is not None:
                p.data = whole[start:start + linear.out_features]
            start += linear.out_features
        fused.append(whole)
    return fused[0], fused[1]


def decoder_for(model) -> TransformersDecode:
    """LlamaDecode where the model's configuration is one it runs, else TransformersDecode."""
    runs = LLAMA_FAMILY.get(model.config.model_type)
    if runs is None or not runs(model.config):
        return TransformersDecode(model)
    rope = getattr(model.model.rotary_emb, "rope_type", "default")
    return TransformersDecode(model) if rope in POSITION_DEPENDENT_ROPE else LlamaDecode(model)
