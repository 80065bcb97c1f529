"""The environment API: what answers the model between its turns.

A TRL or verl user knows the shape: one object per episode, `reset(row)` when the episode
starts and `step(messages)` after each model turn. `messages` is the whole conversation so far
(the prompt's messages, then alternating assistant and environment turns, the model's latest
turn last); `step` returns what the environment says next, an optional reward, and whether the
episode is over. The K episodes of a prompt must start from the same messages: they are a group.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol


@dataclass
class Observation:
    """What an environment answers a model turn with.

    messages: chat messages appended after the model's turn (role user or tool); empty when done.
    reward:   added to the episode's environment reward (None: no opinion this turn).
    done:     the episode ends here; the model's last turn is its final answer.
    """

    messages: list[dict] = field(default_factory=list)
    reward: float | None = None
    done: bool = False


class Environment(Protocol):
    def reset(self, row: dict) -> list[dict] | None:
        """Start an episode on a data row; its first messages, or None for the row's own prompt."""

    def step(self, messages: list[dict]) -> Observation:
        """The conversation so far, the model's turn last -> the environment's answer."""


class SingleTurn:
    """Nobody answers: one model turn per episode (plain GRPO)."""

    def __init__(self, **_):
        pass

    def reset(self, row: dict) -> None:
        return None

    def step(self, messages: list[dict]) -> Observation:
        return Observation(done=True)
