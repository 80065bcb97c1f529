"""Models of a published architecture and size with random weights, built locally (nothing is
downloaded), for the benchmarks: scripts/bench.py on the CPU, scripts/bench_gpu.py on a GPU.

The tokenizer covers the model's whole vocabulary, so any sampled id decodes, and the
end-of-sequence id is one of 150k: completions run to the length limit, so every sampler is
timed on the same number of tokens.
"""

from __future__ import annotations

from pathlib import Path

import torch

SHAPES = {  # the published configs' sizes (config.json of each hub model)
    "qwen2.5-0.5b": dict(hidden_size=896, intermediate_size=4864, num_hidden_layers=24, num_attention_heads=14,
                         num_key_value_heads=2, vocab_size=151936, tie_word_embeddings=True),
    "qwen2.5-1.5b": dict(hidden_size=1536, intermediate_size=8960, num_hidden_layers=28, num_attention_heads=12,
                         num_key_value_heads=2, vocab_size=151936, tie_word_embeddings=True),
    "qwen2.5-7b": dict(hidden_size=3584, intermediate_size=18944, num_hidden_layers=28, num_attention_heads=28,
                       num_key_value_heads=4, vocab_size=152064, tie_word_embeddings=False),
}


def make_model(folder: Path, shape: str, dtype: torch.dtype = torch.bfloat16, device: str = "cpu") -> Path:
    """Random weights in `dtype` and a tokenizer covering every id, saved in `folder`."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import AutoModelForCausalLM, PreTrainedTokenizerFast, Qwen2Config

    dims = SHAPES[shape]
    config = Qwen2Config(**dims, max_position_embeddings=32768, rope_theta=1e6, bos_token_id=1, eos_token_id=1)
    torch.manual_seed(0)
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    model.save_pretrained(folder)
    del model
    # Byte-level like Qwen2's own (AutoTokenizer loads Qwen2's class for this model type), with
    # no merges: text becomes one token per byte, and every other id is a word of its own.
    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    vocab = {"<unk>": 0, "<eos>": 1, **{char: 2 + i for i, char in enumerate(alphabet)}}
    vocab.update({f"t{i}": i for i in range(len(vocab), dims["vocab_size"])})
    tokenizer = Tokenizer(models.BPE(vocab, [], unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    PreTrainedTokenizerFast(tokenizer_object=tokenizer, unk_token="<unk>", eos_token="<eos>",
                            pad_token="<eos>").save_pretrained(folder)
    return folder
