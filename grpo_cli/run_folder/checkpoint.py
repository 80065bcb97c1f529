"""Checkpoints: Hugging Face-format weights and tokenizer plus the trainer state to resume.

`checkpoints/step_<N>/` holds what `from_pretrained` loads and `trainer_state.pt` (optimizer,
scheduler, RNG states, step; the data position is the step itself, see data.step_indices).
A checkpoint is written into a hidden temporary folder and renamed into place, so a folder
named step_<N> is always complete; old ones are pruned only after the new one exists. A disk
can still cut a file short later: `verify` reads every header before anything loads, and
names the newest intact checkpoint before a damaged one.
"""

from __future__ import annotations

import os
import random
import shutil
from pathlib import Path

import torch
from safetensors import safe_open

from grpo_cli.errors import UserError, one_line
from grpo_cli.run_folder.layout import ADAPTER_DIR, STATE_FILE, STEP_DIR, checkpoint_root, run_folder_of, step_dir

TOKENIZER_FILE = "tokenizer_config.json"  # what the tokenizer's save_pretrained always writes


def list_checkpoints(run_dir: str | Path) -> list[tuple[int, Path]]:
    """Complete checkpoints of a run, oldest first."""
    root = checkpoint_root(run_dir)
    if not root.is_dir():
        return []
    found = []
    for child in root.iterdir():
        match = STEP_DIR.match(child.name)
        if match and (child / STATE_FILE).is_file():
            found.append((int(match.group(1)), child))
    return sorted(found)


def save(run_dir: str | Path, step: int, policy, tokenizer, trainer_state: dict, keep_last: int = 0) -> Path:
    """`policy`: the learner's Export (writes the weights, and the adapters with LoRA)."""
    root = checkpoint_root(run_dir)
    root.mkdir(parents=True, exist_ok=True)
    final = step_dir(run_dir, step)
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
    match = STEP_DIR.match(Path(path).name)
    return int(match.group(1)) if match else int(load_state(Path(path))["step"])


def load_state(path: Path) -> dict:
    return torch.load(path / STATE_FILE, map_location="cpu", weights_only=False)


def rng_state() -> dict:
    return {"torch": torch.get_rng_state(), "python": random.getstate()}


def restore_rng(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])


def verify(path: Path, key: str, resuming_as: dict | None = None) -> None:
    """Raise UserError unless `path` is whole: its tokenizer files, every safetensors header
    (which must cover its file) and, on resume, its trainer state, saved by a run of the same
    objective with LoRA on or off as in `resuming_as` (the driver's saved_by). `key` is the
    setting that named it (resume, checkpoint), for the hint."""
    path = Path(path)
    if not (path / TOKENIZER_FILE).is_file():
        raise UserError(f"checkpoint {path} has no tokenizer files ({TOKENIZER_FILE} missing); copy them from the "
                        f"base model's folder into it, or give {key} a complete step_<N> folder")
    problem, state = _weights_damage(path), None
    if problem is None and resuming_as is not None:
        state, problem = _open_state(path)
    if problem:
        earlier = intact_before(path)
        hint = (f"the newest intact one before it is {earlier}: {key}={earlier}" if earlier
                else "no earlier checkpoint of its run is intact")
        raise UserError(f"checkpoint {path} is damaged ({problem}); {hint}")
    if state is not None:
        _check_saved_by(path, state.get("saved_by") or {}, resuming_as)


def damage(path: Path, with_state: bool) -> str | None:
    """What is wrong with a checkpoint's files, or None."""
    return _weights_damage(path) or (_open_state(path)[1] if with_state else None)


def _weights_damage(path: Path) -> str | None:
    files = sorted(path.glob("*.safetensors")) + sorted((path / ADAPTER_DIR).glob("*.safetensors"))
    if not files:
        return "no *.safetensors weights"
    for file in files:
        try:
            with safe_open(file, framework="pt"):
                pass
        except Exception as error:  # safetensors reports a cut or garbled file with several types
            return f"{file.relative_to(path)}: {one_line(error)}"
    return None


def _open_state(path: Path) -> tuple[dict | None, str | None]:
    """The trainer state, or what stops it from loading. mmap: the optimizer's tensors are not
    read, only the archive and its index."""
    try:
        return torch.load(path / STATE_FILE, map_location="cpu", weights_only=False, mmap=True), None
    except Exception as error:  # a cut archive or pickle fails with several types
        return None, f"{STATE_FILE} cannot be read: {one_line(error)}"


def intact_before(path: Path) -> Path | None:
    """The newest checkpoint of the same run, older than `path`, whose files are whole."""
    match = STEP_DIR.match(Path(path).name)
    if match is None:
        return None
    older = [p for step, p in list_checkpoints(run_folder_of(path)) if step < int(match.group(1))]
    return next((p for p in reversed(older) if damage(p, with_state=True) is None), None)


def _check_saved_by(path: Path, saved: dict, resuming_as: dict) -> None:
    start_new = f"drop resume and start a new run with model.name_or_path={path}"
    if saved.get("objective", resuming_as["objective"]) != resuming_as["objective"]:
        raise UserError(f"checkpoint {path} was saved by a {saved['algorithm']} run (algorithm.objective="
                        f"{saved['objective']}); this run is {resuming_as['algorithm']} ({resuming_as['objective']}), "
                        f"and a resume continues the same objective. To train from those weights, {start_new}")
    has_adapters = (path / ADAPTER_DIR).is_dir()
    if has_adapters != resuming_as["lora"]:
        held = "LoRA adapters" if has_adapters else "full weights (no LoRA adapters)"
        wanted = "sets model.lora.rank > 0" if resuming_as["lora"] else "sets model.lora.rank=0"
        raise UserError(f"checkpoint {path} holds {held} but this run {wanted}; resume with the run's own "
                        f"model.lora settings, or {start_new}")


def is_checkpoint(path: str | Path) -> bool:
    path = Path(path)
    return (path / "config.json").is_file() and any(path.glob("*.safetensors"))
