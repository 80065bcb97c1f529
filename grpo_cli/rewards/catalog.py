"""Reward functions by name: the built-ins, and user functions named by a path.

`reward.functions[i].name` is a built-in name (REWARDS), `package.module:function` (imported) or
`path/to/file.py:function` (loaded from the file). A built-in is a factory called with the
spec's kwargs; a user function is the reward itself, called with the prompts, the completions
and every data column as keyword arguments, and the spec's kwargs on top (as TRL passes
columns). This module imports no torch: reward worker processes load it.
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
import inspect
import os
import subprocess
import sys
import traceback
from collections import Counter
from typing import Callable

from grpo_cli.rewards.answers import dapo_math, length, math_answer
from grpo_cli.rewards.builtin import RewardFn, final_answer, format_reward, language, overlong

def reward_model(model: str, batch_size: int = 8, max_length: int = 4096, device: str = "auto",
                 dtype: str = "auto", trust_remote_code: bool = False) -> RewardFn:
    """A Hugging Face sequence-classification reward model (hub id or folder): its logit."""
    from grpo_cli.rewards.model import HFRewardModel  # torch and transformers: only when used

    return HFRewardModel(model, batch_size, max_length, device, dtype, trust_remote_code)


REWARDS: dict[str, Callable[..., RewardFn]] = {
    "final_answer": final_answer,
    "overlong": overlong,
    "math": math_answer,
    "dapo_math": dapo_math,
    "format": format_reward,
    "length": length,
    "language": language,
    "reward_model": reward_model,
}

# Built-ins that hold a model: they run in the trainer's process, on its device, not in workers.
IN_PROCESS = {"reward_model"}


# Seconds a user's reward module may take to import (in the probe's child process).
IMPORT_TIMEOUT = 120


def is_user_path(name: str) -> bool:
    return ":" in name


@functools.lru_cache(maxsize=None)
def load_user_function(name: str) -> Callable:
    """`module:function` or `file.py:function` -> the function; ValueError naming the problem.
    Cached: a user's module runs once per process, however often its function is named."""
    target, _, attribute = name.rpartition(":")
    if target.endswith(".py"):
        if not os.path.isfile(target):
            raise ValueError(f"file {target} does not exist")
        module_name = "grpo_user_reward_" + os.path.splitext(os.path.basename(target))[0]
        spec = importlib.util.spec_from_file_location(module_name, target)
        module = importlib.util.module_from_spec(spec)
        sys.modules[module_name] = module
        try:
            spec.loader.exec_module(module)
        except SystemExit as exit_:  # the user's module ended itself: its failure, not ours
            raise ValueError(f"file {target} called sys.exit({exit_.code}) when imported") from None
        except Exception as error:
            raise import_failure(target, error) from error
    else:
        try:
            module = importlib.import_module(target)
        except ImportError as error:
            raise ValueError(f"cannot import {target!r} for {name}: {error}") from error
        except SystemExit as exit_:
            raise ValueError(f"module {target} called sys.exit({exit_.code}) when imported") from None
        except Exception as error:
            raise import_failure(target, error) from error
    function = getattr(module, attribute, None)
    if not callable(function):
        raise ValueError(f"{target} has no function {attribute!r}")
    return function


def import_failure(target: str, error: Exception) -> ValueError:
    """A user's module raised while it was imported: what, and where in the user's own file
    (else the innermost frame outside Python's import machinery)."""
    frames = [f for f in traceback.extract_tb(error.__traceback__) if not f.filename.startswith("<frozen")]
    own = target if target.endswith(".py") else target.replace(".", os.sep)
    mine = [f for f in frames if os.path.splitext(os.path.abspath(f.filename))[0].endswith(
        os.path.splitext(os.path.abspath(own))[0] if own.endswith(".py") else own)] or frames
    where = f" at {mine[-1].filename}:{mine[-1].lineno}" if mine else ""
    message = " ".join(str(error).split())
    return ValueError(f"importing {target} raised {type(error).__name__}{where}: {message}; fix the module")


def probe_user_module(name: str) -> None:
    """Import a user's reward module in a child process first, so that one that ends its process
    (os._exit, a crash) or hangs while importing fails there, as a ValueError naming it, and not
    the trainer. Ordinary import errors are left to the in-process import, which words them."""
    target = name.rpartition(":")[0]
    code = ("import sys\nfrom grpo_cli.rewards.catalog import load_user_function\n"
            "try:\n    load_user_function(sys.argv[1])\nexcept Exception:\n    pass\n")
    try:
        done = subprocess.run([sys.executable, "-c", code, name], capture_output=True, text=True,
                              timeout=IMPORT_TIMEOUT)
    except subprocess.TimeoutExpired:
        raise ValueError(f"importing {target} did not finish within {IMPORT_TIMEOUT} s") from None
    if done.returncode != 0:
        raise ValueError(f"importing {target} ended its process with exit status {done.returncode}")


def build(name: str, kwargs: dict) -> Callable:
    """The callable for one spec: a built-in made from kwargs, or a user function with kwargs bound."""
    if is_user_path(name):
        function = load_user_function(name)
        return functools.update_wrapper(functools.partial(function, **kwargs), function) if kwargs else function
    if name not in REWARDS:
        raise ValueError(f"unknown reward {name!r}; built-ins: {', '.join(sorted(REWARDS))}, "
                         f"or give module:function / file.py:function")
    return REWARDS[name](**kwargs)


def display_names(names: list[str]) -> list[str]:
    """The same function twice (different kwargs) is logged as name, name_2, ...; a user
    function by its function name."""
    seen: Counter[str] = Counter()
    out = []
    for name in names:
        short = name.rpartition(":")[2]
        seen[short] += 1
        out.append(short if seen[short] == 1 else f"{short}_{seen[short]}")
    return out


def correct_value(name: str, kwargs: dict) -> float | None:
    """What a reward gives a right answer: its `correct` kwarg, else its factory's default."""
    if "correct" in kwargs:
        return float(kwargs["correct"])
    parameter = inspect.signature(REWARDS[name]).parameters.get("correct") if name in REWARDS else None
    return None if parameter is None or parameter.default is inspect.Parameter.empty else float(parameter.default)


def gates(functions: list) -> list[tuple[int, float] | None]:
    """For each reward spec ({name, kwargs, gate, gate_min}): None, or (index of the function its
    gate names, the value that function must reach). ValueError naming the spec and the fix."""
    names = display_names([fn.name for fn in functions])
    out: list[tuple[int, float] | None] = []
    for i, fn in enumerate(functions):
        if fn.gate is None:
            out.append(None)
            continue
        where = f"reward.functions[{i}].gate={fn.gate!r}"
        if fn.gate not in names or names.index(fn.gate) == i:
            others = [n for j, n in enumerate(names) if j != i]
            raise ValueError(f"{where} names no other reward function; use one of: {', '.join(others) or '(none)'}")
        gate = names.index(fn.gate)
        if functions[gate].gate is not None:
            raise ValueError(f"{where} is itself gated (by {functions[gate].gate}); gate on an ungated function")
        threshold = fn.gate_min if fn.gate_min is not None else correct_value(functions[gate].name, dict(functions[gate].kwargs))
        if threshold is None:
            raise ValueError(f"{where}: {fn.gate} has no `correct` value to reach; set reward.functions[{i}].gate_min")
        out.append((gate, float(threshold)))
    return out
