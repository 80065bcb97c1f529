"""`grpo eval`: a checkpoint (or the configured model) on held-out data.

Prompts: accuracy (mean@k) and pass@k over eval.k samples (evaluate.py). Preference pairs
(algorithm.objective=preference, or data with a group_key): each group's preference accuracy
relative to the reference (model.name_or_path) and, where every row carries an answer, each
group's task accuracy over eval.k samples of its prompts.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import torch

from grpo_cli.config import GrpoConfig
from grpo_cli.data import PairSet, PromptSet, load_pairs, lookup, with_reference
from grpo_cli.environments import episode_spec
from grpo_cli.errors import UserError
from grpo_cli.metrics import console, headline, results_table
from grpo_cli.rewards.scoring import RewardSet
from grpo_cli.run_folder.admission import require_writable_file
from grpo_cli.run_folder.checkpoint import is_checkpoint, verify
from grpo_cli.training.clock import derived_seed
from grpo_cli.training.evaluate import evaluate, sample_and_score
from grpo_cli.training.learner import Learner
from grpo_cli.training.objectives import OBJECTIVES, sampler_preflight
from grpo_cli.training.offline import group_figures, sums_of
from grpo_cli.training.runtime import (
    DTYPES,
    load_eval_prompts,
    load_tokenizer,
    make_sampler,
    pick_device,
    sampling_params,
)


def weights_to_evaluate(cfg: GrpoConfig) -> str:
    weights = cfg.eval.checkpoint or cfg.model.name_or_path
    if cfg.eval.checkpoint and not is_checkpoint(weights):
        raise UserError(f"checkpoint={weights} is not a checkpoint folder (needs config.json and *.safetensors); "
                        f"pass a runs/<run>/checkpoints/step_<N> folder")
    if cfg.eval.checkpoint:
        verify(Path(weights), "checkpoint")
    if cfg.data.eval_path is None:
        raise UserError("no held-out data: set data.eval_path (or pick a data group that has one)")
    return weights


def evaluate_prompts(cfg: GrpoConfig, weights: str) -> dict:
    """Accuracy and pass@k of `weights` on the held-out prompts."""
    sampler_preflight(cfg)
    tokenizer = load_tokenizer(weights, cfg.model.trust_remote_code)
    prompts = load_eval_prompts(cfg, tokenizer)
    sampler = make_sampler(cfg, weights, tokenizer, pick_device(cfg.device))
    _, params = sampling_params(cfg)
    outcome_only = replace(cfg.reward, process=None)  # accuracy needs no step rewards
    try:
        with RewardSet(outcome_only) as rewards, episode_spec(cfg.environment, tokenizer) as episodes:
            return evaluate(sampler, prompts, rewards, params, seed=derived_seed(cfg.seed, 0, 2),
                            episodes=episodes).to_dict()
    finally:
        sampler.close()


def evaluate_pairs(cfg: GrpoConfig, weights: str) -> dict:
    """Each group's preference accuracy, and its task accuracy where the rows have answers."""
    device, dtype = pick_device(cfg.device), DTYPES[cfg.model.dtype]
    tokenizer = load_tokenizer(weights, cfg.model.trust_remote_code)
    pairs = load_pairs(cfg.data.eval_path, cfg.data.eval_split, cfg.data, tokenizer)
    every = list(range(len(pairs)))
    learner = Learner(cfg, device, dtype, 1, policy_path=weights, needs_reference=True)
    with learner.reference_model() as reference:
        sums = [sums_of(learner, model, pairs, every, tokenizer.pad_token_id) for model in (learner.model, reference)]
    result = group_figures(sums[0], sums[1], pairs).to_dict()
    if all(lookup(row, cfg.data.answer_key) is not None for row in pairs.examples):
        for name, accuracy in task_accuracy(cfg, weights, tokenizer, pairs, device).items():
            result["groups"][name]["task_accuracy"] = accuracy
    return result


def task_accuracy(cfg: GrpoConfig, weights: str, tokenizer, pairs: PairSet, device: torch.device) -> dict[str, float]:
    """Mean correctness of eval.k samples of every pair's prompt, per group."""
    examples = [with_reference(row, cfg.data, cfg.data.eval_path) for row in pairs.examples]
    prompts = PromptSet(pairs.prompt_ids, pairs.prompts, examples, 0, messages=pairs.messages)
    _, params = sampling_params(cfg)
    sampler = make_sampler(cfg, weights, tokenizer, device)
    try:
        with RewardSet(replace(cfg.reward, process=None)) as rewards, episode_spec(cfg.environment, tokenizer) as episodes:
            samples = sample_and_score(sampler, prompts, rewards, params, seed=derived_seed(cfg.seed, 0, 2),
                                       rows=range(len(prompts)), episodes=episodes)
    finally:
        sampler.close()
    correct = torch.tensor(samples.correct, dtype=torch.float) / params.n
    return {name: float(correct[pairs.groups == g].mean())
            for g, name in enumerate(pairs.group_names) if (pairs.groups == g).any()}


# What a held-out set is evaluated as: prompts to sample, or preference pairs to rank.
EVALUATIONS = {"prompts": evaluate_prompts, "pairs": evaluate_pairs}


def run(cfg: GrpoConfig, config_yaml: str, overrides: list[str]) -> int:
    """`grpo eval [checkpoint=PATH] [output=FILE.json]`."""
    if cfg.eval.output:  # before sampling: a bad path must not cost the results
        require_writable_file(Path(cfg.eval.output), "output")
    weights = weights_to_evaluate(cfg)
    held_out = "pairs" if cfg.data.group_key is not None else OBJECTIVES[cfg.algorithm.objective].held_out
    figures = EVALUATIONS[held_out](cfg, weights)
    console.print(results_table(f"eval: {weights}\non {cfg.data.eval_path}", {Path(weights).name: headline(figures)}))
    if cfg.eval.output:
        record = {**figures, "model": weights, "data": cfg.data.eval_path}
        Path(cfg.eval.output).parent.mkdir(parents=True, exist_ok=True)
        Path(cfg.eval.output).write_text(json.dumps(record, indent=2) + "\n")
        console.print(f"wrote {cfg.eval.output}")
    return 0
