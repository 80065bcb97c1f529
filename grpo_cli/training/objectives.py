"""The training objectives (`algorithm.objective`) and the start-up plan of a run.

What validation and the commands need to know about an objective without loading the driver:
its name, whether `algorithm.kl_coef` adds a KL term, what its held-out data holds, what it
checks in a second, and which module builds the driver's job. The start-up plan is the part of
`grpo train` that `grpo validate` repeats without training: the objective's check, the resume
point, whether that checkpoint was saved by this kind of run, and whether the run folder may be
used; all before a folder is made or a model loads.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from grpo_cli.config import GrpoConfig
from grpo_cli.errors import UserError
from grpo_cli.run_folder import checkpoint
from grpo_cli.run_folder.admission import check_run_dir
from grpo_cli.sampler import engine
from grpo_cli.training.runtime import pick_device


def sampler_preflight(cfg: GrpoConfig) -> None:
    """The sampler's engine can run on the chosen device (vLLM installed, a GPU where it needs one)."""
    engine(cfg.sampler.name).check_available(pick_device(cfg.device))


def single_process_preflight(cfg: GrpoConfig) -> None:
    """The preference objective trains in one process, on a device that exists."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise UserError(f"algorithm={cfg.algorithm.name} trains in one process; start it without torchrun")
    pick_device(cfg.device)


@dataclass(frozen=True)
class Objective:
    """job_module: the module whose `build(cfg, policy path, ranks)` makes the driver's job.
    preflight: what fails in a second, before a folder is made or a model loads.
    kl_term: algorithm.kl_coef adds a KL term (with a reference model) to the objective.
    held_out: what its held-out data holds for `grpo eval`: prompts or pairs."""

    job_module: str
    preflight: Callable[[GrpoConfig], None]
    kl_term: bool
    held_out: str


# algorithm.objective
OBJECTIVES = {
    "rl": Objective(job_module="grpo_cli.training.rl", preflight=sampler_preflight, kl_term=True, held_out="prompts"),
    # The reference enters through the margin h, with its strength in algorithm.preference.beta.
    "preference": Objective(job_module="grpo_cli.training.offline", preflight=single_process_preflight, kl_term=False,
                            held_out="pairs"),
}


def saved_by(cfg: GrpoConfig) -> dict:
    """What a checkpoint records about the run that saved it; a resume must match it."""
    return {"objective": cfg.algorithm.objective, "algorithm": cfg.algorithm.name, "lora": cfg.model.lora.rank > 0}


def plan_start(cfg: GrpoConfig, config_yaml: str) -> Path | None:
    """The objective's preflight, the checkpoint to resume from (None: a fresh start), checked
    to have been saved by this kind of run, and the run folder checked for this config."""
    OBJECTIVES[cfg.algorithm.objective].preflight(cfg)
    resume_from = checkpoint.find_resume_point(cfg.output_dir, cfg.resume)
    if resume_from is not None:
        checkpoint.verify(resume_from, "resume", resuming_as=saved_by(cfg))
    check_run_dir(cfg, config_yaml, resume_from)
    return resume_from
