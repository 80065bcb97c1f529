"""Text feedback instead of a scalar: a wrong final answer gets a critique and another attempt.

The reward is the configured reward on the last attempt (discounted by
environment.turn_discount per extra turn), so the model learns both to answer right at once and
to use the critique. The check of each attempt is a reward function by name (a built-in or a
user's `file.py:function`): correct when its value exceeds `correct_above`. The critique is a
template over the row's columns and `{attempt}` (the model's last turn), or a user function
`critic(row, attempt) -> str`.
"""

from __future__ import annotations

import functools

from grpo_cli.environments.base import Observation
from grpo_cli.rewards.catalog import build, is_user_path, load_user_function

CRITIQUE = "Not right. Try again."


@functools.lru_cache(maxsize=None)
def _function(name: str):
    """A reward or critic by name, built once per process (the environment pickles by name)."""
    return load_user_function(name) if is_user_path(name) else build(name, {})


class Feedback:
    def __init__(self, check: str = "final_answer", correct_above: float = 0.5, critique: str = CRITIQUE,
                 critic: str | None = None):
        self.check = check
        self.correct_above = correct_above
        self.critique = critique
        self.critic = critic
        _function(check)  # a wrong name fails when the run starts
        if critic:
            _function(critic)
        self.row: dict = {}

    def reset(self, row: dict) -> None:
        self.row = row
        return None

    def step(self, messages: list[dict]) -> Observation:
        attempt = messages[-1]["content"]
        value = _function(self.check)([""], [attempt], **{key: [value] for key, value in self.row.items()})[0]
        if value is not None and value > self.correct_above:
            return Observation(done=True)
        if self.critic:
            text = _function(self.critic)(self.row, attempt)
        else:
            text = self.critique.format_map({**self.row, "attempt": attempt})
        return Observation(messages=[{"role": "user", "content": text}])
