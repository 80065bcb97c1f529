"""The pieces every command builds from a validated config: device, dtype, tokenizer, prompts,
and sampler.

Every failure a user can cause here (missing model, unreadable data) is raised as UserError
with the fix in the message, before any training starts. The run folder's rules are in run_folder/admission.py.
"""

from __future__ import annotations

import ctypes
import os

import datasets
import torch
from transformers import AutoConfig, AutoTokenizer
from transformers.utils import logging as hf_logging

from grpo_cli.config import GrpoConfig
from grpo_cli.data import PromptSet, load_prompts
from grpo_cli.environments.tools import tool_schemas
from grpo_cli.errors import UserError, one_line
from grpo_cli.metrics import console
from grpo_cli.sampler import Sampler, SamplingParams, engine

# model.dtype and sampler.dtype
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def _cuda() -> torch.device:
    if not torch.cuda.is_available():
        raise UserError("device=cuda but torch sees no CUDA GPU; use device=cpu or device=auto")
    return torch.device("cuda")


# the top-level `device` key
DEVICES = {
    "auto": lambda: torch.device("cuda" if torch.cuda.is_available() else "cpu"),
    "cpu": lambda: torch.device("cpu"),
    "cuda": _cuda,
}


def pick_device(name: str) -> torch.device:
    return DEVICES[name]()


def quiet_libraries() -> None:
    """Our progress bar is the one the user watches; silence the libraries' own."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()
    datasets.disable_progress_bars()
    datasets.logging.set_verbosity_error()


# glibc's mallopt parameters (malloc.h) and the largest mmap threshold it accepts on 64-bit systems
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
MMAP_THRESHOLD_MAX = 32 << 20


def keep_freed_memory() -> None:
    """Let the memory of freed tensors serve the next allocations instead of going back to the
    system. glibc gives an allocation above its mmap threshold pages of its own and hands them
    back on free, and trims the heap's free top, so each step, allocating the same activations
    again, faults in fresh zeroed pages: 4,000 to 22,000 a step on the embedded default, whose
    step this makes about 3 % faster (README, Performance). Allocations up to 32 MiB now come
    from the heap and the heap is not trimmed; the peak memory stays what it was. Other C
    libraries (macOS, musl) keep their own policy."""
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError, TypeError):
        return
    mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_MAX)
    mallopt(M_TRIM_THRESHOLD, 1 << 30)


def require_local_model(path: str) -> None:
    """An absolute or ./ path is a folder on this machine, never a hub id: say so if it is missing."""
    if (os.path.isabs(path) or path.startswith(".")) and not os.path.isdir(path):
        raise UserError(f"model path {path} does not exist; set model.name_or_path to a folder or hub id")


def load_tokenizer(path: str, trust_remote_code: bool = False):
    require_local_model(path)
    try:
        tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as error:
        raise UserError(f"cannot load the tokenizer of {path!r}: {one_line(error)}") from error
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def check_model(path: str, trust_remote_code: bool) -> str:
    """The model's config loads (no weights): a wrong path or hub id fails here, in a second."""
    require_local_model(path)
    try:
        config = AutoConfig.from_pretrained(path, trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as error:
        raise UserError(f"cannot load the model config of {path!r}: {one_line(error)}; "
                        f"set model.name_or_path to a folder or hub id") from error
    return f"{config.model_type}, {getattr(config, 'num_hidden_layers', '?')} layers"


def sampling_params(cfg: GrpoConfig) -> tuple[SamplingParams, SamplingParams]:
    """(training, evaluation) sampling parameters."""
    s, e = cfg.sampler, cfg.eval
    train = SamplingParams(n=s.n, temperature=s.temperature, top_p=s.top_p, top_k=s.top_k,
                           max_new_tokens=s.max_new_tokens)
    evaluation = SamplingParams(n=e.k, temperature=e.temperature, top_p=e.top_p, top_k=0,
                                max_new_tokens=e.max_new_tokens or s.max_new_tokens)
    return train, evaluation


def generation_budget(cfg: GrpoConfig) -> int:
    """Tokens after the prompt: the larger completion budget, or a whole episode's."""
    turn = max(cfg.sampler.max_new_tokens, cfg.eval.max_new_tokens or 0)
    env = cfg.environment
    return turn if env.max_turns == 1 else max(turn, env.max_total_tokens or env.max_turns * turn)


def max_model_len(cfg: GrpoConfig, model_path: str) -> int:
    """sampler.max_model_len, or the longest prompt plus the larger generation budget, within
    the model's positions."""
    if cfg.sampler.max_model_len:
        return cfg.sampler.max_model_len
    wanted = cfg.data.max_prompt_tokens + generation_budget(cfg)
    positions = getattr(AutoConfig.from_pretrained(model_path, trust_remote_code=cfg.model.trust_remote_code),
                        "max_position_embeddings", None)
    return min(wanted, positions) if positions else wanted


def make_sampler(cfg: GrpoConfig, weights_path: str, tokenizer, device: torch.device) -> Sampler:
    return engine(cfg.sampler.name)(
        model_path=weights_path, tokenizer=tokenizer, device=device, dtype=DTYPES[cfg.sampler.dtype or cfg.model.dtype],
        batch_size=cfg.sampler.batch_size, trust_remote_code=cfg.model.trust_remote_code, sampler_cfg=cfg.sampler,
        max_model_len=max_model_len(cfg, weights_path))


def load_and_report(path: str, split: str, cfg: GrpoConfig, tokenizer, limit: int = 0) -> PromptSet:
    """load_prompts, saying on the console how many prompts were dropped and why, and refusing
    prompts that leave the generation no room within the model's positions."""
    prompts = load_prompts(path, split, cfg.data, tokenizer, limit=limit, tools=tool_schemas(list(cfg.environment.tools)))
    if prompts.dropped_duplicates:
        console.print(f"{path}: dropped {prompts.dropped_duplicates} duplicate prompts (data.dedupe)")
    if prompts.dropped_too_long:
        # Loud: a limit sized for one model silently drops most prompts of another's template.
        total = len(prompts) + prompts.dropped_too_long
        console.print(f"[bold yellow]warning:[/] {path}: dropped {prompts.dropped_too_long} of {total} prompts "
                      f"({prompts.dropped_too_long / total:.0%}) longer than data.max_prompt_tokens="
                      f"{cfg.data.max_prompt_tokens} tokens with this tokenizer and template; the longest has "
                      f"{prompts.longest_dropped}: set data.max_prompt_tokens={prompts.longest_dropped} to keep them all")
    check_room(cfg, path, prompts)
    return prompts


def check_room(cfg: GrpoConfig, path: str, prompts: PromptSet) -> None:
    """Every prompt plus the generation budget fits the model's positions; otherwise every
    completion of the long ones would be cut short and score nothing."""
    try:
        config = AutoConfig.from_pretrained(cfg.model.name_or_path, trust_remote_code=cfg.model.trust_remote_code)
    except (OSError, ValueError):  # the model's own load says what is wrong with it
        return
    positions = getattr(config, "max_position_embeddings", None)
    budget = generation_budget(cfg)
    over = sum(len(ids) + budget > positions for ids in prompts.prompt_ids) if positions else 0
    if over:
        fix = (f"set data.max_prompt_tokens={positions - budget} (longer prompts are dropped) or lower the "
               "generation budget" if positions > budget else "lower sampler.max_new_tokens / eval.max_new_tokens "
               "(and environment.max_total_tokens)")
        raise UserError(f"{path}: {over} of {len(prompts)} prompts plus the {budget}-token generation budget exceed "
                        f"the model's {positions} positions; {fix}")


def load_eval_prompts(cfg: GrpoConfig, tokenizer) -> PromptSet | None:
    if cfg.data.eval_path is None:
        return None
    return load_and_report(cfg.data.eval_path, cfg.data.eval_split, cfg, tokenizer, limit=cfg.eval.num_prompts)
