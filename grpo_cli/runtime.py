"""The pieces every command builds from a validated config: device, dtype, tokenizer, prompts,
sampler, and the run folder.

Every failure a user can cause here (missing model, unreadable data, a run folder that holds
another run) is raised as UserError with the fix in the message, before any training starts.
"""

from __future__ import annotations

import os
from pathlib import Path

import datasets
import torch
import yaml
from transformers import AutoConfig, AutoTokenizer
from transformers.utils import logging as hf_logging

from grpo_cli import checkpoint
from grpo_cli.config import GrpoConfig
from grpo_cli.data import PromptSet, load_prompts
from grpo_cli.errors import UserError
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


def require_local_model(path: str) -> None:
    """An absolute or ./ path is a folder on this machine, never a hub id: say so if it is missing."""
    if (os.path.isabs(path) or path.startswith(".")) and not os.path.isdir(path):
        raise UserError(f"model path {path} does not exist; set model.name_or_path to a folder or hub id")


def load_tokenizer(path: str, trust_remote_code: bool = False):
    require_local_model(path)
    try:
        tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as error:
        raise UserError(f"cannot load the tokenizer of {path!r}: {str(error).splitlines()[0]}") from error
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def check_model(path: str, trust_remote_code: bool) -> str:
    """The model's config loads (no weights): a wrong path or hub id fails here, in a second."""
    require_local_model(path)
    try:
        config = AutoConfig.from_pretrained(path, trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as error:
        raise UserError(f"cannot load the model config of {path!r}: {str(error).splitlines()[0]}; "
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


def max_model_len(cfg: GrpoConfig, model_path: str) -> int:
    """sampler.max_model_len, or the longest prompt plus the larger generation budget, within
    the model's positions."""
    if cfg.sampler.max_model_len:
        return cfg.sampler.max_model_len
    wanted = cfg.data.max_prompt_tokens + max(cfg.sampler.max_new_tokens, cfg.eval.max_new_tokens or 0)
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
    prompts = load_prompts(path, split, cfg.data, tokenizer, limit=limit)
    if prompts.dropped_too_long or prompts.dropped_duplicates:
        console.print(f"{path}: {len(prompts)} prompts; dropped {prompts.dropped_too_long} over "
                      f"data.max_prompt_tokens={cfg.data.max_prompt_tokens} and {prompts.dropped_duplicates} duplicates")
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
    budget = max(cfg.sampler.max_new_tokens, cfg.eval.max_new_tokens or 0)
    over = sum(len(ids) + budget > positions for ids in prompts.prompt_ids) if positions else 0
    if over:
        fix = (f"set data.max_prompt_tokens={positions - budget} (longer prompts are dropped) or lower "
               f"sampler.max_new_tokens" if positions > budget else "lower sampler.max_new_tokens / eval.max_new_tokens")
        raise UserError(f"{path}: {over} of {len(prompts)} prompts plus the {budget}-token generation budget exceed "
                        f"the model's {positions} positions; {fix}")


def load_eval_prompts(cfg: GrpoConfig, tokenizer) -> PromptSet | None:
    if cfg.data.eval_path is None:
        return None
    return load_and_report(cfg.data.eval_path, cfg.data.eval_split, cfg, tokenizer, limit=cfg.eval.num_prompts)


def preflight(cfg: GrpoConfig) -> None:
    """What can fail in a second must fail before a folder is made or a model loads."""
    engine(cfg.sampler.name).check_available(pick_device(cfg.device))


# What a resumed run may change: how long it runs, how it reports and how it uses the
# machine; never what it trains (the algorithm, model, data, rewards, sampling, optimizer).
RESUMABLE = ("trainer.steps", "trainer.save_every", "trainer.eval_every", "trainer.keep_last",
             "trainer.max_nonfinite_steps", "trainer.micro_batch_size", "trainer.micro_batch_tokens",
             "trainer.logprob_chunk", "model.gradient_checkpointing", "sampler.batch_size", "reward.workers",
             "eval.", "score.", "device", "resume", "overwrite")


def _flat(node, prefix: str = "") -> dict:
    if not isinstance(node, dict):
        return {prefix: node}
    out = {}
    for key, value in node.items():
        out.update(_flat(value, f"{prefix}.{key}" if prefix else str(key)))
    return out


def changed_keys(saved_yaml: str, config_yaml: str) -> list[str]:
    """Keys whose value differs between two composed configs, other than RESUMABLE ones."""
    saved, new = _flat(yaml.safe_load(saved_yaml) or {}), _flat(yaml.safe_load(config_yaml) or {})
    return [f"{key} ({saved.get(key)} -> {new.get(key)})" for key in sorted(saved.keys() | new.keys())
            if saved.get(key) != new.get(key) and not key.startswith(RESUMABLE)]


def require_writable_folder(path: Path, key: str) -> None:
    """`path` is a folder, or can be made one: found before any model loads."""
    if path.exists() and not path.is_dir():
        raise UserError(f"{key}={path} is a file, not a folder; give a folder")
    existing = next(p for p in (path, *path.parents) if p.exists())
    if not os.access(existing, os.W_OK | os.X_OK):
        raise UserError(f"{key}={path}: cannot write in {existing}; give a folder you can write to")


def require_writable_file(path: Path, key: str) -> None:
    """`path` can be written as a file (not a folder), checked before the work that fills it."""
    if path.is_dir():
        raise UserError(f"{key}={path} is a folder; give a file name, e.g. {path / 'out.json'}")
    require_writable_folder(path.parent, f"the folder of {key}")


def check_run_dir(cfg: GrpoConfig, config_yaml: str, resume_from: Path | None = None) -> Path:
    """The run folder may take this run: not inside another run's folder, not holding another
    run (unless overwrite), and, on resume, holding the run being resumed."""
    run_dir = Path(cfg.output_dir)
    require_writable_folder(run_dir, "output_dir")
    outer = next((parent for parent in run_dir.resolve().parents
                  if (parent / "config.yaml").is_file() and (parent / "checkpoints").is_dir()), None)
    if outer is not None:
        raise UserError(f"output_dir={run_dir} lies inside the run folder {outer}, whose checkpoint pruning "
                        f"could delete it; pick an output_dir outside it")
    saved = run_dir / "config.yaml"
    if saved.exists() and cfg.resume is None and not cfg.overwrite and saved.read_text() != config_yaml:
        raise UserError(f"{run_dir} holds another run's config; pass resume=auto to continue it, "
                        f"overwrite=true to reuse the folder, or a new output_dir")
    started = (checkpoint.run_folder_of(resume_from) / "config.yaml") if resume_from else None
    if started is not None and started.is_file():
        changed = changed_keys(started.read_text(), config_yaml)
        if changed:
            raise UserError(f"resume would change what the run trains: {', '.join(changed)}; resume with the "
                            f"run's own settings, or start a new run in a new output_dir")
    return run_dir


def prepare_run_dir(cfg: GrpoConfig, config_yaml: str, overrides: list[str]) -> Path:
    """Create the run folder and write its config.yaml and overrides.yaml, once: a resumed run
    keeps the ones it started with (grpo eval reads them for every checkpoint)."""
    run_dir = Path(cfg.output_dir)
    saved = run_dir / "config.yaml"
    run_dir.mkdir(parents=True, exist_ok=True)
    if cfg.resume is not None and saved.is_file():
        return run_dir
    saved.write_text(config_yaml)
    (run_dir / "overrides.yaml").write_text(yaml.safe_dump(list(overrides)))
    return run_dir
