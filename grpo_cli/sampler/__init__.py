"""Samplers: one interface (`generate`, `load_weights`, `sleep`, `wake`, `close`), two engines.

`hf` runs the transformers model with a KV cache (CPU or GPU); `vllm` runs vLLM (its CUDA
build on a GPU, its CPU build on the CPU). Only sampler/vllm.py may import vLLM, and only when
it is selected. Every engine class has a `check_available(device)` classmethod that fails
fast, before any model loads, when the machine cannot run it.
"""

from __future__ import annotations

from importlib import import_module

from grpo_cli.sampler.base import Sampler, SamplingParams, prompt_seeds

SAMPLERS = {
    "hf": "grpo_cli.sampler.hf:HFSampler",
    "vllm": "grpo_cli.sampler.vllm:VLLMSampler",
}


def engine(name: str) -> type:
    """The sampler class registered under `name`, imported on first use."""
    module, _, cls = SAMPLERS[name].partition(":")
    return getattr(import_module(module), cls)


__all__ = ["SAMPLERS", "Sampler", "SamplingParams", "engine", "prompt_seeds"]
