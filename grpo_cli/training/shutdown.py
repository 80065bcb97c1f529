"""Stopping a run without losing it: SIGINT / SIGTERM finish the step, save and exit.

The first signal only raises a flag, read between steps, so a checkpoint is never written
from inside a half-done update; a second one stops at once (KeyboardInterrupt), for a user who
cannot wait for the step to end.
"""

from __future__ import annotations

import signal


class StopRequest:
    """Context manager: `received` names the first SIGINT / SIGTERM, or is None."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self):
        self.received: signal.Signals | None = None
        self.previous: dict = {}

    def __enter__(self) -> "StopRequest":
        for sig in self.SIGNALS:
            self.previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame) -> None:
        if self.received is not None:
            self._restore()
            raise KeyboardInterrupt
        self.received = signal.Signals(signum)

    def _restore(self) -> None:
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)
        self.previous = {}

    def __exit__(self, *_) -> None:
        self._restore()
