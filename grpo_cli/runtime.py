"""Building a run from a validated config: device, tokenizer, prompts, rewards, models, folder.

Every failure a user can cause here (missing model, unreadable data, a run folder that holds
another run) is raised as UserError with the fix in the message, before any training starts.
"""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path

import torch
import yaml

from grpo_cli.config import DTYPE_NAMES, UserError
from grpo_cli.data import load_prompts
from grpo_cli.rewards.scoring import RewardSet, reward_columns
from grpo_cli.sampler import SamplingParams, engine

DTYPES = {name: getattr(torch, name) for name in DTYPE_NAMES}


def quiet_libraries() -> None:
    """Our progress bar is the one the user watches; silence the libraries' own."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()
    import datasets

    datasets.disable_progress_bars()
    datasets.logging.set_verbosity_error()


def pick_device(name: str) -> torch.device:
    if name == "cuda" and not torch.cuda.is_available():
        raise UserError("device=cuda but torch sees no CUDA GPU; use device=cpu or device=auto")
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def require_local_model(path: str) -> None:
    """An absolute or ./ path is a folder on this machine, never a hub id: say so if it is missing."""
    if (os.path.isabs(path) or path.startswith(".")) and not os.path.isdir(path):
        raise UserError(f"model path {path} does not exist; set model.name_or_path to a folder or hub id")


def load_tokenizer(path: str, trust_remote_code: bool = False):
    from transformers import AutoTokenizer

    require_local_model(path)
    try:
        tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as error:
        raise UserError(f"cannot load the tokenizer of {path!r}: {str(error).splitlines()[0]}") from error
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def sampling_params(cfg) -> tuple[SamplingParams, SamplingParams]:
    """(training, evaluation) sampling parameters."""
    s, e = cfg.sampler, cfg.eval
    train = SamplingParams(n=s.n, temperature=s.temperature, top_p=s.top_p, top_k=s.top_k,
                           max_new_tokens=s.max_new_tokens)
    evaluation = SamplingParams(n=e.k, temperature=e.temperature, top_p=e.top_p, top_k=0,
                                max_new_tokens=e.max_new_tokens or s.max_new_tokens)
    return train, evaluation


def max_model_len(cfg, model_path: str) -> int:
    """sampler.max_model_len, or the longest prompt plus the larger generation budget, within
    the model's positions."""
    from transformers import AutoConfig

    if cfg.sampler.max_model_len:
        return cfg.sampler.max_model_len
    wanted = cfg.data.max_prompt_tokens + max(cfg.sampler.max_new_tokens, cfg.eval.max_new_tokens or 0)
    positions = getattr(AutoConfig.from_pretrained(model_path, trust_remote_code=cfg.model.trust_remote_code),
                        "max_position_embeddings", None)
    return min(wanted, positions) if positions else wanted


def make_sampler(cfg, weights_path: str, tokenizer, device: torch.device):
    return engine(cfg.sampler.name)(
        model_path=weights_path, tokenizer=tokenizer, device=device, dtype=DTYPES[cfg.sampler.dtype or cfg.model.dtype],
        batch_size=cfg.sampler.batch_size, trust_remote_code=cfg.model.trust_remote_code, sampler_cfg=cfg.sampler,
        max_model_len=max_model_len(cfg, weights_path))


def load_and_report(path: str, split: str, cfg, tokenizer, limit: int = 0):
    """load_prompts, saying on the console how many prompts were dropped and why."""
    from grpo_cli.metrics import console

    prompts = load_prompts(path, split, cfg.data, tokenizer, limit=limit)
    if prompts.dropped_too_long or prompts.dropped_duplicates:
        console.print(f"{path}: {len(prompts)} prompts; dropped {prompts.dropped_too_long} over "
                      f"data.max_prompt_tokens={cfg.data.max_prompt_tokens} and {prompts.dropped_duplicates} duplicates")
    return prompts


def load_eval_prompts(cfg, tokenizer):
    if cfg.data.eval_path is None:
        return None
    return load_and_report(cfg.data.eval_path, cfg.data.eval_split, cfg, tokenizer, limit=cfg.eval.num_prompts)


def preflight(cfg) -> None:
    """What can fail in a second must fail before a folder is made or a model loads."""
    engine(cfg.sampler.name).check_available(pick_device(cfg.device))


def check_run_dir(cfg, config_yaml: str) -> Path:
    run_dir = Path(cfg.output_dir)
    saved = run_dir / "config.yaml"
    if saved.exists() and cfg.resume is None and not cfg.overwrite and saved.read_text() != config_yaml:
        raise UserError(f"{run_dir} holds another run's config; pass resume=auto to continue it, "
                        f"overwrite=true to reuse the folder, or a new output_dir")
    return run_dir


def prepare_run_dir(cfg, config_yaml: str, overrides: list[str]) -> Path:
    """Create the run folder; refuse one that holds a different run unless resuming or overwriting."""
    run_dir = check_run_dir(cfg, config_yaml)
    saved = run_dir / "config.yaml"
    run_dir.mkdir(parents=True, exist_ok=True)
    saved.write_text(config_yaml)
    (run_dir / "overrides.yaml").write_text(yaml.safe_dump(list(overrides)))
    return run_dir


def build(cfg, policy_path: str, ranks=None):
    """Tokenizer, prompts, rewards, learner and sampler for a training run (this rank's, under torchrun)."""
    from grpo_cli.algorithms.filters import DifficultyTracker
    from grpo_cli.distributed import Ranks, local_device
    from grpo_cli.learner import Learner
    from grpo_cli.loop import Run

    ranks = ranks or Ranks()
    if cfg.trainer.prompts_per_step < ranks.world:
        raise UserError(f"trainer.prompts_per_step={cfg.trainer.prompts_per_step} gives some of the {ranks.world} "
                        f"ranks no prompt; raise it to at least {ranks.world} or start fewer processes")
    device = local_device(pick_device(cfg.device), ranks)
    torch.manual_seed(cfg.seed)
    tokenizer = load_tokenizer(policy_path, cfg.model.trust_remote_code)
    train_prompts = load_and_report(cfg.data.path, cfg.data.split, cfg, tokenizer)
    eval_prompts = load_eval_prompts(cfg, tokenizer)
    rewards = RewardSet(cfg.reward, tokenizer)
    sampler = make_sampler(cfg, policy_path, tokenizer, device)
    optimizer_steps = cfg.trainer.steps * cfg.algorithm.epochs * cfg.algorithm.mini_batches
    learner = Learner(cfg, device, DTYPES[cfg.model.dtype], optimizer_steps, policy_path=policy_path, ranks=ranks)
    train_params, eval_params = sampling_params(cfg)
    return Run(cfg=cfg, tokenizer=tokenizer, train_prompts=train_prompts, eval_prompts=eval_prompts,
               rewards=rewards, learner=learner, sampler=sampler, train_params=train_params,
               eval_params=eval_params, difficulty=DifficultyTracker(cfg.algorithm.gfpo_adaptive_window), ranks=ranks)


def run_evaluation(cfg, evaluate):
    """`grpo eval`: the checkpoint (or the configured model) on the held-out prompts."""
    from grpo_cli.checkpoint import is_checkpoint
    from grpo_cli.loop import derived_seed

    weights = cfg.eval.checkpoint or cfg.model.name_or_path
    if cfg.eval.checkpoint and not is_checkpoint(weights):
        raise UserError(f"checkpoint={weights} is not a checkpoint folder (needs config.json and *.safetensors); "
                        f"pass a runs/<run>/checkpoints/step_<N> folder")
    if cfg.data.eval_path is None:
        raise UserError("no held-out data: set data.eval_path (or pick a data group that has one)")
    preflight(cfg)
    device = pick_device(cfg.device)
    tokenizer = load_tokenizer(weights, cfg.model.trust_remote_code)
    prompts = load_eval_prompts(cfg, tokenizer)
    sampler = make_sampler(cfg, weights, tokenizer, device)
    _, params = sampling_params(cfg)
    outcome_only = replace(cfg.reward, process=None)  # accuracy needs no step rewards
    try:
        with RewardSet(outcome_only) as rewards:
            result = evaluate(sampler, prompts, rewards, params, seed=derived_seed(cfg.seed, 0, 2))
    finally:
        sampler.close()
    return result, weights


def check_model(path: str, trust_remote_code: bool) -> str:
    """The model's config loads (no weights): a wrong path or hub id fails here, in a second."""
    from transformers import AutoConfig

    require_local_model(path)
    try:
        config = AutoConfig.from_pretrained(path, trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as error:
        raise UserError(f"cannot load the model config of {path!r}: {str(error).splitlines()[0]}; "
                        f"set model.name_or_path to a folder or hub id") from error
    return f"{config.model_type}, {getattr(config, 'num_hidden_layers', '?')} layers"


def dry_run(cfg, config_yaml: str) -> list[str]:
    """Everything `grpo train` checks before its first step, without a folder or a model's
    weights: the sampler and device, the run folder, the resume point, the model, both data
    splits and the rewards (started, and called once on two prompts with an empty completion)."""
    from grpo_cli.checkpoint import find_resume_point

    preflight(cfg)
    check_run_dir(cfg, config_yaml)
    resume_from = find_resume_point(cfg.output_dir, cfg.resume)
    model_path = str(resume_from) if resume_from else cfg.model.name_or_path
    lines = [f"model {model_path}: {check_model(model_path, cfg.model.trust_remote_code)}"]
    tokenizer = load_tokenizer(model_path, cfg.model.trust_remote_code)
    train = load_and_report(cfg.data.path, cfg.data.split, cfg, tokenizer)
    lines.append(f"train data {cfg.data.path}: {len(train)} prompts")
    held_out = load_eval_prompts(cfg, tokenizer)
    lines.append(f"held-out data {cfg.data.eval_path}: {len(held_out)} prompts" if held_out else "no held-out data")
    with RewardSet(cfg.reward, tokenizer) as rewards:
        batch = train.take([0, min(1, len(train) - 1)])
        rewards.score_texts(batch.prompts, ["", ""], reward_columns(batch.examples, [[], []], batch.messages))
        lines.append("rewards " + ", ".join(f"{name} ({'failed: ' + r.first_error if r.first_error else 'ok'})"
                                             for name, r in rewards.reports.items()))
    if resume_from:
        lines.append(f"resumes from {resume_from}")
    return lines
