"""The exceptions the command line turns into a one-line message and an exit status.

Any layer may raise them; none imports anything, so every room can.
"""

from __future__ import annotations


class UserError(Exception):
    """Bad input from the user: the message names the problem and the fix, in one line (exit 2)."""


class ConfigError(UserError):
    """A bad configuration value or key."""


class RunStopped(Exception):
    """The run stopped early on purpose; `exit_code` is what the command returns."""

    def __init__(self, message: str, exit_code: int):
        super().__init__(message)
        self.exit_code = exit_code


def one_line(error: BaseException) -> str:
    """A library's message, which may span lines, as one line (every sentence of it kept)."""
    return " ".join(str(error).split())
