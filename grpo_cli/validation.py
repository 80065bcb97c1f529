"""Cross-field rules that the config's types cannot express, checked before anything loads.

Hydra's composition already refused unknown keys and wrong types (config.py). Here every
name is looked up in the registry that owns its valid values (the stage dictionaries, the
samplers, the rewards, the schedules...), so a new option is one entry in one dictionary.
Every failure is a ConfigError naming the key and the fix.
"""

from __future__ import annotations

import inspect
import os
import re

from grpo_cli import algorithms as alg
from grpo_cli.config import AlgorithmConfig, DataConfig, GrpoConfig, RewardConfig
from grpo_cli.data import template_problem
from grpo_cli.environments import ENVIRONMENTS, environment_class
from grpo_cli.environments.tools import tool_schemas
from grpo_cli.errors import ConfigError
from grpo_cli.loggers import LOGGERS, check_ready
from grpo_cli.rewards.catalog import (
    IN_PROCESS,
    REWARDS,
    build,
    gates,
    is_user_path,
    load_user_function,
    probe_user_module,
)
from grpo_cli.rewards.process import PROCESS_REWARDS
from grpo_cli.sampler import SAMPLERS
from grpo_cli.training.learner import SCHEDULES
from grpo_cli.training.objectives import OBJECTIVES
from grpo_cli.training.runtime import DEVICES, DTYPES

# Far above published GRPO batches (DAPO: 512 prompts x 16); beyond it a typo (sampler.n=1000000)
# would start a step that never ends, with no word said.
MAX_COMPLETIONS_PER_STEP = 65536


def _require(ok: bool, message: str) -> None:
    if not ok:
        raise ConfigError(message)


def _require_name(value: str, registry: dict, key: str) -> None:
    _require(value in registry, f"{key}={value!r} is not known; valid: {', '.join(sorted(registry))}")


def _validate_algorithm(a: AlgorithmConfig) -> None:
    _require_name(a.objective, OBJECTIVES, "algorithm.objective")
    _require_name(a.preference.pair_loss, alg.PAIR_LOSSES, "algorithm.preference.pair_loss")
    _require_name(a.preference.group_weighting, alg.WEIGHTINGS, "algorithm.preference.group_weighting")
    _require(a.preference.beta > 0, f"algorithm.preference.beta={a.preference.beta} must be > 0")
    _require(a.preference.eta_alpha >= 0, f"algorithm.preference.eta_alpha={a.preference.eta_alpha} must be >= 0")
    _require_name(a.group_filter, alg.GROUP_FILTERS, "algorithm.group_filter")
    _require_name(a.advantage, alg.ADVANTAGES, "algorithm.advantage")
    _require_name(a.reward_aggregation, alg.REWARD_AGGREGATIONS, "algorithm.reward_aggregation")
    if alg.REWARD_AGGREGATIONS[a.reward_aggregation] is not alg.REWARD_AGGREGATIONS["sum"]:
        _require(a.advantage in alg.GROUP_RULES, f"algorithm.reward_aggregation={a.reward_aggregation} normalises each "
                 f"outcome reward in its group; algorithm.advantage={a.advantage} learns from step rewards: use "
                 f"reward_aggregation=sum")
        # A KL penalty in the reward is in reward units, the decoupled advantage in normalised ones.
        _require(not alg.KL_PLACEMENTS[a.kl_in].in_reward or a.kl_coef == 0,
                 f"algorithm.reward_aggregation={a.reward_aggregation} normalises each reward on its own scale, which a "
                 f"KL penalty in the reward does not have: set algorithm.kl_in=loss (or kl_coef=0)")
    _require_name(a.ratio, alg.RATIOS, "algorithm.ratio")
    _require_name(a.policy_loss, alg.POLICY_LOSSES, "algorithm.policy_loss")
    _require_name(a.correction, alg.CORRECTIONS, "algorithm.correction")
    _require_name(a.aggregation, alg.AGGREGATIONS, "algorithm.aggregation")
    _require_name(a.kl_estimator, alg.KL_ESTIMATORS, "algorithm.kl_estimator")
    _require_name(a.correction_level, alg.CORRECTION_LEVELS, "algorithm.correction_level")
    _require(a.correction_max > 0, f"algorithm.correction_max={a.correction_max} must be > 0")
    _require(a.correction_min is None or 0 <= a.correction_min < a.correction_max,
             f"algorithm.correction_min={a.correction_min} must lie in [0, correction_max)")
    _require_name(a.kl_in, alg.KL_PLACEMENTS, "algorithm.kl_in")
    _require(a.std_ddof in (0, 1), f"algorithm.std_ddof={a.std_ddof}: use 0 (population) or 1 (sample)")
    _require(a.adv_eps >= 0, f"algorithm.adv_eps={a.adv_eps} must be >= 0")
    if a.policy_loss == "cispo":  # a bounded weight, not a trust region: ε_low = 1 means no lower bound
        _require(0 < a.clip_eps_low <= 1, f"algorithm.clip_eps_low={a.clip_eps_low} must lie in (0, 1] for cispo")
    else:
        _require(0 < a.clip_eps_low < 1, f"algorithm.clip_eps_low={a.clip_eps_low} must lie in (0, 1)")
    _require(a.clip_eps_high > 0, f"algorithm.clip_eps_high={a.clip_eps_high} must be > 0")
    _require(a.dual_clip_c is None or a.dual_clip_c > 1, f"algorithm.dual_clip_c={a.dual_clip_c} must be > 1")
    _require(a.kl_coef >= 0, f"algorithm.kl_coef={a.kl_coef} must be >= 0")
    _require(OBJECTIVES[a.objective].kl_term or a.kl_coef == 0,
             f"algorithm.kl_coef={a.kl_coef}: the {a.objective} objective has no KL term (its reference enters "
             f"through the margin, weighted by algorithm.preference.beta); set algorithm.kl_coef=0")
    _require(a.epochs >= 1, f"algorithm.epochs={a.epochs} must be >= 1")
    _require(a.ref_reset_every >= 0, f"algorithm.ref_reset_every={a.ref_reset_every} must be >= 0")
    _require(a.ref_reset_every == 0 or a.kl_coef > 0,
             "algorithm.ref_reset_every needs algorithm.kl_coef > 0: without a KL term there is no reference model")
    _require(0 < a.ref_mix_alpha <= 1, f"algorithm.ref_mix_alpha={a.ref_mix_alpha} must lie in (0, 1]")
    _require(a.mini_batches >= 1, f"algorithm.mini_batches={a.mini_batches} must be >= 1")
    _require(a.length_norm is None or a.length_norm > 0, f"algorithm.length_norm={a.length_norm} must be > 0")


def _validate_sampling(cfg: GrpoConfig) -> None:
    s = cfg.sampler
    _require_name(s.name, SAMPLERS, "sampler.name")
    _require(s.n >= 2, f"sampler.n={s.n}: a group needs at least 2 completions per prompt (GRPO's std is undefined for 1)")
    _require(s.temperature > 0, f"sampler.temperature={s.temperature} must be > 0")
    _require(0 < s.top_p <= 1, f"sampler.top_p={s.top_p} must lie in (0, 1]")
    _require(s.top_k >= 0, f"sampler.top_k={s.top_k} must be >= 0 (0 = off)")
    _require(s.max_new_tokens >= 1, f"sampler.max_new_tokens={s.max_new_tokens} must be >= 1")
    _require(s.batch_size >= 1, f"sampler.batch_size={s.batch_size} must be >= 1")
    _require(s.threads >= 0, f"sampler.threads={s.threads} must be >= 0 (0: half of the CPU threads)")
    _require(s.dtype is None or s.dtype in DTYPES, f"sampler.dtype={s.dtype!r}: use {', '.join(DTYPES)} (or null: model.dtype)")
    _require(s.kv_cache_gib is None or s.kv_cache_gib > 0, f"sampler.kv_cache_gib={s.kv_cache_gib} must be > 0 (or null)")
    _require(s.max_model_len is None or s.max_model_len >= 2, f"sampler.max_model_len={s.max_model_len} must be >= 2 (or null)")
    _require(0 < s.gpu_memory_utilization <= 1, f"sampler.gpu_memory_utilization={s.gpu_memory_utilization} must lie in (0, 1]")
    _require(not s.stop or s.name == "vllm", f"sampler.stop={list(s.stop)}: stop strings need sampler=vllm; the hf "
             f"sampler stops at EOS only (drop sampler.stop)")
    e = cfg.eval
    _require(e.k >= 1, f"eval.k={e.k} must be >= 1")
    _require(e.temperature > 0, f"eval.temperature={e.temperature} must be > 0")
    _require(0 < e.top_p <= 1, f"eval.top_p={e.top_p} must lie in (0, 1]")
    _require(e.max_new_tokens is None or e.max_new_tokens >= 1,
             f"eval.max_new_tokens={e.max_new_tokens} must be >= 1 (or null: sampler.max_new_tokens)")
    _require(e.num_prompts >= 0, f"eval.num_prompts={e.num_prompts} must be >= 0 (0: every held-out prompt)")


def _validate_filter(cfg: GrpoConfig) -> None:
    a, n = cfg.algorithm, cfg.sampler.n
    _require(a.max_sampling_rounds >= 1, f"algorithm.max_sampling_rounds={a.max_sampling_rounds} must be >= 1")
    if not a.group_filter.startswith("gfpo"):
        return
    _require_name(a.gfpo.metric, alg.GFPO_METRICS, "algorithm.gfpo.metric")
    _require_name(a.gfpo.rejected, alg.GFPO_REJECTED, "algorithm.gfpo.rejected")
    if a.group_filter == "gfpo":
        _require(1 <= a.gfpo.k <= n, f"algorithm.gfpo.k={a.gfpo.k} must lie in [1, sampler.n={n}]: GFPO keeps k of the G sampled")
        return
    ks = list(a.gfpo.adaptive_k)
    _require(len(ks) == 4 and all(1 <= k <= n for k in ks),
             f"algorithm.gfpo.adaptive_k={ks}: give 4 values (very hard, hard, medium, easy) in [1, sampler.n={n}]")
    _require(a.gfpo.adaptive_window >= 1, f"algorithm.gfpo.adaptive_window={a.gfpo.adaptive_window} must be >= 1")
    _require(a.gfpo.adaptive_warmup >= 0, f"algorithm.gfpo.adaptive_warmup={a.gfpo.adaptive_warmup} must be >= 0")


def _validate_trainer(cfg: GrpoConfig) -> None:
    t = cfg.trainer
    _require(t.steps >= 0, f"trainer.steps={t.steps} must be >= 0")
    _require(t.prompts_per_step >= 1, f"trainer.prompts_per_step={t.prompts_per_step} must be >= 1")
    _require(t.micro_batch_size >= 1, f"trainer.micro_batch_size={t.micro_batch_size} must be >= 1")
    _require(t.micro_batch_tokens >= 0, f"trainer.micro_batch_tokens={t.micro_batch_tokens} must be >= 0 (0: by count)")
    _require(t.lr > 0, f"trainer.lr={t.lr} must be > 0")
    _require(t.warmup_steps >= 0, f"trainer.warmup_steps={t.warmup_steps} must be >= 0")
    _require_name(t.schedule, SCHEDULES, "trainer.schedule")
    _require(t.max_grad_norm > 0, f"trainer.max_grad_norm={t.max_grad_norm} must be > 0")
    _require(t.logprob_chunk >= 0, f"trainer.logprob_chunk={t.logprob_chunk} must be >= 0 (0: no chunking)")
    _require(t.max_nonfinite_steps >= 1, f"trainer.max_nonfinite_steps={t.max_nonfinite_steps} must be >= 1")
    _require(t.max_staleness >= 0, f"trainer.max_staleness={t.max_staleness} must be >= 0 (0: generate, then train)")
    for key in ("save_every", "eval_every", "keep_last", "log_samples", "log_samples_every"):
        _require(getattr(t, key) >= 0, f"trainer.{key}={getattr(t, key)} must be >= 0")
    t.report_to = [t.report_to] if isinstance(t.report_to, str) else list(t.report_to or [])  # TRL's spelling: one name
    for name in t.report_to:
        _require_name(name, LOGGERS, "trainer.report_to")
    _require(len(set(t.report_to)) == len(t.report_to), f"trainer.report_to={t.report_to} names a logger twice")
    check_ready(t.report_to)
    batch = t.prompts_per_step * cfg.sampler.n
    _require(batch <= MAX_COMPLETIONS_PER_STEP,
             f"trainer.prompts_per_step x sampler.n = {batch:,} completions per step (up to "
             f"{batch * cfg.sampler.max_new_tokens:,} new tokens, every step); the limit is {MAX_COMPLETIONS_PER_STEP:,}, "
             f"beyond any published GRPO batch: lower sampler.n or trainer.prompts_per_step")
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
    problem = template_problem(data.template)
    _require(problem is None, f"data.template={data.template!r} is not a template ({problem}); name a column in braces, "
                              f"e.g. data.template='Q: {{question}}', and double a literal brace ({{{{ or }}}})")


def _validate_process(cfg: GrpoConfig) -> None:
    process = cfg.reward.process
    if cfg.algorithm.advantage == "process":
        _require(process is not None, "algorithm.advantage=process needs step rewards: set reward.process "
                 "(e.g. reward=arithmetic_process, or reward.process={name:hf_prm,kwargs:{model:PATH}})")
        # The step-reward estimator has no place for a per-token KL reward; it would be dropped silently.
        _require(alg.KL_PLACEMENTS[cfg.algorithm.kl_in].in_loss or cfg.algorithm.kl_coef == 0,
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
                probe_user_module(fn.name)
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
    try:
        gates(list(reward.functions))
    except ValueError as error:
        raise ConfigError(str(error)) from error


def _validate_lora(cfg: GrpoConfig) -> None:
    lora = cfg.model.lora
    _require(lora.rank >= 0, f"model.lora.rank={lora.rank} must be >= 0 (0 trains every weight)")
    _require(lora.rank == 0 or lora.alpha > 0, f"model.lora.alpha={lora.alpha} must be > 0")
    _require(lora.rank == 0 or cfg.algorithm.ref_reset_every == 0,
             "algorithm.ref_reset_every needs full fine-tuning: with model.lora.rank > 0 the reference is "
             "the base model with the adapters off; set model.lora.rank=0 or algorithm.ref_reset_every=0")


def _validate_environment(cfg: GrpoConfig) -> None:
    env = cfg.environment
    _require(is_user_path(env.name) or env.name in ENVIRONMENTS,
             f"environment.name={env.name!r} is not an environment: use one of {', '.join(sorted(ENVIRONMENTS))}, "
             f"or module:Class / file.py:Class")
    _require(env.max_turns >= 1, f"environment.max_turns={env.max_turns} must be >= 1")
    _require(env.max_total_tokens >= 0, f"environment.max_total_tokens={env.max_total_tokens} must be >= 0 "
                                        f"(0: max_turns x sampler.max_new_tokens)")
    _require(0 < env.turn_discount <= 1, f"environment.turn_discount={env.turn_discount} must lie in (0, 1]")
    _require(env.workers >= 0, f"environment.workers={env.workers} must be >= 0 (0: steps in the trainer's process)")
    _require(env.timeout > 0, f"environment.timeout={env.timeout} must be > 0 seconds")
    _require(env.tool_timeout > 0, f"environment.tool_timeout={env.tool_timeout} must be > 0 seconds")
    _require(env.tool_max_chars >= 1, f"environment.tool_max_chars={env.tool_max_chars} must be >= 1")
    _require(not env.response_template or os.path.isfile(env.response_template),
             f"environment.response_template={env.response_template} does not exist; give a JSON response template file")
    _require(not env.tools or env.max_turns > 1, f"environment.tools={list(env.tools)} need a turn to answer the "
                                                 f"tools' results in: set environment.max_turns >= 2")
    if env.max_turns == 1:
        return
    _require(cfg.data.chat_template, "multi-turn episodes (environment.max_turns > 1) need data.chat_template=true")
    _require(cfg.algorithm.advantage != "process", "algorithm.advantage=process scores the steps of one completion; "
                                                   "use environment.max_turns=1 with it")
    try:
        if is_user_path(env.name):
            probe_user_module(env.name)  # a module that exits, crashes or hangs on import fails in a child
        environment_class(env.name)(**dict(env.kwargs))
    except (TypeError, ValueError) as error:
        raise ConfigError(f"environment {env.name} with kwargs {dict(env.kwargs)}: {error}") from error
    for tool in env.tools:
        try:
            if is_user_path(tool):
                probe_user_module(tool)
        except ValueError as error:
            raise ConfigError(f"environment.tools: {tool}: {error}") from error
        tool_schemas([tool])  # a missing function, type hint or docstring fails here, in one line


def _validate_run(cfg: GrpoConfig) -> None:
    # Seeds are combined with steps and streams into 64-bit generator seeds (schedule.derived_seed).
    _require(0 <= cfg.seed < 2**31, f"seed={cfg.seed} must lie in [0, 2^31)")


def validate(cfg: GrpoConfig) -> GrpoConfig:
    """Cross-field rules that types cannot express; raises ConfigError naming the keys."""
    _validate_run(cfg)
    _validate_algorithm(cfg.algorithm)
    _validate_sampling(cfg)
    _validate_filter(cfg)
    _validate_trainer(cfg)
    _require_name(cfg.model.dtype, DTYPES, "model.dtype")
    _require_name(cfg.device, DEVICES, "device")
    _validate_lora(cfg)
    _validate_data(cfg.data)
    _validate_process(cfg)
    validate_rewards(cfg.reward)
    _validate_environment(cfg)
    return cfg
