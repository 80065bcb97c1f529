"""RewardSet: the configured reward functions, called through the workers, weighted into Scores."""

from __future__ import annotations

import math
from dataclasses import replace

import torch

from grpo_cli.config import RewardConfig
from grpo_cli.rewards.catalog import IN_PROCESS, build, display_names, gates
from grpo_cli.rewards.process import ProcessScorer
from grpo_cli.rewards.workers import CallReport, LocalRewards, RewardWorkers
from grpo_cli.types import PromptBatch, Rollouts, Scores


def reward_columns(rows: list[dict], completion_ids: list[list[int]], messages: list | None = None) -> dict:
    """The keyword arguments every reward function gets besides prompts and completions: each
    data column as a list aligned with the completions (None where a row lacks it, and always
    an `answer`), `completion_ids`, and the prompts' chat `messages` where they are known."""
    keys = sorted({key for row in rows for key in row} | {"answer"})
    columns = {key: [row.get(key) for row in rows] for key in keys}
    if messages:
        columns["messages"] = messages
    columns["completion_ids"] = completion_ids
    return columns


def with_environment(scores: Scores, rollouts: Rollouts) -> Scores:
    """An episode's reward: the functions' total plus the environment's own reward (logged as
    reward/environment), times its turn discount. Single-turn scores pass unchanged."""
    if rollouts.env_reward is None:
        return scores
    given = ~rollouts.env_reward.isnan()
    total = torch.where(given, scores.total.nan_to_num(0.0) + rollouts.env_reward, scores.total)
    components = {**scores.components, "environment": rollouts.env_reward} if given.any() else scores.components
    return replace(scores, total=total * rollouts.reward_scale, components=components)


class RewardSet:
    """The configured reward functions, started once, applied to every batch. Close it (or use
    it as a context manager) to stop the worker processes."""

    def __init__(self, reward_cfg: RewardConfig, tokenizer=None):
        self.specs = list(reward_cfg.functions)
        self.names = display_names([spec.name for spec in self.specs])
        self.correct_above = reward_cfg.correct_above
        self.gates = gates(self.specs)  # validation has worded any problem already
        self.weights = {name: spec.weight for name, spec in zip(self.names, self.specs)}
        pairs = [(spec.name, dict(spec.kwargs)) for spec in self.specs]
        local = {i: build(*pair) for i, pair in enumerate(pairs) if reward_cfg.workers == 0 or pair[0] in IN_PROCESS}
        self.local = LocalRewards(local)
        pooled = [None if i in local else pair for i, pair in enumerate(pairs)]
        self.workers = (RewardWorkers(pooled, reward_cfg.workers, reward_cfg.timeout, reward_cfg.rows_per_call)
                        if any(p is not None for p in pooled) else None)
        self.reports: dict[str, CallReport] = {}
        self.first_errors: dict[str, str] = {}
        # Step rewards (process supervision) need the tokenizer: steps are found on token ids.
        self.process = None if reward_cfg.process is None else ProcessScorer(reward_cfg.process, tokenizer)

    def call(self, index: int, prompts: list[str], completions: list[str], columns: dict) -> CallReport:
        runner = self.local if index in self.local.functions else self.workers
        report = runner.run(index, prompts, completions, columns)
        name = self.names[index]
        if report.first_error and name not in self.first_errors:
            self.first_errors[name] = report.first_error
            from grpo_cli.metrics import console

            console.print(f"[yellow]warning:[/] reward {name} failed on {report.errors} of {len(completions)} "
                          f"completions (their reward is None): {report.first_error}")
        self.reports[name] = report
        return report

    def score_texts(self, prompts: list[str], completions: list[str], columns: dict) -> Scores:
        """Every function on N completions; None (no opinion, or failed) becomes NaN; gated
        functions count only where their gate is open."""
        values: dict[str, torch.Tensor] = {}
        failed: dict[str, torch.Tensor] = {}
        for index, name in enumerate(self.names):
            report = self.call(index, prompts, completions, columns)
            values[name] = torch.tensor([math.nan if v is None else v for v in report.values], dtype=torch.float64)
            failed[name] = torch.zeros(len(completions), dtype=torch.bool)
            failed[name][report.failed_rows] = True
        values, gate_open = self.apply_gates(values)
        total = torch.zeros(len(completions), dtype=torch.float64)
        opinions = torch.zeros(len(completions), dtype=torch.bool)
        for name, spec in zip(self.names, self.specs):
            known = ~torch.isnan(values[name])
            total += torch.where(known, spec.weight * values[name], torch.zeros_like(values[name]))
            opinions |= known
        total = torch.where(opinions, total, torch.full_like(total, math.nan)).float()
        components = {name: column.float() for name, column in values.items()}
        first = components[self.names[0]]
        return Scores(total=total, components=components, correct=first > self.correct_above, failed=failed,
                      gate_open=gate_open)

    def apply_gates(self, values: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """A gated function keeps its value where its gate function reaches the threshold, is 0
        where it does not, and NaN where the gate function has no opinion. Returns the values
        and, per gated function, [N] bool where its gate was open."""
        gated, gate_open = dict(values), {}
        for name, gate in zip(self.names, self.gates):
            if gate is None:
                continue
            opener = values[self.names[gate[0]]]
            gate_open[name] = opener >= gate[1]
            closed = torch.where(torch.isnan(opener), torch.full_like(opener, math.nan), torch.zeros_like(opener))
            gated[name] = torch.where(gate_open[name], values[name], closed)
        return gated, gate_open

    def score(self, batch: PromptBatch, rollouts: Rollouts, steps: bool = True) -> Scores:
        """Score a generation batch; `steps=False` skips the process reward (evaluation needs
        only the outcome)."""
        index = rollouts.group_ids.tolist()
        prompts = [batch.prompts[i] for i in index]
        columns = reward_columns([batch.examples[i] for i in index], rollouts.model_token_ids(),
                                 [batch.messages[i] for i in index] if batch.messages else None)
        scores = with_environment(self.score_texts(prompts, rollouts.completions, columns), rollouts)
        if steps and self.process is not None:
            scores.step_ends, scores.step_rewards = self.process(prompts, columns.pop("completion_ids"), columns)
        return scores

    def close(self) -> None:
        if self.workers is not None:
            self.workers.close()
            self.workers = None

    def __enter__(self) -> "RewardSet":
        return self

    def __exit__(self, *_) -> None:
        self.close()
