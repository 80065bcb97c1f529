"""Samplers: one interface (`generate`, `load_weights`, `sleep`, `wake`), two engines.

`hf` runs the transformers model with a KV cache (CPU or GPU); `vllm` is the GPU engine.
Only sampler/vllm.py may import vLLM, and only when it is selected.
"""

from __future__ import annotations

from grpo_cli.sampler.base import Sampler, SamplingParams


def _hf(**kwargs) -> Sampler:
    from grpo_cli.sampler.hf import HFSampler

    return HFSampler(**kwargs)


def _vllm(**kwargs) -> Sampler:
    from grpo_cli.sampler.vllm import VLLMSampler

    return VLLMSampler(**kwargs)


SAMPLERS = {
    "hf": _hf,
    "vllm": _vllm,
}

__all__ = ["SAMPLERS", "Sampler", "SamplingParams"]
