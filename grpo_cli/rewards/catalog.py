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
import os
import sys
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


def is_user_path(name: str) -> bool:
    return ":" in name


@functools.lru_cache(maxsize=None)
def load_user_function(name: str) -> Callable:
    """`module:function` or `file.py:function` -> the function; ValueError naming the problem.
    Cached: a user's module runs once per process, however often its function is named."""
    target, _, attribute = name.rpartition(":")
    if target.endswith(".py"):
        if not os.path.isfile(target):
            raise ValueError(f"reward file {target} does not exist")
        module_name = "grpo_user_reward_" + os.path.splitext(os.path.basename(target))[0]
        spec = importlib.util.spec_from_file_location(module_name, target)
        module = importlib.util.module_from_spec(spec)
        sys.modules[module_name] = module
        spec.loader.exec_module(module)
    else:
        try:
            module = importlib.import_module(target)
        except ImportError as error:
            raise ValueError(f"cannot import {target!r} for reward {name}: {error}") from error
    function = getattr(module, attribute, None)
    if not callable(function):
        raise ValueError(f"{target} has no function {attribute!r}")
    return function


def build(name: str, kwargs: dict) -> Callable:
    """The callable for one spec: a built-in made from kwargs, or a user function with kwargs bound."""
    if is_user_path(name):
        function = load_user_function(name)
        return functools.update_wrapper(functools.partial(function, **kwargs), function) if kwargs else function
    if name not in REWARDS:
        raise ValueError(f"unknown reward {name!r}; built-ins: {', '.join(sorted(REWARDS))}, "
                         f"or give module:function / file.py:function")
    return REWARDS[name](**kwargs)

