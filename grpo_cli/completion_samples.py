"""Completion samples: what the model wrote at a step, with what the loss made of it.

trainer.log_samples prompts of a step (every trainer.log_samples_every steps and at every
evaluation), each with its K completions, its reward and each reward function's value, its
advantage, length and whether it was truncated, as TRL's completions table shows them, with
the whole prompt and the user's question in it. They go to samples/step_N.jsonl in the run
folder (one object per completion), to the loggers of trainer.report_to as a table, and to the
console as a short table of the first prompt, headed by its question.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import torch
from rich.table import Table

from grpo_cli.data import PromptSet
from grpo_cli.run_folder.layout import SAMPLES_DIR
from grpo_cli.types import Rollouts, Scores

CONSOLE_TEXT = 48  # characters of a completion or prompt in the console table


def _number(value: float) -> float | None:
    return value if math.isfinite(value) else None


def sample_rows(tokenizer, source: PromptSet, rollouts: Rollouts, scores: Scores, advantages: torch.Tensor,
                loss_mask: torch.Tensor, prompts: int, step: int) -> list[dict]:
    """One dict per completion of the first `prompts` groups of the trained rows.

    source: the prompts they were sampled for, which say what the user asked (the question:
    a chat prompt starts with the template's system prompt). rollouts, scores: the N rows the
    loss saw; advantages, loss_mask: [N, C] as the loss used them. advantage is the mean over
    the completion's loss tokens (the one value of every token for outcome rewards; process
    rewards differ per token)."""
    groups = rollouts.group_ids.unique()[:prompts]
    tokens = loss_mask.sum(-1)
    mean_advantage = (advantages * loss_mask).sum(-1) / tokens.clamp(min=1)
    rows = []
    for i in torch.isin(rollouts.group_ids, groups).nonzero().flatten().tolist():
        prompt = rollouts.prompt_ids[i][rollouts.prompt_mask[i].bool()].tolist()
        text = tokenizer.decode(prompt, skip_special_tokens=True)
        rows.append({
            "step": step,
            "group": int(rollouts.group_ids[i]),
            "prompt": text,
            "question": source.question(prompt) or text,
            "completion": rollouts.completions[i],
            "reward": _number(float(scores.total[i])),
            "rewards": {name: _number(float(values[i])) for name, values in scores.components.items()},
            "correct": None if scores.correct is None else bool(scores.correct[i]),
            "advantage": float(mean_advantage[i]),
            "length": int(rollouts.completion_lengths[i]),
            "truncated": bool(rollouts.truncated[i]),
            "policy_version": int(rollouts.policy_version[i]),
        })
    return rows


def write_samples(run_dir: Path, step: int, rows: list[dict]) -> Path:
    """samples/step_N.jsonl, written beside and renamed: never half a file."""
    folder = run_dir / SAMPLES_DIR
    folder.mkdir(exist_ok=True)
    path = folder / f"step_{step}.jsonl"
    partial = path.with_suffix(".partial")
    partial.write_text("".join(json.dumps(row) + "\n" for row in rows))
    os.replace(partial, path)
    return path


def samples_table(rows: list[dict]) -> Table:
    """The first prompt's completions, one line each, within 80 columns."""
    first = [row for row in rows if row["group"] == rows[0]["group"]]
    prompt = " ".join(first[0]["question"].split())
    table = Table(title=f"step {first[0]['step']}: {prompt[:CONSOLE_TEXT]}", title_justify="left")
    table.add_column("completion", no_wrap=True, max_width=CONSOLE_TEXT, overflow="ellipsis")
    for column in ("reward", "adv", "len", "cut"):
        table.add_column(column, justify="right", no_wrap=True, min_width=len(column))
    for row in first:
        reward = "–" if row["reward"] is None else f"{row['reward']:.2f}"
        table.add_row(" ".join(row["completion"].split()), reward, f"{row['advantage']:+.2f}", str(row["length"]),
                      "yes" if row["truncated"] else "")
    return table
