"""What a run folder holds, by name. Every module that reads or writes one of these files
takes its name from here.

    <output_dir>/
      config.yaml          the composed config, written once when the run starts
      overrides.yaml       the command-line overrides it started with (a resume repeats them)
      metrics.jsonl        one record per step and per evaluation (the run's own record)
      summary.json         grpo train's summary, written when the run ends
      .lock                held by the live grpo train (pid, host, since)
      loggers.json         which steps each logger (TensorBoard, W&B, Trackio) already has
      tensorboard/         TensorBoard's event files, with trainer.report_to=[tensorboard]
      samples/             completion samples, step_<N>.jsonl
      checkpoints/step_<N>/  Hugging Face weights, tokenizer, trainer_state.pt, adapter/ (LoRA)
"""

from __future__ import annotations

import re
from pathlib import Path

CONFIG_FILE = "config.yaml"
OVERRIDES_FILE = "overrides.yaml"
METRICS_FILE = "metrics.jsonl"
SUMMARY_FILE = "summary.json"
LOCK_FILE = ".lock"
LOGGERS_STATE_FILE = "loggers.json"
TENSORBOARD_DIR = "tensorboard"
SAMPLES_DIR = "samples"
CHECKPOINTS_DIR = "checkpoints"
STATE_FILE = "trainer_state.pt"  # in each checkpoint: optimizer, scheduler, RNG states, step
ADAPTER_DIR = "adapter"  # in a LoRA run's checkpoint: the adapters a resume continues from
STEP_DIR = re.compile(r"^step_(\d+)$")


def checkpoint_root(run_dir: str | Path) -> Path:
    return Path(run_dir) / CHECKPOINTS_DIR


def step_dir(run_dir: str | Path, step: int) -> Path:
    return checkpoint_root(run_dir) / f"step_{step}"


def run_folder_of(checkpoint: Path) -> Path:
    """The run folder a checkpoints/step_<N> folder belongs to."""
    return Path(checkpoint).resolve().parent.parent
