"""The sampler interface every engine implements."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import torch

from grpo_cli.types import PromptBatch, Rollouts


@dataclass(frozen=True)
class SamplingParams:
    """n completions per prompt; top_k = 0 and top_p = 1 switch those filters off."""

    n: int
    temperature: float
    top_p: float
    top_k: int
    max_new_tokens: int


def prompt_seeds(base: int, slots) -> list[int]:
    """One seed per prompt slot, unrelated to its neighbours' (base + slot would make the
    next step's prompt 0 share a stream with this step's prompt 16, and vLLM seeds a prompt's
    n samples with seed + j)."""
    return [hash((base, slot)) % 2**62 for slot in slots]


class Sampler(Protocol):
    version: int  # the policy version of the weights it holds (the learner step that made them)

    def generate(self, batch: PromptBatch, params: SamplingParams, seeds: list[int]) -> Rollouts:
        """n completions for every prompt; a prompt's completions depend only on its own seed
        (seeds[i] for batch row i), not on the rest of the batch."""

    def load_weights(self, named_tensors: dict[str, torch.Tensor], version: int) -> None:
        """Replace the engine's weights in place with the learner's."""

    def sleep(self) -> None:
        """Release accelerator memory while the learner trains; the weights may go with it
        (the next load_weights brings them back)."""

    def wake(self) -> None:
        """Take the memory back before generating; nothing when awake."""

    def close(self) -> None:
        """Release the engine (threads, memory, distributed state); the sampler is unusable after."""
