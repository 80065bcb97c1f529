"""Reward calls isolated in worker processes, each call under a time limit.

A reward that raises or hangs must cost only the completions it failed on, never the run.
Sync functions are called on chunks of `rows_per_call` rows; a chunk that raises, overruns
`timeout` (pebble kills that worker and starts a fresh one) or returns something that is not
one number or None per row is retried row by row, so a failure lands on the rows that cause
it. Async functions get one row per call, all rows of a batch awaited concurrently in one
worker's event loop, each under the same limit. `workers=0` calls in the trainer's process,
without a time limit, for debugging.
"""

from __future__ import annotations

import asyncio
import inspect
import math
import multiprocessing
import signal
import time
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field
from typing import Callable

from grpo_cli.rewards.catalog import build, is_user_path

_FUNCTIONS: list[Callable] = []  # built once per worker by _start


@dataclass
class CallReport:
    """One function over one batch: values per row (None = no opinion or failed)."""

    values: list[float | None]
    failed_rows: list[int] = field(default_factory=list)
    first_error: str | None = None
    call_seconds: list[float] = field(default_factory=list)

    @property
    def errors(self) -> int:
        return len(self.failed_rows)

    def fail(self, row: int, message: str) -> None:
        self.values[row] = None
        self.failed_rows.append(row)
        self.first_error = self.first_error or message

    def fill(self, rows: range, values: list, errors: list) -> None:
        """Results of one call on `rows`: a value, or the error that cost that row its value."""
        for row, value, error in zip(rows, values, errors):
            self.values[row] = value
            if error is not None:
                self.fail(row, error)


def describe(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0]}" if text else type(error).__name__


def checked(values, rows: int) -> list[float | None]:
    """The function's answer as floats or None; TypeError / ValueError for anything else."""
    if isinstance(values, (str, bytes)) or not hasattr(values, "__len__"):
        raise TypeError(f"returned {type(values).__name__}, not a list of {rows} floats or None")
    if len(values) != rows:
        raise ValueError(f"returned {len(values)} values for {rows} completions")
    out = []
    for value in values:
        if value is not None and not isinstance(value, (int, float)) and not hasattr(value, "item"):
            raise TypeError(f"returned a {type(value).__name__}; give floats or None")
        if value is not None and math.isinf(float(value)):
            raise ValueError("returned an infinite value; give a finite float, or None for no opinion")
        out.append(None if value is None or math.isnan(float(value)) else float(value))
    return out


def exited(exit_: SystemExit) -> RuntimeError:
    """The user's function called sys.exit(): that call's failure, not the trainer's exit."""
    return RuntimeError(f"the reward function called sys.exit({exit_.code})")


def call_rows(function: Callable, prompts: list, completions: list, columns: dict, timeout: float | None):
    """Call on these rows; returns (values, errors per row). Async: one row per coroutine."""
    if not inspect.iscoroutinefunction(function):
        try:
            values = function(prompts, completions, **columns)
        except SystemExit as exit_:
            raise exited(exit_) from None
        return checked(values, len(completions)), [None] * len(completions)

    async def guarded(row: int):
        single = {key: [value[row]] for key, value in columns.items()}
        try:  # inside the task wait_for makes: asyncio would let a SystemExit end the loop
            return await function([prompts[row]], [completions[row]], **single)
        except SystemExit as exit_:
            raise exited(exit_) from None

    async def one(row: int):
        return checked(await asyncio.wait_for(guarded(row), timeout), 1)[0]

    async def every():
        return await asyncio.gather(*(one(row) for row in range(len(completions))), return_exceptions=True)

    outcomes = asyncio.run(every())
    values = [None if isinstance(o, BaseException) else o for o in outcomes]
    errors = [describe(o) if isinstance(o, BaseException) else None for o in outcomes]
    errors = [f"timed out after {timeout:g}s" if e == "TimeoutError" else e for e in errors]
    return values, errors


def worker_context():
    """How worker processes start, for the reward and the environment pools alike. forkserver,
    not fork: the trainer holds torch threads (and maybe CUDA), which a fork would copy
    half-alive. The server preloads this module, so a worker that replaces a killed one starts
    in milliseconds instead of re-importing everything."""
    if "forkserver" in multiprocessing.get_all_start_methods():
        context = multiprocessing.get_context("forkserver")
        context.set_forkserver_preload(["grpo_cli.rewards.workers"])
        return context
    return multiprocessing.get_context("spawn")  # Windows


def _start(specs: list[tuple[str, dict] | None]) -> None:
    """Worker initialiser; None marks a function that runs in the trainer's process."""
    global _FUNCTIONS
    # Ctrl-C reaches the whole process group; the trainer decides when to stop, not a worker.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _FUNCTIONS = [None if spec is None else build(*spec) for spec in specs]


def _call(index: int, prompts: list, completions: list, columns: dict, timeout: float | None):
    started = time.perf_counter()
    values, errors = call_rows(_FUNCTIONS[index], prompts, completions, columns, timeout)
    return values, errors, time.perf_counter() - started


def _rows(columns: dict, rows: range) -> dict:
    return {key: value[rows.start:rows.stop] for key, value in columns.items()}


class RewardWorkers:
    """A pool of processes that each hold every configured pool-side reward function."""

    def __init__(self, specs: list[tuple[str, dict] | None], workers: int, timeout: float, rows_per_call: int):
        from pebble import ProcessPool

        self.timeout, self.rows_per_call = timeout, rows_per_call
        # Only user functions can be async; building one here imports the user's module once.
        self.is_async = [spec is not None and is_user_path(spec[0]) and inspect.iscoroutinefunction(build(*spec))
                         for spec in specs]
        self.pool = ProcessPool(max_workers=workers, initializer=_start, initargs=(specs,), context=worker_context())

    def run(self, index: int, prompts: list, completions: list, columns: dict) -> CallReport:
        report = CallReport(values=[None] * len(completions))
        size = len(completions) if self.is_async[index] else self.rows_per_call
        chunks = [range(s, min(s + size, len(completions))) for s in range(0, len(completions), size)]
        retry = self._collect(index, chunks, prompts, completions, columns, report)
        self._collect(index, [range(r, r + 1) for chunk in retry for r in chunk], prompts, completions, columns, report)
        return report

    def _collect(self, index, chunks, prompts, completions, columns, report: CallReport) -> list[range]:
        """Run the chunks; fill the report; return the chunks of several rows that failed as a
        whole (a single row's failure is recorded on it)."""
        # Async rows carry their own limit; the process limit only catches a blocked event loop.
        limit = 2 * self.timeout + 1 if self.is_async[index] else self.timeout
        futures = [(chunk, self.pool.schedule(_call, args=(index, prompts[chunk.start:chunk.stop],
                                                           completions[chunk.start:chunk.stop],
                                                           _rows(columns, chunk), self.timeout), timeout=limit))
                   for chunk in chunks]
        failed = []
        for chunk, future in futures:
            try:
                values, errors, seconds = future.result()
            except FutureTimeout:
                message = f"timed out after {self.timeout:g}s (reward.timeout)"
            except Exception as error:  # whatever the user's function raised, or a dead worker
                message = describe(error)
            else:
                report.call_seconds.append(seconds)
                report.fill(chunk, values, errors)
                continue
            if len(chunk) == 1:
                report.fail(chunk.start, message)
            else:
                failed.append(chunk)
        return failed

    def close(self) -> None:
        self.pool.stop()
        self.pool.join()


class LocalRewards:
    """The same contract in the trainer's process: no time limit, failures still per row."""

    def __init__(self, functions: dict[int, Callable]):
        self.functions = functions

    def run(self, index: int, prompts: list, completions: list, columns: dict) -> CallReport:
        report = CallReport(values=[None] * len(completions))
        function = self.functions[index]
        started = time.perf_counter()
        try:
            report.fill(range(len(completions)), *call_rows(function, prompts, completions, columns, None))
        except Exception:  # retried row by row below, so the error lands on its rows
            for row in range(len(completions)):
                one = range(row, row + 1)
                try:
                    report.fill(one, *call_rows(function, prompts[row:row + 1], completions[row:row + 1],
                                                _rows(columns, one), None))
                except Exception as error:  # the user's function: any exception is that row's failure
                    report.fail(row, describe(error))
        report.call_seconds.append(time.perf_counter() - started)
        return report
