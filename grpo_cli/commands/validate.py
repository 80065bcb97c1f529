"""`grpo validate`: everything `grpo train` checks before its first step, without training."""

from __future__ import annotations

from grpo_cli.config import GrpoConfig
from grpo_cli.environments import episode_spec, probe
from grpo_cli.metrics import console
from grpo_cli.rewards.scoring import RewardSet, reward_columns
from grpo_cli.training.objectives import plan_start
from grpo_cli.training.runtime import (
    check_model,
    load_and_report,
    load_eval_prompts,
    load_tokenizer,
)


def dry_run(cfg: GrpoConfig, config_yaml: str) -> list[str]:
    """Without a folder or a model's weights: the sampler and device, the run folder, the resume
    point, the model, both data splits and the rewards (started, and called once on two
    prompts with an empty completion)."""
    resume_from = plan_start(cfg, config_yaml)
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
    if cfg.environment.max_turns > 1:
        with episode_spec(cfg.environment, tokenizer) as episodes:
            lines.append(probe(episodes, cfg.environment.name, batch.examples, batch.messages))
    if resume_from:
        lines.append(f"resumes from {resume_from}")
    return lines


def run(cfg: GrpoConfig, config_yaml: str, overrides: list[str]) -> int:
    for line in dry_run(cfg, config_yaml):
        console.print(line)
    console.print("ok: grpo train with these overrides would start")
    return 0
