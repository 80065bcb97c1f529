"""Typed hand-offs between the stages of one training step (docs/design.md §2).

Shapes use N for completions in the batch (prompts x group size), P for the left-padded
prompt width and C for the right-padded completion width. Every per-token tensor of a
completion is [N, C] and aligned with `completion_ids`.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace
from typing import Any

import torch
import torch.nn.functional as F


def pad_cat(tensors: list[torch.Tensor], value: float, left: bool = False) -> torch.Tensor:
    """Concatenate along dim 0, padding dim 1 (if any) to the widest with `value`."""
    if tensors[0].dim() == 1:
        return torch.cat(tensors)
    width = max(t.shape[1] for t in tensors)
    pads = [(width - t.shape[1], 0) if left else (0, width - t.shape[1]) for t in tensors]
    return torch.cat([F.pad(t, pad, value=value) for t, pad in zip(tensors, pads)])


def left_pad(rows: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Token-id lists -> ([B, P] ids, [B, P] mask), padded on the left."""
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        ids[i, width - len(row):] = torch.tensor(row, dtype=torch.long)
        mask[i, width - len(row):] = 1
    return ids, mask


def renumber(group_ids: torch.Tensor) -> torch.Tensor:
    """[N] group ids mapped onto 0..B-1 in their sorted order (after rows were removed)."""
    return torch.unique(group_ids, return_inverse=True)[1]


@dataclass
class PromptBatch:
    """Prompts for one generation round.

    prompt_ids: list of B token-id lists (unpadded, as the tokenizer produced them).
    prompts: list of B prompt strings (rendered, for reward functions that want the text).
    examples: list of B raw data rows (answer and any other columns).
    messages: list of B chat message lists the prompts were rendered from (for reward models
              that apply their own chat template); empty when unknown.
    """

    prompt_ids: list[list[int]]
    prompts: list[str]
    examples: list[dict[str, Any]]
    messages: list[list[dict]] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.prompt_ids)


@dataclass
class Rollouts:
    """What the sampler produced: n completions for each of B prompts, N = B * n.

    prompt_ids:       [N, P] left-padded with the pad id.
    prompt_mask:      [N, P] 1 on real prompt tokens.
    completion_ids:   [N, C] right-padded; includes the EOS token when one was generated.
    completion_mask:  [N, C] 1 on generated tokens up to and including the first EOS.
    sampler_logprobs: [N, C] log-probs the sampler reported for the tokens it drew, at the
                      sampling temperature over the full vocabulary, or over what top-p /
                      top-k kept when they are on (0 on padding).
    truncated:        [N] bool, True when the completion hit the length limit (no EOS).
    group_ids:        [N] long, index of the prompt within the batch (0..B-1).
    completions:      N decoded completion strings (special tokens stripped); of an episode,
                      its last model turn (the final answer).
    policy_version:   [N] long, the learner step whose weights generated each row.

    Episodes with an environment (environments/runner.py; None for single-turn generation):
    the completion holds every turn after the prompt, and completion_mask is 1 on the tokens
    the model drew only.
    env_mask:         [N, C] 1 on the environment's tokens (attended to, never trained).
    turns:            [N] long, model turns in the episode.
    env_reward:       [N] float, the environment's summed reward (NaN: none given).
    reward_scale:     [N] float, what the episode's reward is multiplied by (turn discount).
    env_failed:       [N] bool, the environment's step raised (the episode ended there).
    tool_stats:       [N, 3] long, tool calls, failed calls and timed-out calls (None without tools).
    """

    prompt_ids: torch.Tensor
    prompt_mask: torch.Tensor
    completion_ids: torch.Tensor
    completion_mask: torch.Tensor
    sampler_logprobs: torch.Tensor
    truncated: torch.Tensor
    group_ids: torch.Tensor
    completions: list[str]
    policy_version: torch.Tensor
    env_mask: torch.Tensor | None = None
    turns: torch.Tensor | None = None
    env_reward: torch.Tensor | None = None
    reward_scale: torch.Tensor | None = None
    env_failed: torch.Tensor | None = None
    tool_stats: torch.Tensor | None = None

    @property
    def attention(self) -> torch.Tensor:
        """[N, C] 1 on every real completion token, the model's and the environment's."""
        return self.completion_mask if self.env_mask is None else self.completion_mask | self.env_mask

    def model_token_ids(self) -> list[list[int]]:
        """Per completion, the ids the model drew (every turn's, in order)."""
        return [ids[mask.bool()].tolist() for ids, mask in zip(self.completion_ids, self.completion_mask)]

    @property
    def completion_lengths(self) -> torch.Tensor:
        """[N] number of loss-bearing tokens |o_i| (docs/algorithms.md §1.1)."""
        return self.completion_mask.sum(-1)

    @property
    def num_groups(self) -> int:
        return int(self.group_ids.max()) + 1 if self.group_ids.numel() else 0

    def select(self, index: torch.Tensor) -> "Rollouts":
        """Rows `index` (long or bool), group ids renumbered onto 0..B'-1."""
        index = index.nonzero().squeeze(-1) if index.dtype == torch.bool else index
        tensors = {f.name: getattr(self, f.name)[index] for f in fields(self)
                   if isinstance(getattr(self, f.name), torch.Tensor)}
        tensors["group_ids"] = renumber(tensors["group_ids"])
        return replace(self, **tensors, completions=[self.completions[i] for i in index.tolist()])

    @staticmethod
    def cat(parts: list["Rollouts"]) -> "Rollouts":
        """Rollouts of several generation rounds as one batch; group ids stay distinct.
        New padding holds token 0: padded positions are masked everywhere downstream."""
        offsets = torch.tensor([0] + [p.num_groups for p in parts]).cumsum(0)
        return Rollouts(
            prompt_ids=pad_cat([p.prompt_ids for p in parts], 0, left=True),
            prompt_mask=pad_cat([p.prompt_mask for p in parts], 0, left=True),
            completion_ids=pad_cat([p.completion_ids for p in parts], 0),
            completion_mask=pad_cat([p.completion_mask for p in parts], 0),
            sampler_logprobs=pad_cat([p.sampler_logprobs for p in parts], 0.0),
            truncated=torch.cat([p.truncated for p in parts]),
            group_ids=torch.cat([p.group_ids + offsets[i] for i, p in enumerate(parts)]),
            completions=[text for p in parts for text in p.completions],
            policy_version=torch.cat([p.policy_version for p in parts]),
            **{name: None if getattr(parts[0], name) is None else pad_cat([getattr(p, name) for p in parts], 0)
               for name in ("env_mask", "turns", "env_reward", "reward_scale", "env_failed", "tool_stats")},
        )


@dataclass
class Scores:
    """Rewards for N completions.

    total:        [N] float, the weighted sum of the reward functions; NaN where a function
                  had no opinion (None) so the advantage stage can exclude it.
    components:   name -> [N] float, each reward function's own (unweighted) values.
    correct:      [N] bool, task correctness where the reward defines it (for accuracy).
    step_ends:    [N, S] long, completion token index of each step's last token, -1 padding
                  (process supervision only, else None).
    step_rewards: [N, S] float, the process reward of each step, NaN padding or no opinion.
    failed:       name -> [N] bool, the function raised or timed out on that completion.
    gate_open:    name -> [N] bool, for each gated function: where its gate was open.
    """

    total: torch.Tensor
    components: dict[str, torch.Tensor] = field(default_factory=dict)
    correct: torch.Tensor | None = None
    step_ends: torch.Tensor | None = None
    step_rewards: torch.Tensor | None = None
    failed: dict[str, torch.Tensor] = field(default_factory=dict)
    gate_open: dict[str, torch.Tensor] = field(default_factory=dict)

    def select(self, index: torch.Tensor) -> "Scores":
        """Rows `index` of every per-completion field."""
        return self._map(lambda t: t[index])

    @staticmethod
    def cat(parts: list["Scores"]) -> "Scores":
        """Scores of several generation rounds, in order; per-step fields padded (-1 / NaN)."""
        pad = lambda ts: pad_cat(ts, -1 if ts[0].dtype == torch.long else float("nan"))  # noqa: E731
        out = {}
        for f in fields(Scores):
            values = [getattr(p, f.name) for p in parts]
            if values[0] is None:
                out[f.name] = None
            elif isinstance(values[0], torch.Tensor):
                out[f.name] = pad(values)
            elif isinstance(values[0], dict):
                out[f.name] = {key: torch.cat([v[key] for v in values]) for key in values[0]}
            else:
                out[f.name] = values[0]
        return Scores(**out)

    def _map(self, fn) -> "Scores":
        out = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, torch.Tensor):
                value = fn(value)
            elif isinstance(value, dict):
                value = {key: fn(v) for key, v in value.items()}
            out[f.name] = value
        return Scores(**out)


@dataclass
class Sequences:
    """Prompt plus completion token rows as the learner reads them, N sequences.

    input_ids:        [N, P + C] prompt (left-padded) followed by completion (right-padded).
    attention_mask:   [N, P + C]
    loss_mask:        [N, C] float, 1 on loss-bearing completion tokens.
    sampler_logprobs: [N, C] what the sampler reported (zeros where there was no sampler).
    policy_lag:       [N] long, policy versions between the weights that sampled a row and the
                      learner's (asynchronous generation only, else None).

    Every further [N, C] field of a subclass is cut and selected the same way.
    """

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    loss_mask: torch.Tensor
    sampler_logprobs: torch.Tensor
    policy_lag: torch.Tensor | None = field(default=None, kw_only=True)

    @classmethod
    def from_rollouts(cls, rollouts: Rollouts, overlong_filter: bool = False) -> "Sequences":
        """Prompt and completion side by side. With `overlong_filter` (docs/algorithms.md §4.3) a truncated
        completion has no loss-bearing token."""
        loss_mask = rollouts.completion_mask.float()
        if overlong_filter:
            loss_mask = loss_mask * ~rollouts.truncated[:, None]
        return cls(input_ids=torch.cat([rollouts.prompt_ids, rollouts.completion_ids], dim=1),
                   attention_mask=torch.cat([rollouts.prompt_mask, rollouts.attention], dim=1),
                   loss_mask=loss_mask, sampler_logprobs=rollouts.sampler_logprobs)

    def __len__(self) -> int:
        return self.input_ids.shape[0]

    @property
    def completion_width(self) -> int:
        return self.loss_mask.shape[1]

    def _per_token(self) -> dict[str, torch.Tensor]:
        """The per-row fields that are set (everything but input_ids and attention_mask): [N, C],
        and policy_lag [N]."""
        return {f.name: getattr(self, f.name) for f in fields(self)
                if f.name not in ("input_ids", "attention_mask") and getattr(self, f.name) is not None}

    def trimmed(self):
        """The same rows without columns that are padding in every row: left of the prompts and
        right of the completions. Completion column 0 stays column 0, so per-token results
        of a trimmed batch fill the first columns of the untrimmed [N, C] layout."""
        prompt_width = self.input_ids.shape[1] - self.completion_width
        real = self.attention_mask.bool().any(0)
        left = int(real[:prompt_width].float().argmax()) if real[:prompt_width].any() else prompt_width
        width = int(real[prompt_width:].nonzero().max()) + 1 if real[prompt_width:].any() else 1
        return replace(self, input_ids=self.input_ids[:, left:prompt_width + width],
                       attention_mask=self.attention_mask[:, left:prompt_width + width],
                       **{name: t[:, :width] if t.dim() == 2 else t for name, t in self._per_token().items()})

    def select(self, index: torch.Tensor):
        """Rows `index` of every tensor (mini- and micro-batching)."""
        return replace(self, input_ids=self.input_ids[index], attention_mask=self.attention_mask[index],
                       **{name: t[index] for name, t in self._per_token().items()})

    def to(self, device: torch.device):
        return replace(self, input_ids=self.input_ids.to(device), attention_mask=self.attention_mask.to(device),
                       **{name: t.to(device) for name, t in self._per_token().items()})

    def muted(self):
        """The same rows with no loss-bearing token: a micro-batch that only keeps FSDP's
        collectives in step."""
        return replace(self, **{name: torch.zeros_like(t) for name, t in self._per_token().items()
                                if name in ("loss_mask", "advantages")})


@dataclass
class BatchLogprobs:
    """Log-probs computed before the update, without gradient.

    old_logprobs: [N, C] the policy before this step's updates, or None when μ = 1 with one
                  mini-batch and the KL is not in the reward (the ratio is then exactly 1).
    ref_logprobs: [N, C] the frozen reference, or None when the objective needs none.
    """

    old_logprobs: torch.Tensor | None = None
    ref_logprobs: torch.Tensor | None = None


@dataclass
class TrainBatch(Sequences):
    """Everything the learner needs for the update, N sequences: the Sequences and

    advantages:       [N, C] per-token advantages, already multiplied by loss_mask.
    old_logprobs:     [N, C] or None (see BatchLogprobs).
    ref_logprobs:     [N, C] or None.
    """

    advantages: torch.Tensor
    old_logprobs: torch.Tensor | None = None
    ref_logprobs: torch.Tensor | None = None

    @classmethod
    def assemble(cls, sequences: Sequences, advantages: torch.Tensor, logprobs: BatchLogprobs) -> "TrainBatch":
        return cls(**{f.name: getattr(sequences, f.name) for f in fields(Sequences)}, advantages=advantages,
                   old_logprobs=logprobs.old_logprobs, ref_logprobs=logprobs.ref_logprobs)
