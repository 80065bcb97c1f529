"""Text feedback instead of a scalar: a wrong final answer gets a critique and another attempt.

The reward is the configured reward on the last attempt (discounted by
environment.turn_discount per extra turn), so the model learns both to answer right at once and
to use the critique. The check of each attempt is a reward function by name (a built-in or a
user's `file.py:function`): correct when its value exceeds `correct_above`. The critique is a
template over the row's columns and `{attempt}` (the model's last turn), or a user function
`critic(row, attempt) -> str`.
"""

from __future__ import annotations

from grpo_cli.environments.base import Observation
from grpo_cli.rewards.catalog import build, is_user_path, load_user_function

CRITIQUE = "Not right. Try again."


class Feedback:
    def __init__(self, check: str = "final_answer", correct_above: float = 0.5, critique: str = CRITIQUE,
                 critic: str | None = None):
        self.check = build(check, {})
        self.correct_above = correct_above
        self.critique = critique
        self.critic = load_user_function(critic) if critic and is_user_path(critic) else None
        self.row: dict = {}

    def reset(self, row: dict) -> None:
        self.row = row
        return None

    def step(self, messages: list[dict]) -> Observation:
        attempt = messages[-1]["content"]
        value = self.check([""], [attempt], **{key: [value] for key, value in self.row.items()})[0]
        if value is not None and value > self.correct_above:
            return Observation(done=True)
        text = self.critic(self.row, attempt) if self.critic else self.critique.format_map({**self.row, "attempt": attempt})
        return Observation(messages=[{"role": "user", "content": text}])
