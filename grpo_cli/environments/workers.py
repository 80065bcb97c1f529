"""Environment steps and tool calls in worker processes, each under its time limit.

An environment is user code: a reset or step that raises, hangs or ends its process must cost
its episode, never the run. Each live episode's environment object travels to a worker with the
conversation, takes its step there and travels back with its new state (so it must pickle);
pebble kills a worker that overruns the limit and starts a fresh one. `environment.workers=0`
steps in the trainer's process, without a time limit, for a debugger. A tool call
(tools.call_tool) is its own task under environment.tool_timeout, so a tool that hangs costs its
call, not the step.
"""

from __future__ import annotations

import signal
from concurrent.futures import TimeoutError as FutureTimeout

from grpo_cli.environments.base import Observation
from grpo_cli.environments.tools import ERROR, TIMEOUT, ToolCall, call_tool, tool_function
from grpo_cli.rewards.catalog import is_user_path, load_user_function
from grpo_cli.rewards.workers import describe, worker_context

Outcome = tuple[object, Observation | None, str | None]  # (the environment after the call, its answer, the error)


def _call(env, method: str, argument) -> tuple[object, object, str | None]:
    try:
        return env, getattr(env, method)(argument), None
    except SystemExit as exit_:
        return env, None, f"{method} called sys.exit({exit_.code})"
    except Exception as error:  # user code fails in its own ways
        return env, None, f"{method}: {describe(error)}"


def take_step(env, messages: list[dict]) -> Outcome:
    """One step, its failure named; in a worker or in the trainer's process."""
    env, observation, error = _call(env, "step", messages)
    if error is None and not isinstance(observation, Observation):
        error = f"step returned {type(observation).__name__}, not an Observation"
    return env, observation if error is None else None, error


def take_reset(env, row: dict) -> Outcome:
    env, _, error = _call(env, "reset", row)
    return env, None, error


def _start(name: str, tools: tuple[str, ...]) -> None:
    """Worker initialiser: a user's modules are imported under the names the trainer gave them,
    so its environment objects unpickle here and its tools are found by name."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the trainer decides when to stop
    if is_user_path(name):
        load_user_function(name)
    for tool in tools:
        tool_function(tool)


class LocalSteps:
    def step(self, envs: list, histories: list[list[dict]]) -> list[Outcome]:
        return [take_step(env, messages) for env, messages in zip(envs, histories)]

    def reset(self, envs: list, rows: list[dict]) -> list[Outcome]:
        return [take_reset(env, row) for env, row in zip(envs, rows)]

    def call(self, calls: list[ToolCall], max_chars: int) -> list[tuple[str, str]]:
        return [call_tool(call.tool, call.arguments, max_chars) for call in calls]

    def close(self) -> None:
        """Nothing runs beside the trainer."""


class StepWorkers:
    def __init__(self, name: str, workers: int, timeout: float, tools: tuple[str, ...] = (), tool_timeout: float = 10.0):
        from pebble import ProcessPool

        self.timeout, self.tool_timeout = timeout, tool_timeout
        self.pool = ProcessPool(max_workers=workers, initializer=_start, initargs=(name, tools),
                                context=worker_context())

    def call(self, calls: list[ToolCall], max_chars: int) -> list[tuple[str, str]]:
        """Each call's (text, status), all calls at once, each under environment.tool_timeout."""
        futures = [self.pool.schedule(call_tool, args=(call.tool, call.arguments, max_chars), timeout=self.tool_timeout)
                   for call in calls]
        results = []
        for call, future in zip(calls, futures):
            try:
                results.append(future.result())
            except FutureTimeout:
                results.append((f"error: {call.name} timed out after {self.tool_timeout:g}s", TIMEOUT))
            except Exception as error:  # the worker died, or the arguments would not pickle
                results.append((f"error: {describe(error)}", ERROR))
        return results

    def step(self, envs: list, histories: list[list[dict]]) -> list[Outcome]:
        return self._map(take_step, envs, histories)

    def reset(self, envs: list, rows: list[dict]) -> list[Outcome]:
        return self._map(take_reset, envs, rows)

    def _map(self, call, envs: list, arguments: list) -> list[Outcome]:
        futures = [self.pool.schedule(call, args=(env, argument), timeout=self.timeout)
                   for env, argument in zip(envs, arguments)]
        outcomes = []
        for env, future in zip(envs, futures):
            try:
                outcomes.append(future.result())
            except FutureTimeout:
                outcomes.append((env, None, f"timed out after {self.timeout:g}s (environment.timeout)"))
            except Exception as error:  # a worker that died, or an object that would not pickle
                outcomes.append((env, None, describe(error)))
        return outcomes

    def close(self) -> None:
        self.pool.stop()
        self.pool.join()
