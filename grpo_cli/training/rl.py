"""Online RL training: the step and the run it needs (RL objective).

One step (DeepSeekMath's GRPO, arXiv 2402.03300, Algorithm 1, with the reward model fixed):
sample K completions per prompt, score them, filter groups, compute advantages, update the
policy (μ epochs over mini-batches), push the new weights into the sampler, log. The variant
only changes which function each stage dictionary hands back, never the shape of the step.
Under torchrun each rank samples and scores its share of the prompts and the rest of the step
runs on the gathered global batch (distributed.py). driver.py runs the steps.
"""

from __future__ import annotations

import functools
import time
from dataclasses import dataclass
from typing import ClassVar

import torch

from grpo_cli.algorithms import ADVANTAGES, GROUP_FILTERS, AdvantageInputs
from grpo_cli.algorithms.aggregation import reward_advantage_metrics
from grpo_cli.algorithms.filters import DifficultyTracker, FilterContext, Selection
from grpo_cli.algorithms.kl import reward_penalty
from grpo_cli.algorithms.offpolicy import staleness_metrics
from grpo_cli.algorithms.rl_loss import RLLoss
from grpo_cli.algorithms.stats import group_stats
from grpo_cli.completion_samples import sample_rows
from grpo_cli.config import AlgorithmConfig, GrpoConfig
from grpo_cli.data import PromptSet
from grpo_cli.environments import EpisodeSpec, episode_spec, run_episodes
from grpo_cli.errors import UserError
from grpo_cli.metrics import StepResult, console
from grpo_cli.rewards.scoring import RewardSet
from grpo_cli.sampler import Sampler, SamplingParams, prompt_seeds
from grpo_cli.training.clock import derived_seed, is_due, round_prompts
from grpo_cli.training.distributed import Ranks, local_device
from grpo_cli.training.evaluate import EvalResult, EvalSamples, sample_and_score
from grpo_cli.training.learner import Learner
from grpo_cli.training.rollout_worker import Lookahead, RolloutWorker, sampler_device, split_threads
from grpo_cli.training.runtime import (
    DTYPES,
    load_and_report,
    load_eval_prompts,
    load_tokenizer,
    make_sampler,
    pick_device,
    sampling_params,
)
from grpo_cli.types import BatchLogprobs, PromptBatch, Rollouts, Scores, Sequences, TrainBatch


@dataclass
class RLJob:
    """Everything a step needs, built once by `build`; the driver's job for the RL objective."""

    cfg: GrpoConfig
    tokenizer: object
    train_prompts: PromptSet
    eval_prompts: PromptSet | None
    rewards: RewardSet
    learner: Learner
    loss: RLLoss
    sampler: Sampler
    train_params: SamplingParams
    eval_params: SamplingParams
    difficulty: DifficultyTracker
    ranks: Ranks
    episodes: EpisodeSpec
    lookahead: Lookahead | None = None  # trainer.max_staleness > 0: batches generated ahead
    evaluates_base: ClassVar[bool] = True

    def step(self, step: int, samples: int = 0) -> StepResult:
        return train_step(self, step, samples)

    def evaluate(self, step: int) -> EvalResult | None:
        """Accuracy and pass@k on the held-out prompts; every rank scores its share."""
        if self.eval_prompts is None:
            return None
        if step == 0:
            console.print(f"evaluating the base model: {len(self.eval_prompts)} held-out prompts x {self.cfg.eval.k} samples")
        self.sampler.wake()
        mine = sample_and_score(self.sampler, self.eval_prompts, self.rewards, self.eval_params,
                                seed=derived_seed(self.cfg.seed, 0, 2), rows=self.ranks.share(len(self.eval_prompts)),
                                episodes=self.episodes)
        return EvalSamples.merge(self.ranks.gather(mine)).summary(self.eval_params.n)

    def state_dict(self) -> dict:
        taken = {} if self.lookahead is None else {"batches_taken": self.lookahead.taken}
        return {"difficulty": self.difficulty.state_dict(), **taken}

    def load_state_dict(self, state: dict) -> None:
        self.difficulty.load_state_dict(state["difficulty"])
        self.sampler.version = state["step"]  # it loaded the checkpoint's weights: the policy after that step
        if self.lookahead is not None:  # the batches that were in flight are generated again
            self.lookahead.taken = self.lookahead.sent = state.get("batches_taken", state["step"])

    def close(self) -> None:
        self.rewards.close()  # stop the reward worker processes, also on an error
        self.episodes.close()  # and the environment's
        self.sampler.close()  # before the process group goes: a vLLM engine under torchrun uses it


def build(cfg: GrpoConfig, policy_path: str, ranks: Ranks | None = None) -> RLJob:
    """Tokenizer, prompts, rewards, learner and sampler for a training run (this rank's, under torchrun)."""
    ranks = ranks or Ranks()
    if cfg.trainer.prompts_per_step < ranks.world:
        raise UserError(f"trainer.prompts_per_step={cfg.trainer.prompts_per_step} gives some of the {ranks.world} "
                        f"ranks no prompt; raise it to at least {ranks.world} or start fewer processes")
    device = local_device(pick_device(cfg.device), ranks)
    torch.manual_seed(cfg.seed)
    tokenizer = load_tokenizer(policy_path, cfg.model.trust_remote_code)
    train_prompts = load_and_report(cfg.data.path, cfg.data.split, cfg, tokenizer)
    eval_prompts = load_eval_prompts(cfg, tokenizer)
    rewards = RewardSet(cfg.reward, tokenizer)
    optimizer_steps = cfg.trainer.steps * cfg.algorithm.epochs * cfg.algorithm.mini_batches
    loss = RLLoss.of(cfg)
    make_learner = functools.partial(Learner, cfg, device, DTYPES[cfg.model.dtype], optimizer_steps,
                                     policy_path=policy_path, ranks=ranks, needs_reference=loss.needs_reference)
    train_params, eval_params = sampling_params(cfg)
    lookahead = None
    if cfg.trainer.max_staleness == 0:
        sampler = make_sampler(cfg, policy_path, tokenizer, device)
        learner = make_learner()
    else:
        learner, sampler = start_async(cfg, policy_path, device, ranks, make_learner)
        lookahead = Lookahead(sampler, train_prompts, train_params, cfg)
    return RLJob(cfg=cfg, tokenizer=tokenizer, train_prompts=train_prompts, eval_prompts=eval_prompts,
               rewards=rewards, learner=learner, loss=loss, sampler=sampler, train_params=train_params,
               eval_params=eval_params, difficulty=DifficultyTracker(cfg.algorithm.gfpo.adaptive_window), ranks=ranks,
               episodes=episode_spec(cfg.environment, tokenizer), lookahead=lookahead)


def start_async(cfg: GrpoConfig, policy_path: str, device: torch.device, ranks: Ranks,
                make_learner) -> tuple[Learner, RolloutWorker]:
    """The learner in this process and the sampler in its own, each with its share of the
    CPU threads (or its own GPU)."""
    if ranks.active:
        raise UserError(f"trainer.max_staleness={cfg.trainer.max_staleness} runs one learner process; under torchrun "
                        f"set trainer.max_staleness=0")
    where = sampler_device(device)
    learner_threads, sampler_threads = split_threads(cfg.sampler.threads)
    torch.set_num_threads(learner_threads)
    learner = make_learner()
    return learner, RolloutWorker(cfg, policy_path, where, learner.weights(), sampler_threads)


def train_step(run: RLJob, step: int, samples: int = 0) -> StepResult:
    """One generation round (more for dynamic sampling) and its updates; the metrics, and the
    completions of `samples` prompts with their rewards and advantages."""
    cfg, algorithm, clock = run.cfg, run.cfg.algorithm, Stopwatch()
    rollouts, scores, selection, sampling = collect(run, step, clock)
    logged = {**rollout_metrics(rollouts, scores, selection, algorithm), **sampling, **selection.metrics}
    if run.lookahead is not None:
        logged.update(staleness_metrics(step - rollouts.policy_version, cfg.trainer.max_staleness),
                      **{"async/dropped_stale": float(run.lookahead.dropped)})
    run.difficulty.record(scores.total, rollouts.group_ids)
    if not selection.kept.any():
        return StepResult({**logged, "loss/total": 0.0, "update/skipped": 1.0, **clock.metrics(rollouts)})
    rollouts, scores, selected = rollouts.select(selection.kept), scores.select(selection.kept), selection.selected[selection.kept]
    run.sampler.sleep()  # the learner's turn on the GPU; the push wakes the weights again
    batch, advantage_metrics = update_batch(run, step, rollouts, scores, selected, clock)
    update = run.learner.update(batch, derived_seed(cfg.seed, step, 1), run.loss)
    if is_due(algorithm.ref_reset_every, step + 1):
        run.learner.reset_reference(algorithm.ref_mix_alpha)
    clock.lap("update")
    run.sampler.load_weights(run.learner.weights(), version=step + 1)
    clock.lap("push")
    shown = sample_rows(run.tokenizer, run.train_prompts, rollouts, scores, batch.advantages, batch.loss_mask, samples,
                        step + 1) if samples else []
    return StepResult({**logged, **advantage_metrics, **update, **clock.metrics(rollouts)}, shown)


def update_batch(run: RLJob, step: int, rollouts: Rollouts, scores: Scores, selected: torch.Tensor,
                 clock: "Stopwatch") -> tuple[TrainBatch, dict[str, float]]:
    """The kept rollouts as the update takes them: token sequences, the learner's (and the
    reference's) log-probs, per-token advantages; and each reward's share of the advantage
    (advantage/NAME/mean, /std). selected: [N] bool, the rows the advantage statistics count."""
    algorithm = run.cfg.algorithm
    sequences = Sequences.from_rollouts(rollouts, algorithm.overlong_filter)
    if run.lookahead is not None:
        sequences.policy_lag = step - rollouts.policy_version  # the learner holds version `step`
    logprobs = logprobs_before_update(run.learner, run.loss, sequences)
    clock.lap("logprobs")
    kl_penalty = reward_penalty(logprobs, sequences.loss_mask, algorithm)
    inputs = AdvantageInputs.from_scores(scores, selected, rollouts.group_ids, sequences.loss_mask, kl_penalty,
                                         run.rewards.weights, rollouts.reward_scale)
    advantages = ADVANTAGES[algorithm.advantage](inputs, algorithm)
    return TrainBatch.assemble(sequences, advantages, logprobs), reward_advantage_metrics(inputs, algorithm)


def logprobs_before_update(learner: Learner, loss: RLLoss, sequences: Sequences) -> BatchLogprobs:
    """ℓ_old and ℓ_ref, [N, C] each, where the loss needs them (None where it does not)."""
    old = learner.policy_logprobs(sequences) if loss.needs_old_logprobs else None
    return BatchLogprobs(old_logprobs=old, ref_logprobs=learner.reference_logprobs(sequences) if loss.needs_reference else None)


def sample_round(run: RLJob, step: int, round_: int, clock: "Stopwatch") -> tuple[Rollouts, Scores, Selection]:
    """Generate for one slice of prompts (or take the batch generated ahead), score and filter."""
    cfg = run.cfg
    batch, rollouts = run.lookahead.take(step) if run.lookahead is not None else generate(run, step, round_)
    clock.lap("generate")
    scores = run.rewards.score(batch, rollouts)
    if run.ranks.active:
        shares = run.ranks.gather((rollouts, scores))
        rollouts, scores = Rollouts.cat([r for r, _ in shares]), Scores.cat([s for _, s in shares])
    clock.lap("reward")
    context = FilterContext(torch.Generator().manual_seed(derived_seed(cfg.seed, step, 3) + (round_ << 40)), run.difficulty)
    return rollouts, scores, GROUP_FILTERS[cfg.algorithm.group_filter](rollouts, scores, cfg.algorithm, context)


def generate(run: RLJob, step: int, round_: int) -> tuple[PromptBatch, Rollouts]:
    """This rank's prompts of the round and their rollouts, from the current weights. Round 0
    walks the data in seeded epochs; refill rounds draw fresh prompts from their own seeded stream."""
    rows, seed = round_prompts(len(run.train_prompts), run.cfg.trainer.prompts_per_step, step, round_, run.cfg.seed)
    mine = run.ranks.share(len(rows))
    batch = run.train_prompts.take([rows[i] for i in mine])
    run.sampler.wake()
    return batch, run_episodes(run.sampler, batch, run.train_params, prompt_seeds(seed, mine), run.episodes)


def collect(run: RLJob, step: int, clock: "Stopwatch") -> tuple[Rollouts, Scores, Selection, dict[str, float]]:
    """Sample rounds until prompts_per_step groups keep a completion or max_sampling_rounds is
    reached (DAPO's dynamic sampling, docs/algorithms.md §4.2); kept groups beyond the target are
    discarded, not carried over, and a short batch trains with a warning. Synchronously every
    round samples from the same policy; with trainer.max_staleness each round is one batch
    generated ahead, all its groups from one policy version, a refill maybe from a newer one."""
    algorithm, target = run.cfg.algorithm, run.cfg.trainer.prompts_per_step
    parts: list[tuple[Rollouts, Scores, Selection]] = []
    kept_groups = 0
    while len(parts) < algorithm.max_sampling_rounds and (not parts or kept_groups < target):
        parts.append(sample_round(run, step, len(parts), clock))
        rollouts, _, selection = parts[-1]
        kept_groups += int(torch.zeros(rollouts.num_groups).index_add(0, rollouts.group_ids, selection.kept.float()).gt(0).sum())
    rollouts = Rollouts.cat([p[0] for p in parts])
    scores = Scores.cat([p[1] for p in parts])
    selection = Selection.cat([p[2] for p in parts])
    selection.metrics = {k: sum(p[2].metrics[k] for p in parts) / len(parts) for k in parts[0][2].metrics}
    group_kept = torch.zeros(rollouts.num_groups).index_add(0, rollouts.group_ids, selection.kept.float()) > 0
    used = group_kept & (group_kept.cumsum(0) <= target)
    selection.kept &= used[rollouts.group_ids]
    first_round_groups = parts[0][0].num_groups
    sampling = {
        "sampling/rounds": float(len(parts)),
        "sampling/dropped_groups": float((~group_kept).sum()),
        "sampling/refilled_groups": float(used[first_round_groups:].sum()),
        "sampling/kept_group_fraction": float(group_kept.float().mean()),
        "sampling/partial_batch": float(used.sum() < target),
    }
    if not scores.total.isfinite().any():
        console.print(f"[yellow]warning:[/] step {step + 1}: no reward function gave a finite value for any of the "
                      f"{len(scores.total)} completions (NaN, inf or None everywhere), so nothing is learned from "
                      f"this step; check reward.functions on a few rows with grpo score")
    if algorithm.max_sampling_rounds > 1 and used.sum() < target:
        console.print(f"[yellow]warning:[/] step {step + 1}: {int(used.sum())} of {target} groups had a spread of "
                      f"correctness after {len(parts)} rounds (algorithm.max_sampling_rounds); training on those")
    return rollouts, scores, selection, sampling


def rollout_metrics(rollouts: Rollouts, scores: Scores, selection: Selection, algorithm: AlgorithmConfig) -> dict[str, float]:
    """Health of everything generated this step (all rounds, before removing dropped groups)."""
    lengths = rollouts.completion_lengths.float()
    selected = selection.selected & selection.kept
    stats = group_stats(scores.total, rollouts.group_ids, algorithm.std_ddof)
    finite = scores.total[scores.total.isfinite()]
    out = {
        "reward/mean": float(scores.total.nanmean()),
        "reward/std": float(finite.std()) if finite.numel() > 1 else 0.0,
        "reward/finite_fraction": float(scores.total.isfinite().float().mean()),
        "accuracy/train": float(scores.correct.float().mean()),
        "completion/mean_length": float(lengths.mean()),
        "completion/min_length": float(lengths.min()),
        "completion/max_length": float(lengths.max()),
        "completion/truncated_fraction": float(rollouts.truncated.float().mean()),
        "groups/no_spread_fraction": float(stats.no_spread.float().mean()),
        "groups/selected_fraction": float(selected.float().mean()),
        "completion/selected_mean_length": float(lengths[selected].mean()) if selected.any() else 0.0,
        "sampler/policy_version": float(rollouts.policy_version.float().mean()),  # the push these were sampled after
    }
    if rollouts.turns is not None:
        out.update(episode_metrics(rollouts, scores))
    for name, values in scores.components.items():
        out[f"reward/{name}"] = float(values.nanmean())
    for name, failed in scores.failed.items():
        out[f"reward/{name}/failed"] = float(failed.sum())  # raised or timed out: reward None
    for name, is_open in scores.gate_open.items():
        out[f"reward/{name}/gate_open"] = float(is_open.float().mean())  # share of rows where the reward counted
    return out


def episode_metrics(rollouts: Rollouts, scores: Scores) -> dict[str, float]:
    """Multi-turn health: turns, who wrote the tokens, how episodes ended; which attempt was
    right (with text feedback: the first, or a retry after the critique)."""
    retried = rollouts.turns > 1
    return {
        "episode/first_attempt_correct": float((scores.correct & ~retried).float().mean()),
        "episode/retry_correct": float(scores.correct[retried].float().mean()) if retried.any() else 0.0,
        "episode/turns": float(rollouts.turns.float().mean()),
        "episode/model_tokens": float(rollouts.completion_mask.sum(-1).float().mean()),
        "episode/env_tokens": float(rollouts.env_mask.sum(-1).float().mean()),
        "episode/ended_by_budget": float(rollouts.truncated.float().mean()),
        "episode/env_errors": float(rollouts.env_failed.sum()),
        **(tool_metrics(rollouts.tool_stats) if rollouts.tool_stats is not None else {}),
    }


def tool_metrics(tool_stats: torch.Tensor) -> dict[str, float]:
    """Calls per episode, the share of episodes that called, the share of calls that ran and
    answered (not unreadable, unknown, raised, too long or timed out), and the failures."""
    calls, failed, timed_out = tool_stats.sum(0).tolist()
    return {
        "tool/calls_per_episode": float(tool_stats[:, 0].float().mean()),
        "tool/call_rate": float((tool_stats[:, 0] > 0).float().mean()),
        "tool/ok_rate": (calls - failed - timed_out) / calls if calls else 0.0,
        "tool/errors": float(failed),
        "tool/timeouts": float(timed_out),
    }


class Stopwatch:
    def __init__(self):
        self.start = self.last = time.perf_counter()
        self.laps: dict[str, float] = {}

    def lap(self, name: str) -> None:
        """Time since the previous lap, added to `name` (rounds of sampling add up)."""
        now = time.perf_counter()
        self.laps[name] = self.laps.get(name, 0.0) + now - self.last
        self.last = now

    def metrics(self, rollouts: Rollouts) -> dict[str, float]:
        tokens = float(rollouts.completion_lengths.sum())
        total = self.last - self.start
        out = {f"time/{name}": seconds for name, seconds in self.laps.items()}
        out["time/step"] = total
        out["perf/tokens_per_second"] = tokens / max(total, 1e-9)
        out["perf/generation_tokens_per_second"] = tokens / max(self.laps.get("generate", 0.0), 1e-9)
        return out
