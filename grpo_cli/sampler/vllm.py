"""vLLM sampler: vLLM's `LLM` engine in the learner's own process, on the same GPU.

The colocated layout of verl's hybrid engine and TRL's `vllm_mode=colocate`: the engine sleeps
while the learner trains and its weights are replaced in place after every optimizer step.
Where we differ from both: the engine core runs in this process (VLLM_ENABLE_V1_MULTIPROCESSING=0),
so the push hands the learner's GPU tensors to the model's own `load_weights` by reference
(no IPC handles, no disk, no copy beyond the cast to bf16 inside load_weights), and the
engine sleeps at level 2 (weights dropped, not offloaded to host memory), since a push follows
every sleep. Log-probs are vLLM's `processed_logprobs`: after temperature, so they are the
learner's ℓ at the same temperature; with top-p / top-k on they are of the truncated
distribution (the hf sampler reports the full one).

Only this module imports vLLM. NOT YET RUN ON A GPU: written against vLLM 0.26.0's API (the
version ../shared/scripts/vllm-device-bundle.sh builds) and checked on the GPU by tests/test_gpu.py
and scripts/bench_gpu.py when a GPU is lent.
"""

from __future__ import annotations

import importlib.util
import os

import torch

from grpo_cli.config import UserError
from grpo_cli.sampler.base import SamplingParams
from grpo_cli.sampler.hf import left_pad
from grpo_cli.types import PromptBatch, Rollouts


class VLLMSampler:
    @classmethod
    def check_available(cls) -> None:
        if not torch.cuda.is_available():
            raise UserError("sampler=vllm needs a CUDA GPU and the vllm extra (pip install -e '.[vllm]'); "
                            "this machine has no GPU: use sampler=hf to generate with transformers on the CPU")
        if importlib.util.find_spec("vllm") is None:
            raise UserError("sampler=vllm needs vLLM: pip install -e '.[vllm]' (or use sampler=hf)")

    def __init__(self, model_path: str, tokenizer, device: torch.device, dtype: torch.dtype, batch_size: int,
                 trust_remote_code: bool = False, sampler_cfg=None, **_):
        # Read by vLLM when the engine starts: keep its core in this process (see the docstring).
        os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"
        from vllm import LLM

        self.check_available()
        # Under torchrun each rank drives its own engine on its own GPU, as TRL's colocate mode.
        launcher = {"distributed_executor_backend": "external_launcher"} if torch.distributed.is_initialized() else {}
        self.llm = LLM(model=model_path, dtype=dtype, trust_remote_code=trust_remote_code, seed=0,
                       gpu_memory_utilization=sampler_cfg.gpu_memory_utilization,
                       enforce_eager=sampler_cfg.enforce_eager, max_num_seqs=batch_size,
                       enable_sleep_mode=True, enable_prefix_caching=True, logprobs_mode="processed_logprobs",
                       **launcher)
        self.stop = list(sampler_cfg.stop)
        self.pad_id = tokenizer.pad_token_id
        self.asleep: set[str] = set()
        self.version = 0

    def sleep(self) -> None:
        """Level 2: the KV cache and the weights go; the next push brings the weights back."""
        if not self.asleep:
            self.llm.sleep(level=2)
            self.asleep = {"weights", "kv_cache"}

    def wake(self) -> None:
        if "weights" in self.asleep:
            raise RuntimeError("the vllm sampler was woken without new weights after a level-2 sleep")
        if self.asleep:
            self.llm.wake_up(tags=sorted(self.asleep))
            self.asleep.clear()

    @torch.no_grad()
    def load_weights(self, named_tensors: dict[str, torch.Tensor], version: int) -> None:
        """Copy the learner's tensors (any device, any float dtype) into the engine's own,
        under the Hugging Face names its load_weights maps (fused q/k/v, gate/up)."""
        if "weights" in self.asleep:
            self.llm.wake_up(tags=["weights"])
            self.asleep.discard("weights")
        items = list(named_tensors.items())
        self.llm.apply_model(lambda model: model.load_weights(weights=iter(items)))
        self.llm.reset_prefix_cache()  # cached prefixes hold keys and values of the old weights
        self.version = version

    def request_params(self, params: SamplingParams, seeds: list[int]) -> list:
        """One vLLM SamplingParams per prompt; vLLM seeds its n samples with seed + j."""
        from vllm import SamplingParams as VLLMParams

        return [VLLMParams(n=params.n, temperature=params.temperature, top_p=params.top_p, top_k=params.top_k,
                           max_tokens=params.max_new_tokens, seed=seed, logprobs=0, stop=self.stop or None,
                           include_stop_str_in_output=True) for seed in seeds]

    def generate(self, batch: PromptBatch, params: SamplingParams, seeds: list[int]) -> Rollouts:
        if len(seeds) != len(batch):
            raise ValueError(f"{len(seeds)} seeds for {len(batch)} prompts: the sampler takes one seed per prompt")
        from vllm.inputs import TokensPrompt

        self.wake()
        outputs = self.llm.generate([TokensPrompt(prompt_token_ids=ids) for ids in batch.prompt_ids],
                                    self.request_params(params, seeds), use_tqdm=False)
        completions = [c for out in outputs for c in sorted(out.outputs, key=lambda c: c.index)]
        return self._assemble(batch, params.n, completions)

    def _assemble(self, batch: PromptBatch, n: int, completions: list) -> Rollouts:
        rows = [ids for ids in batch.prompt_ids for _ in range(n)]
        width = max(1, max(len(c.token_ids) for c in completions))
        completion_ids = torch.full((len(completions), width), self.pad_id, dtype=torch.long)
        logprobs = torch.zeros((len(completions), width))
        for i, c in enumerate(completions):
            count = len(c.token_ids)
            completion_ids[i, :count] = torch.tensor(list(c.token_ids), dtype=torch.long)
            logprobs[i, :count] = torch.tensor([step[token].logprob for step, token in zip(c.logprobs, c.token_ids)])
        lengths = torch.tensor([len(c.token_ids) for c in completions])
        prompt_ids, prompt_mask = left_pad(rows, self.pad_id)
        return Rollouts(
            prompt_ids=prompt_ids, prompt_mask=prompt_mask, completion_ids=completion_ids,
            completion_mask=(torch.arange(width)[None, :] < lengths[:, None]).long(), sampler_logprobs=logprobs,
            truncated=torch.tensor([c.finish_reason == "length" for c in completions]),
            group_ids=torch.arange(len(batch)).repeat_interleave(n), completions=[c.text for c in completions],
            policy_version=self.version,
        )
