"""The training step and the run.

One step (DeepSeekMath's GRPO, arXiv 2402.03300, Algorithm 1, with the reward model fixed):
sample K completions per prompt, score them, filter groups, compute advantages, update the
policy (μ epochs over mini-batches), push the new weights into the sampler, log. The variant
only changes which function each stage dictionary hands back, never the shape of the step.
Under torchrun each rank samples and scores its share of the prompts and the rest of the step
runs on the gathered global batch (distributed.py).
"""

from __future__ import annotations

import signal
import time
from pathlib import Path
from dataclasses import dataclass, replace

import torch

from grpo_cli import checkpoint
from grpo_cli.algorithms import ADVANTAGES, GROUP_FILTERS, KL_ESTIMATORS, AdvantageInputs
from grpo_cli.algorithms.advantages import group_stats
from grpo_cli.algorithms.filters import DifficultyTracker, FilterContext, Selection
from grpo_cli.data import PromptSet, step_indices
from grpo_cli.distributed import Ranks
from grpo_cli.evaluate import EvalResult, EvalSamples, sample_and_score
from grpo_cli.learner import Learner
from grpo_cli.rewards.scoring import RewardSet
from grpo_cli.shutdown import RunStopped, StopRequest
from grpo_cli.sampler import SamplingParams, prompt_seeds
from grpo_cli.types import Rollouts, Scores, TrainBatch


@dataclass
class Run:
    """Everything a step needs, built once by runtime.build_run."""

    cfg: object
    tokenizer: object
    train_prompts: PromptSet
    eval_prompts: PromptSet | None
    rewards: RewardSet
    learner: Learner
    sampler: object
    train_params: SamplingParams
    eval_params: SamplingParams
    difficulty: DifficultyTracker
    ranks: Ranks


def derived_seed(seed: int, step: int, stream: int) -> int:
    """Independent, reproducible seeds per (run seed, step, purpose)."""
    return (seed * 1_000_003 + step) * 16 + stream


def kl_penalty(batch: TrainBatch, algorithm) -> torch.Tensor | None:
    """β·KL_t per token when the KL goes into the reward (PPO style); None otherwise."""
    if algorithm.kl_in != "reward" or batch.ref_logprobs is None:
        return None
    kl = KL_ESTIMATORS[algorithm.kl_estimator](batch.old_logprobs, batch.ref_logprobs)
    return algorithm.kl_coef * kl * batch.loss_mask


def train_step(run: Run, step: int) -> dict[str, float]:
    """One generation round (more for dynamic sampling) and its updates; returns the metrics."""
    cfg, algorithm, clock = run.cfg, run.cfg.algorithm, Stopwatch()
    rollouts, scores, selection, sampling = collect(run, step, clock)
    logged = {**rollout_metrics(rollouts, scores, selection, algorithm), **sampling, **selection.metrics}
    run.difficulty.record(scores.total, rollouts.group_ids)
    if not selection.kept.any():
        return {**logged, "loss/total": 0.0, "update/skipped": 1.0, **clock.metrics(rollouts)}
    rollouts, scores, selected = rollouts.select(selection.kept), scores.select(selection.kept), selection.selected[selection.kept]
    run.sampler.sleep()  # the learner's turn on the GPU; the push wakes the weights again
    train_batch = run.learner.add_logprobs(run.learner.to_train_batch(rollouts, algorithm.overlong_filter))
    clock.lap("logprobs")
    advantages = ADVANTAGES[algorithm.advantage](AdvantageInputs.from_scores(
        scores, selected, rollouts.group_ids, train_batch.loss_mask, kl_penalty(train_batch, algorithm)), algorithm)
    update = run.learner.update(replace(train_batch, advantages=advantages), seed=derived_seed(cfg.seed, step, 1))
    if is_due(algorithm.ref_reset_every, step + 1):
        run.learner.reset_reference(algorithm.ref_mix_alpha)
    clock.lap("update")
    run.sampler.load_weights(run.learner.weights(), version=step + 1)
    clock.lap("push")
    return {**logged, **update, **clock.metrics(rollouts)}


def sample_round(run: Run, step: int, round_: int, clock: "Stopwatch") -> tuple[Rollouts, Scores, Selection]:
    """Generate for one slice of prompts, score and filter. Round 0 walks the data in seeded
    epochs; refill rounds draw fresh prompts from their own seeded stream."""
    cfg = run.cfg
    count, seed = cfg.trainer.prompts_per_step, derived_seed(cfg.seed, step, 0) + (round_ << 40)
    if round_ == 0:
        rows = step_indices(len(run.train_prompts), count, step, cfg.seed)
    else:
        rows = torch.randperm(len(run.train_prompts), generator=torch.Generator().manual_seed(seed))[:count].tolist()
    mine = run.ranks.share(len(rows))
    batch = run.train_prompts.take([rows[i] for i in mine])
    run.sampler.wake()
    rollouts = run.sampler.generate(batch, run.train_params, seeds=prompt_seeds(seed, mine))
    clock.lap("generate")
    scores = run.rewards.score(batch, rollouts)
    if run.ranks.active:
        shares = run.ranks.gather((rollouts, scores))
        rollouts, scores = Rollouts.cat([r for r, _ in shares]), Scores.cat([s for _, s in shares])
    clock.lap("reward")
    context = FilterContext(torch.Generator().manual_seed(derived_seed(cfg.seed, step, 3) + (round_ << 40)), run.difficulty)
    return rollouts, scores, GROUP_FILTERS[cfg.algorithm.group_filter](rollouts, scores, cfg.algorithm, context)


def collect(run: Run, step: int, clock: "Stopwatch") -> tuple[Rollouts, Scores, Selection, dict[str, float]]:
    """Sample rounds until prompts_per_step groups keep a completion or max_sampling_rounds is
    reached (DAPO's dynamic sampling, ALGORITHMS.md §3.2); kept groups beyond the target are
    discarded, not carried over, and a short batch trains with a warning. Every round samples
    from the same policy, so nothing in the buffer is stale."""
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
    if algorithm.max_sampling_rounds > 1 and used.sum() < target:
        from grpo_cli.metrics import console

        console.print(f"[yellow]warning:[/] step {step + 1}: {int(used.sum())} of {target} groups had a spread of "
                      f"correctness after {len(parts)} rounds (algorithm.max_sampling_rounds); training on those")
    return rollouts, scores, selection, sampling


def rollout_metrics(rollouts: Rollouts, scores: Scores, selection: Selection, algorithm) -> dict[str, float]:
    """Health of everything generated this step (all rounds, before removing dropped groups)."""
    lengths = rollouts.completion_lengths.float()
    selected = selection.selected & selection.kept
    stats = group_stats(scores.total, rollouts.group_ids, algorithm.std_ddof)
    out = {
        "reward/mean": float(scores.total.nanmean()),
        "reward/std": float(scores.total[~scores.total.isnan()].std()) if scores.total.numel() > 1 else 0.0,
        "accuracy/train": float(scores.correct.float().mean()),
        "completion/mean_length": float(lengths.mean()),
        "completion/min_length": float(lengths.min()),
        "completion/max_length": float(lengths.max()),
        "completion/truncated_fraction": float(rollouts.truncated.float().mean()),
        "groups/no_spread_fraction": float(stats.no_spread.float().mean()),
        "groups/selected_fraction": float(selected.float().mean()),
        "completion/selected_mean_length": float(lengths[selected].mean()) if selected.any() else 0.0,
        "sampler/policy_version": float(rollouts.policy_version),  # the push these were sampled after
    }
    for name, values in scores.components.items():
        out[f"reward/{name}"] = float(values.nanmean())
    for name, failed in scores.failed.items():
        out[f"reward/{name}/failed"] = float(failed.sum())  # raised or timed out: reward None
    return out


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


def run_eval(run: Run, step: int) -> EvalResult | None:
    if run.eval_prompts is None:
        return None
    run.sampler.wake()
    mine = sample_and_score(run.sampler, run.eval_prompts, run.rewards, run.eval_params,
                            seed=derived_seed(run.cfg.seed, 0, 2), rows=run.ranks.share(len(run.eval_prompts)))
    return EvalSamples.merge(run.ranks.gather(mine)).summary(run.eval_params.n)


def eval_record(result: EvalResult | None) -> dict[str, float]:
    return {} if result is None else {f"eval/{k}": v for k, v in result.to_dict().items()}


def save_checkpoint(run: Run, step: int, base_eval: EvalResult | None):
    """Every rank takes part in gathering the sharded state; rank 0 writes it."""
    state = {"learner": run.learner.state_dict(), "difficulty": run.difficulty.state_dict(),
             "base_eval": None if base_eval is None else base_eval.to_dict()}
    policy = run.learner.export()
    path = checkpoint.checkpoint_root(run.cfg.output_dir) / f"step_{step}"
    if run.ranks.main:
        path = checkpoint.save(run.cfg.output_dir, step, policy, run.tokenizer, state, keep_last=run.cfg.trainer.keep_last)
    run.ranks.barrier()
    return path


def restore(run: Run, resume_from) -> tuple[int, EvalResult | None]:
    """Optimizer, scheduler and RNG from a checkpoint (the weights were loaded from it)."""
    state = checkpoint.load_state(resume_from)
    run.learner.load_state_dict(state["learner"])
    run.difficulty.load_state_dict(state["difficulty"])
    checkpoint.restore_rng(state["rng"])
    run.sampler.version = state["step"]  # it loaded the checkpoint's weights: the policy after that step
    base_eval = EvalResult(**state["base_eval"]) if state.get("base_eval") else None
    return state["step"], base_eval


def is_due(every: int, step: int) -> bool:
    return every > 0 and step % every == 0


def check_nonfinite(cfg, step: int, in_a_row: int, record: dict, saved) -> None:
    """Say that a step's update was skipped; stop after trainer.max_nonfinite_steps in a row."""
    from grpo_cli.metrics import console

    if in_a_row == 0:
        return
    console.print(f"[yellow]warning:[/] step {step}: non-finite loss or gradient (grad_norm={record.get('grad_norm')}); "
                  f"update skipped. Likely: learning rate too high, float16 overflow, or an infinite reward")
    if in_a_row >= cfg.trainer.max_nonfinite_steps:
        raise RunStopped(f"stopped at step {step}: {in_a_row} steps in a row had a non-finite loss or gradient "
                         f"(trainer.max_nonfinite_steps={cfg.trainer.max_nonfinite_steps}); lower trainer.lr or use "
                         f"model.dtype=bfloat16, then resume from {saved or 'the start'}", exit_code=3)


def stop_now(run: Run, step: int, base_eval, saved, received) -> None:
    """After a SIGINT / SIGTERM: make sure this step is saved, say how to resume, stop."""
    if saved is None or Path(saved).name != f"step_{step}":
        saved = save_checkpoint(run, step, base_eval)
    raise RunStopped(f"{received.name}: stopped after step {step}; checkpoint: {saved}\n"
                     f"resume with: grpo train output_dir={run.cfg.output_dir} resume=auto (and the same overrides)",
                     exit_code=128 + int(received))


def train(cfg, config_yaml: str, overrides: list[str]) -> dict:
    """The run: resume or start, evaluate the base, step, checkpoint, evaluate, summarise."""
    from grpo_cli import distributed
    from grpo_cli.metrics import console
    from grpo_cli.runtime import build, check_run_dir, preflight, prepare_run_dir

    preflight(cfg)
    resume_from = checkpoint.find_resume_point(cfg.output_dir, cfg.resume)
    check_run_dir(cfg, config_yaml)
    ranks = distributed.init_ranks(cfg.device)
    console.quiet = not ranks.main  # one rank speaks; the others would repeat it
    try:
        run = build(cfg, str(resume_from) if resume_from else cfg.model.name_or_path, ranks)
        try:
            # Written only once the model, data and rewards have loaded: a run that fails to
            # start leaves no folder behind to be refused next time.
            run_dir = prepare_run_dir(cfg, config_yaml, overrides) if ranks.main else Path(cfg.output_dir)
            ranks.barrier()
            return run_steps(run, run_dir, resume_from)
        finally:
            run.rewards.close()  # stop the reward worker processes, also on an error
            run.sampler.close()  # before the process group goes: a vLLM engine under torchrun uses it
    finally:
        distributed.close(ranks)


def run_steps(run: Run, run_dir, resume_from) -> dict:
    """Evaluate the base (or restore), then step, evaluate and checkpoint to the end."""
    from grpo_cli.metrics import MetricsFile, ProgressBar, console

    cfg = run.cfg
    start, base_eval = restore(run, resume_from) if resume_from else (0, None)
    metrics = MetricsFile(run_dir / "metrics.jsonl" if run.ranks.main else None, keep_through=start if resume_from else -1)
    if resume_from is None:
        if run.eval_prompts is not None:
            console.print(f"evaluating the base model: {len(run.eval_prompts)} held-out prompts x {cfg.eval.k} samples")
        base_eval = run_eval(run, 0)
        metrics.write({"step": 0, **eval_record(base_eval)})
    else:
        console.print(f"resuming from {resume_from}: step {start} of {cfg.trainer.steps}")
    final_eval, saved, nonfinite = base_eval, resume_from, 0
    with metrics, ProgressBar(total=cfg.trainer.steps, start=start) as bar, StopRequest() as stop:
        for step in range(start + 1, cfg.trainer.steps + 1):
            record = {"step": step, **train_step(run, step - 1)}
            record["loss"] = record["loss/total"]
            if is_due(cfg.trainer.eval_every, step) or step == cfg.trainer.steps:
                final_eval = run_eval(run, step)
                record.update(eval_record(final_eval))
            metrics.write(record)
            bar.update(step, record)
            if is_due(cfg.trainer.save_every, step) or step == cfg.trainer.steps:
                saved = save_checkpoint(run, step, base_eval)
            nonfinite = nonfinite + 1 if record.get("update/nonfinite", 0.0) > 0 else 0
            check_nonfinite(cfg, step, nonfinite, record, saved)
            received = stop.received
            if run.ranks.any(received is not None):  # every rank stops at the same step
                stop_now(run, step, base_eval, saved, received or signal.SIGTERM)
    return {"run_dir": str(run_dir), "checkpoint": None if saved is None else str(saved),
            "base": None if base_eval is None else base_eval.to_dict(),
            "final": None if final_eval is None else final_eval.to_dict(), "steps": cfg.trainer.steps}
