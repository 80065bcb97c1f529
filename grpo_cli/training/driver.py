"""The run: one driver for every kind of training.

It owns what every objective shares: the resume point, the run folder, metrics.jsonl and the
progress bar, evaluation and checkpoint cadence, SIGINT / SIGTERM, the non-finite guard and the
summary. An objective hands it a job (rl.RLJob, offline.PreferenceJob) that knows how to take
one step, evaluate, and keep its own state in a checkpoint; nothing else differs.
"""

from __future__ import annotations

import contextlib
import signal
from dataclasses import dataclass
from importlib import import_module
from pathlib import Path
from typing import Protocol

from grpo_cli.completion_samples import samples_table, write_samples
from grpo_cli.config import GrpoConfig
from grpo_cli.errors import RunStopped, UserError
from grpo_cli.loggers import Loggers
from grpo_cli.metrics import MetricsFile, ProgressBar, StepResult, console
from grpo_cli.run_folder import checkpoint
from grpo_cli.run_folder.admission import prepare_run_dir
from grpo_cli.run_folder.layout import METRICS_FILE, STATE_FILE, step_dir
from grpo_cli.run_folder.lock import RunLock
from grpo_cli.run_folder.overrides import read_overrides, resume_command
from grpo_cli.training import distributed
from grpo_cli.training.clock import is_due
from grpo_cli.training.distributed import Ranks
from grpo_cli.training.learner import Learner
from grpo_cli.training.objectives import OBJECTIVES, plan_start, saved_by
from grpo_cli.training.shutdown import StopRequest


class Evaluation(Protocol):
    def to_dict(self) -> dict: ...

    def record(self) -> dict[str, float]: ...


class Job(Protocol):
    """What one kind of training hands the driver."""

    cfg: GrpoConfig
    tokenizer: object
    learner: Learner
    ranks: Ranks
    evaluates_base: bool  # the held-out figures of the base model mean something (written as step 0)

    def step(self, step: int, samples: int) -> StepResult:
        """Train on step `step` (0-based); the step's metrics, with loss/total and update/nonfinite,
        and the completion samples of `samples` prompts (none for 0)."""

    def evaluate(self, step: int) -> Evaluation | None:
        """Held-out figures after `step` steps; None without held-out data."""

    def state_dict(self) -> dict:
        """What a checkpoint keeps beside the learner's state."""

    def load_state_dict(self, state: dict) -> None:
        """Restore it from a checkpoint's state (which also holds `step`); refuse one that does not fit."""

    def close(self) -> None:
        """Stop what runs beside the learner (reward workers, the sampler's engine)."""


def train(cfg: GrpoConfig, config_yaml: str, overrides: list[str]) -> dict:
    """Resume or start, evaluate the base, step, checkpoint, evaluate; the run's summary."""
    resume_from = plan_start(cfg, config_yaml)
    done = checkpoint.step_of(resume_from) if resume_from is not None else None
    if done is not None and done >= cfg.trainer.steps:
        # Before anything is loaded or written: the run's files stay exactly as they are.
        raise RunStopped(f"nothing to do: {resume_from} is step {done} of trainer.steps={cfg.trainer.steps}; "
                         f"raise trainer.steps to train further", exit_code=0)
    ranks = distributed.init_ranks(cfg.device)
    console.quiet = not ranks.main  # one rank speaks; the others would repeat it
    try:
        with RunLock(Path(cfg.output_dir)) if ranks.main else contextlib.nullcontext():
            build = import_module(OBJECTIVES[cfg.algorithm.objective].job_module).build
            job = build(cfg, str(resume_from) if resume_from else cfg.model.name_or_path, ranks)
            try:
                # Written only once the model, data and rewards have loaded: a run that fails
                # to start leaves no folder behind to be refused next time.
                run_dir = prepare_run_dir(cfg, config_yaml, overrides) if ranks.main else Path(cfg.output_dir)
                ranks.barrier()
                return run_steps(job, run_dir, resume_from)
            finally:
                job.close()
    finally:
        distributed.close(ranks)


def run_steps(job: Job, run_dir: Path, resume_from: Path | None) -> dict:
    """Evaluate the base (or restore), then step, evaluate and checkpoint to the end."""
    cfg = job.cfg
    start, base = restore(job, resume_from) if resume_from else (0, None)
    main = job.ranks.main
    metrics = MetricsFile(run_dir / METRICS_FILE if main else None, keep_through=start if resume_from else -1)
    loggers = Loggers(cfg.trainer.report_to, run_dir if main else None, start if resume_from else None)
    final, saved, nonfinite = base, resume_from, 0
    with metrics, loggers:
        if resume_from is None and job.evaluates_base:
            evaluation = job.evaluate(0)
            final = base = as_dict(evaluation)
            write_record({"step": 0, **as_record(evaluation)}, metrics, loggers)
        elif resume_from is not None:
            console.print(f"resuming from {resume_from}: step {start} of {cfg.trainer.steps}")
        with ProgressBar(total=cfg.trainer.steps, start=start) as bar, StopRequest() as stop:
            for step in range(start + 1, cfg.trainer.steps + 1):
                evaluates = is_due(cfg.trainer.eval_every, step) or step == cfg.trainer.steps
                shows = evaluates or is_due(cfg.trainer.log_samples_every, step)
                result = job.step(step - 1, cfg.trainer.log_samples if shows else 0)
                record = {"step": step, **result.metrics, "loss": result.metrics["loss/total"]}
                if evaluates:
                    evaluation = job.evaluate(step)
                    final = as_dict(evaluation)
                    record.update(as_record(evaluation))
                write_record(record, metrics, loggers)
                if result.samples and main:
                    show_samples(run_dir, step, result.samples, loggers)
                bar.update(step, record)
                if is_due(cfg.trainer.save_every, step) or step == cfg.trainer.steps:
                    saved = save_checkpoint(job, step, base)
                nonfinite = nonfinite + 1 if record.get("update/nonfinite", 0.0) > 0 else 0
                check_nonfinite(cfg, step, nonfinite, record, saved)
                received = stop.received
                if job.ranks.any(received is not None):  # every rank stops at the same step
                    stop_now(job, step, base, saved, received or signal.SIGTERM)
    return {"run_dir": str(run_dir), "checkpoint": None if saved is None else str(saved), "base": base,
            "final": final, "steps": cfg.trainer.steps}


def write_record(record: dict, metrics: MetricsFile, loggers: Loggers) -> None:
    """metrics.jsonl first: it is the run's own record; the loggers mirror it."""
    metrics.write(record)
    loggers.log(record)


def show_samples(run_dir: Path, step: int, rows: list[dict], loggers: Loggers) -> None:
    """The step's completion samples: to the run folder, the loggers and the console."""
    write_samples(run_dir, step, rows)
    loggers.log_samples(step, rows)
    console.print(samples_table(rows))


def as_dict(evaluation: Evaluation | None) -> dict | None:
    return None if evaluation is None else evaluation.to_dict()


def as_record(evaluation: Evaluation | None) -> dict[str, float]:
    return {} if evaluation is None else evaluation.record()


def save_checkpoint(job: Job, step: int, base: dict | None) -> Path:
    """Every rank takes part in gathering the sharded state; rank 0 writes it."""
    state = {"learner": job.learner.state_dict(), **job.state_dict(), "base_eval": base, "saved_by": saved_by(job.cfg)}
    policy = job.learner.export()
    path = step_dir(job.cfg.output_dir, step)
    if job.ranks.main:
        path = checkpoint.save(job.cfg.output_dir, step, policy, job.tokenizer, state, keep_last=job.cfg.trainer.keep_last)
    job.ranks.barrier()
    return path


def restore(job: Job, resume_from: Path) -> tuple[int, dict | None]:
    """The job's state, then the optimizer, scheduler and RNG (the weights were loaded from the
    checkpoint); the step it was taken after and the base model's held-out figures."""
    state = checkpoint.load_state(resume_from)
    try:
        job.load_state_dict(state)  # first: it refuses a checkpoint that does not fit the data
    except KeyError as missing:  # saved before checkpoints named their objective (saved_by)
        raise UserError(f"checkpoint {resume_from} has no {missing} in its {STATE_FILE}: it was saved by "
                        f"another kind of run than {job.cfg.algorithm.name}; resume it with its own settings") from None
    job.learner.load_state_dict(state["learner"])
    checkpoint.restore_rng(state["rng"])
    return state["step"], state.get("base_eval") or None


def check_nonfinite(cfg: GrpoConfig, step: int, in_a_row: int, record: dict, saved) -> None:
    """Say that a step's update was skipped; stop after trainer.max_nonfinite_steps in a row."""
    if in_a_row == 0:
        return
    console.print(f"[yellow]warning:[/] step {step}: non-finite loss or gradient (grad_norm={record.get('grad_norm')}); "
                  f"update skipped. Likely: learning rate too high, float16 overflow, or an infinite reward")
    if in_a_row >= cfg.trainer.max_nonfinite_steps:
        raise RunStopped(f"stopped at step {step}: {in_a_row} steps in a row had a non-finite loss or gradient "
                         f"(trainer.max_nonfinite_steps={cfg.trainer.max_nonfinite_steps}); lower trainer.lr or use "
                         f"model.dtype=bfloat16, then resume from {saved or 'the start'}", exit_code=3)


def stop_now(job: Job, step: int, base: dict | None, saved, received: signal.Signals) -> None:
    """After a SIGINT / SIGTERM: make sure this step is saved, say how to resume, stop."""
    if saved is None or Path(saved).name != f"step_{step}":
        saved = save_checkpoint(job, step, base)
    run_dir = Path(job.cfg.output_dir)
    try:
        resume = resume_command(run_dir, read_overrides(run_dir))
    except ValueError as error:  # the stop must still be said; the command then lacks the overrides
        resume = f"{resume_command(run_dir, [])} plus the run's overrides ({error})"
    raise RunStopped(f"{received.name}: stopped after step {step}; checkpoint: {saved}\n"
                     f"resume with: {resume}", exit_code=128 + int(received))
