"""Environments by name (environment.name): the built-ins, and user classes named by a path
(`my_env.py:Calculator`, `package.module:Class`), constructed once per episode with
environment.kwargs. runner.py runs the episodes."""

from __future__ import annotations

import functools
from typing import Callable

from grpo_cli.config import EnvironmentConfig
from grpo_cli.environments.base import Environment, Observation, SingleTurn
from grpo_cli.environments.feedback import Feedback
from grpo_cli.environments.render import check_appendable, turn_ids
from grpo_cli.errors import UserError
from grpo_cli.environments.runner import EpisodeSpec, run_episodes
from grpo_cli.environments.tools import toolbox
from grpo_cli.environments.workers import LocalSteps, StepWorkers
from grpo_cli.rewards.catalog import is_user_path, load_user_function

ENVIRONMENTS: dict[str, Callable[..., Environment]] = {
    "single_turn": SingleTurn,
    "feedback": Feedback,
}


def environment_class(name: str) -> Callable[..., Environment]:
    """The class (or factory) named by environment.name; ValueError naming the problem."""
    return load_user_function(name) if is_user_path(name) else ENVIRONMENTS[name]


def episode_spec(env_cfg: EnvironmentConfig, tokenizer) -> EpisodeSpec:
    """How the sampler stage runs episodes; a template that cannot append turns fails here."""
    if env_cfg.max_turns > 1:
        check_appendable(tokenizer)
    make = functools.partial(environment_class(env_cfg.name), **dict(env_cfg.kwargs))
    tools = toolbox(list(env_cfg.tools), tokenizer, None, env_cfg.response_template)
    pooled = env_cfg.max_turns > 1 and env_cfg.workers > 0
    steps = (StepWorkers(env_cfg.name, env_cfg.workers, env_cfg.timeout, tuple(env_cfg.tools), env_cfg.tool_timeout)
             if pooled else LocalSteps())
    return EpisodeSpec(make=make, max_turns=env_cfg.max_turns, max_total_tokens=env_cfg.max_total_tokens,
                       turn_discount=env_cfg.turn_discount, tokenizer=tokenizer, steps=steps, tools=tools,
                       tool_max_chars=env_cfg.tool_max_chars)



def probe(spec: EpisodeSpec, name: str, rows: list[dict], messages: list[list[dict]]) -> str:
    """The environment on a few rows, answering an empty model turn: what `grpo validate`
    reports. A reset or step that raises, or an answer the template cannot render, fails here."""
    for row, prompt in zip(rows, messages):
        try:
            env, _, error = spec.steps.reset([spec.make()], [row])[0]
            history = [*prompt, {"role": "assistant", "content": ""}]
            if error is None:
                _, observation, error = spec.steps.step([env], [history])[0]
            if error is not None:
                raise UserError(f"environment {name} failed on a data row: {error}")
            if observation.messages:
                turn_ids(spec.tokenizer, history, observation.messages)
        except UserError:
            raise
        except Exception as error:  # user code fails in its own ways
            raise UserError(f"environment {name} failed on a data row: {type(error).__name__}: {error}") from error
    tools = f"; tools {probe_tools(spec)} read back from the chat template's calls" if spec.tools else ""
    return f"environment {name} (up to {spec.max_turns} turns): answered {len(rows)} rows{tools}"


def probe_tools(spec: EpisodeSpec) -> str:
    """Each tool's call, as the chat template writes it, must read back as that call: the
    response template and the chat template agree on the format."""
    history = [{"role": "user", "content": "1+1"}]
    render = functools.partial(spec.tokenizer.apply_chat_template, tools=spec.tools.schemas, tokenize=False)
    before = render(history, add_generation_prompt=True)
    for name in spec.tools.entries:
        call = {"role": "assistant", "content": "",
                "tool_calls": [{"type": "function", "function": {"name": name, "arguments": {}}}]}
        text = render(history + [call])[len(before):]
        _, calls = spec.tools.read(text)
        if [c.name for c in calls] != [name]:
            raise UserError(f"tool calls are not read back: the chat template writes a call to {name} as {text!r}, "
                            f"and the response template reads {[c.name for c in calls]}; set "
                            f"environment.response_template to a template for this model's format")
    return ", ".join(spec.tools.entries)


__all__ = ["ENVIRONMENTS", "Environment", "EpisodeSpec", "Observation", "SingleTurn", "environment_class",
           "episode_spec", "probe", "run_episodes"]
