"""The episode runner: the sampler stage when an environment answers the model.

Turn 1 is the single-turn generation itself (K completions per prompt, seeded per prompt as
always), so `environment=single_turn` returns exactly what the sampler drew. Then, while
episodes are live: the environment answers each model turn, its turn is appended as token ids
(render.turn_ids), and every live episode's next turn is drawn in one sampler call. A model turn
that calls tools (environment.tools) is answered by the tools' results instead of the
environment's step; a turn without calls goes to the environment. An episode ends when the
model's turn is cut by its token budget, the environment says done, or after
environment.max_turns model turns. Environment and tool tokens have loss mask 0 and log-prob 0.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Callable

import torch

from grpo_cli.environments.base import Environment, Observation
from grpo_cli.environments.render import turn_ids
from grpo_cli.environments.tools import ERROR, TIMEOUT, Toolbox, ToolCall, tool_message
from grpo_cli.environments.workers import LocalSteps, Outcome, StepWorkers
from grpo_cli.errors import UserError
from grpo_cli.metrics import console
from grpo_cli.rewards.workers import describe
from grpo_cli.sampler import SamplingParams
from grpo_cli.types import PromptBatch, Rollouts


@dataclass(frozen=True)
class EpisodeSpec:
    """make: a fresh environment per episode. max_total_tokens: model plus environment tokens
    after the prompt (0: max_turns x the sampling budget). tools: None without tools."""

    make: Callable[[], Environment]
    max_turns: int
    max_total_tokens: int
    turn_discount: float
    tokenizer: object
    steps: LocalSteps | StepWorkers = field(default_factory=LocalSteps)
    tools: Toolbox | None = None
    tool_max_chars: int = 1000
    warned: set = field(default_factory=set)  # the first error is printed once per run

    def close(self) -> None:
        self.steps.close()

    def __enter__(self) -> "EpisodeSpec":
        return self

    def __exit__(self, *_) -> None:
        self.close()


@dataclass
class Episode:
    """One trajectory after its prompt: tokens with, for each, whether the model drew it."""

    row: dict
    env: Environment
    messages: list[dict]
    tokens: list[int] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)
    drawn: list[bool] = field(default_factory=list)
    turns: int = 0
    env_reward: float | None = None
    ended_by: str | None = None  # budget (its last turn was cut), environment, turns (max_turns), or error
    error: str = ""  # what the environment's step raised
    last_text: str = ""
    tool_calls: int = 0
    tool_errors: int = 0
    tool_timeouts: int = 0

    @property
    def done(self) -> bool:
        return self.ended_by is not None

    def add(self, ids: list[int], logprobs: list[float] | None, text: str | None = None) -> None:
        self.tokens += ids
        self.logprobs += logprobs if logprobs is not None else [0.0] * len(ids)
        self.drawn += [logprobs is not None] * len(ids)
        if text is not None:
            self.turns += 1
            self.last_text = text
            self.messages = [*self.messages, {"role": "assistant", "content": text}]


def run_episodes(sampler, batch: PromptBatch, params: SamplingParams, seeds: list[int], spec: EpisodeSpec) -> Rollouts:
    """params.n episodes per prompt of `batch`; Rollouts whose completion holds every turn."""
    first = sampler.generate(batch, params, seeds)
    if spec.max_turns == 1:
        return first
    episodes = _start(first, batch, spec)
    budget = spec.max_total_tokens or spec.max_turns * params.max_new_tokens
    for turn in range(2, spec.max_turns + 1):
        _answer([e for e in episodes if not e.done], spec, budget)
        live = [i for i, e in enumerate(episodes) if not e.done]
        if not live:
            break
        room = max(budget - len(episodes[i].tokens) for i in live)
        contexts = PromptBatch(prompt_ids=[_prompt(first, i) + episodes[i].tokens for i in live],
                               prompts=[""] * len(live), examples=[episodes[i].row for i in live])
        drawn = sampler.generate(contexts, replace(params, n=1, max_new_tokens=min(params.max_new_tokens, room)),
                                 seeds=[_turn_seed(seeds, first, i, params.n, turn) for i in live])
        for row, i in enumerate(live):
            _take(episodes[i], drawn, row, budget, last=turn == spec.max_turns)
    _answer([e for e in episodes if e.ended_by == "turns"], spec, budget=0)  # their reward for the final answer
    failed = [e.error for e in episodes if e.error]
    if failed and not spec.warned:
        spec.warned.add("step")
        console.print(f"[yellow]warning:[/] the environment's step failed in {len(failed)} of {len(episodes)} episodes "
                      f"(each ends there, counted in episode/env_errors): {failed[0]}")
    return _assemble(first, episodes, spec)


def _turn_seed(seeds: list[int], first: Rollouts, i: int, n: int, turn: int) -> int:
    """From the prompt's seed, the episode's place in its group and the turn only: a rank that
    holds a share of the prompts draws what the whole batch would."""
    return hash((seeds[int(first.group_ids[i])], i % n, turn)) % 2**62


def _start(first: Rollouts, batch: PromptBatch, spec: EpisodeSpec) -> list[Episode]:
    """An environment per episode, reset on its row (in the workers), and the first turn."""
    groups = first.group_ids.tolist()
    outcomes = spec.steps.reset([spec.make() for _ in groups], [batch.examples[g] for g in groups])
    episodes = []
    for i, (group, (env, _, error)) in enumerate(zip(groups, outcomes)):
        episode = Episode(row=batch.examples[group], env=env, messages=list(batch.messages[group]))
        _take(episode, first, i, budget=None, last=spec.max_turns == 1)
        if error is not None:  # the episode keeps its first turn and ends there
            episode.ended_by, episode.error = "error", error
        episodes.append(episode)
    return episodes


def _take(episode: Episode, drawn: Rollouts, row: int, budget: int | None, last: bool) -> None:
    """The model's turn from row `row` of a generation, cut to the episode's budget."""
    length = int(drawn.completion_lengths[row])
    room = length if budget is None else max(0, budget - len(episode.tokens))
    kept = min(length, room)
    episode.add(drawn.completion_ids[row, :kept].tolist(), drawn.sampler_logprobs[row, :kept].tolist(),
                drawn.completions[row])
    if bool(drawn.truncated[row]) or kept < length:
        episode.ended_by = "budget"
    elif last:
        episode.ended_by = "turns"


def _answer(episodes: list[Episode], spec: EpisodeSpec, budget: int) -> None:
    """The environment's answer to each episode's last model turn (all stepped at once),
    appended unless the episode ends."""
    outcomes = _respond(episodes, spec, use_tools=budget > 0)
    for episode, (env, observation, error) in zip(episodes, outcomes):
        episode.env = env  # a worker's step hands the environment back with its new state
        if error is not None:  # it costs this episode, not the run
            episode.ended_by, episode.error = "error", error
            continue
        _reward(episode, observation)
        if observation.done or not observation.messages or episode.ended_by == "turns":
            episode.ended_by = episode.ended_by or "environment"
            continue
        try:
            ids = turn_ids(spec.tokenizer, episode.messages, observation.messages, spec.tools and spec.tools.schemas)
        except UserError:
            raise
        except Exception as error:  # the template refuses what this episode's model or environment wrote
            episode.ended_by, episode.error = "error", f"the chat template cannot render the turn: {describe(error)}"
            continue
        episode.messages = [*episode.messages, *observation.messages]
        if len(episode.tokens) + len(ids) >= budget:  # no room left for the model to answer
            episode.ended_by = "budget"
            continue
        episode.add(ids, None)


def _respond(episodes: list[Episode], spec: EpisodeSpec, use_tools: bool) -> list[Outcome]:
    """Per episode, the answer to its last model turn: the tools' results when the turn called
    tools, else the environment's step. All steps, then all calls, go to the workers at once."""
    calls = [_read_calls(e, spec.tools) if use_tools and spec.tools else [] for e in episodes]
    stepped = [e for e, called in zip(episodes, calls) if not called]
    steps = iter(spec.steps.step([e.env for e in stepped], [e.messages for e in stepped]))
    runnable = [call for called in calls for call in called if not call.error]
    results = iter(spec.steps.call(runnable, spec.tool_max_chars))
    outcomes = []
    for episode, called in zip(episodes, calls):
        if not called:
            outcomes.append(next(steps))
            continue
        replies = [(call.error, ERROR) if call.error else next(results) for call in called]
        episode.tool_calls += len(called)
        episode.tool_errors += sum(status == ERROR for _, status in replies)
        episode.tool_timeouts += sum(status == TIMEOUT for _, status in replies)
        messages = [tool_message(call, text) for call, (text, _) in zip(called, replies)]
        outcomes.append((episode.env, Observation(messages=messages), None))
    return outcomes


def _read_calls(episode: Episode, tools: Toolbox) -> list[ToolCall]:
    """The tool calls of the episode's last model turn; its assistant message gains them."""
    message, calls = tools.read(episode.last_text)
    if calls:
        episode.messages = [*episode.messages[:-1], message]
    return calls


def _reward(episode: Episode, observation) -> None:
    if observation.reward is not None:
        episode.env_reward = (episode.env_reward or 0.0) + observation.reward


def _prompt(first: Rollouts, i: int) -> list[int]:
    return first.prompt_ids[i][first.prompt_mask[i].bool()].tolist()


def _assemble(first: Rollouts, episodes: list[Episode], spec: EpisodeSpec) -> Rollouts:
    width = max(1, max(len(e.tokens) for e in episodes))
    pad = lambda values, fill, dtype: torch.tensor([v + [fill] * (width - len(v)) for v in values], dtype=dtype)  # noqa: E731
    drawn = pad([e.drawn for e in episodes], False, torch.bool)
    real = pad([[True] * len(e.tokens) for e in episodes], False, torch.bool)
    turns = torch.tensor([e.turns for e in episodes])
    return replace(
        first, completion_ids=pad([e.tokens for e in episodes], 0, torch.long), completion_mask=drawn.long(),
        env_mask=(real & ~drawn).long(), sampler_logprobs=pad([e.logprobs for e in episodes], 0.0, torch.float),
        truncated=torch.tensor([e.ended_by == "budget" for e in episodes]), completions=[e.last_text for e in episodes],
        turns=turns, env_reward=torch.tensor([float("nan") if e.env_reward is None else e.env_reward for e in episodes]),
        reward_scale=(spec.turn_discount ** (turns - 1).double()).float(),
        env_failed=torch.tensor([bool(e.error) for e in episodes]),
        tool_stats=torch.tensor([[e.tool_calls, e.tool_errors, e.tool_timeouts] for e in episodes])
        if spec.tools else None)
