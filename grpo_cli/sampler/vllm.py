"""vLLM sampler (GPU). The engine itself lands with the GPU path; until then selecting it
fails before any model loads, with a message that says what to use instead."""

from __future__ import annotations

from grpo_cli.config import UserError


class VLLMSampler:
    @classmethod
    def check_available(cls) -> None:
        import torch

        if not torch.cuda.is_available():
            raise UserError(
                "sampler=vllm needs a CUDA GPU and the vllm extra (pip install -e '.[vllm]'); "
                "this machine has no GPU: use sampler=hf to generate with transformers on the CPU"
            )
        raise UserError("sampler=vllm is not available in this version yet; use sampler=hf")

    def __init__(self, **kwargs):
        self.check_available()
