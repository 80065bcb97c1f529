"""Checkpoints: Hugging Face-format weights and tokenizer plus the trainer state to resume.

`checkpoints/step_<N>/` holds what `from_pretrained` loads and `trainer_state.pt` (optimizer,
scheduler, RNG states, step; the data position is the step itself, see data.step_indices).
A checkpoint is written into a hidden temporary folder and renamed into place, so a folder
named step_<N> is always complete; old ones are pruned only after the new one exists.
"""

from __future__ import annotations

import os
import random
import re
import shutil
from pathlib import Path

import torch

from grpo_cli.errors import UserError

STATE_FILE = "trainer_state.pt"
_STEP_DIR = re.compile(r"^step_(\d+)$")


def checkpoint_root(run_dir: str | Path) -> Path:
    return Path(run_dir) / "checkpoints"


def list_checkpoints(run_dir: str | Path) -> list[tuple[int, Path]]:
    """Complete checkpoints of a run, oldest first."""
    root = checkpoint_root(run_dir)
    if not root.is_dir():
        return []
    found = []
    for child in root.iterdir():
        match = _STEP_DIR.match(child.name)
        if match and (child / STATE_FILE).is_file():
            found.append((int(match.group(1)), child))
    return sorted(found)


def save(run_dir: str | Path, step: int, policy, tokenizer, trainer_state: dict, keep_last: int = 0) -> Path:
    """`policy`: the learner's Export (writes the weights, and the adapters with LoRA)."""
    root = checkpoint_root(run_dir)
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"step_{step}"
    staging = root / f".tmp-step_{step}"
    shutil.rmtree(staging, ignore_errors=True)
    policy.write(staging)
    tokenizer.save_pretrained(staging)
    state = dict(trainer_state, step=step, rng=rng_state())
    torch.save(state, staging / STATE_FILE)
    if final.exists():
        shutil.rmtree(final)
    os.replace(staging, final)
    if keep_last > 0:
        for _, old in list_checkpoints(run_dir)[:-keep_last]:
            shutil.rmtree(old, ignore_errors=True)
    return final


def find_resume_point(run_dir: str | Path, resume: str | None) -> Path | None:
    """None (fresh run), the newest complete checkpoint (`auto`), or the given folder."""
    if resume is None:
        return None
    if resume == "auto":
        found = list_checkpoints(run_dir)
        if not found:
            raise UserError(f"resume=auto: {run_dir} has no complete checkpoint; drop resume to start fresh")
        return found[-1][1]
    path = Path(resume)
    if not (path / STATE_FILE).is_file():
        raise UserError(f"resume={resume} is not a checkpoint folder (no {STATE_FILE}); use resume=auto or a step_<N> folder")
    return path


def step_of(path: Path) -> int:
    """The step a checkpoint folder was saved after: its step_<N> name, else its trainer state."""
    match = _STEP_DIR.match(Path(path).name)
    return int(match.group(1)) if match else int(load_state(Path(path))["step"])


def run_folder_of(path: Path) -> Path:
    """The run folder a checkpoint belongs to (<run>/checkpoints/step_<N>)."""
    return Path(path).resolve().parent.parent


def load_state(path: Path) -> dict:
    return torch.load(path / STATE_FILE, map_location="cpu", weights_only=False)


def rng_state() -> dict:
    return {"torch": torch.get_rng_state(), "python": random.getstate()}


def restore_rng(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])


def is_checkpoint(path: str | Path) -> bool:
    path = Path(path)
    return (path / "config.json").is_file() and any(path.glob("*.safetensors"))
