"""The run folder belongs to one run: where it may lie and what a resume may change.

- It never lies inside another run's folder (that run's checkpoint pruning would delete it).
- It holds one run: another run's config is refused unless overwrite=true; a resume may change
  how long the run goes and how it reports (RESUMABLE), never what it trains.
- config.yaml and overrides.yaml are written once, when the run starts; `grpo eval` reads them
  for every checkpoint of the run. summary.json is written when it ends.
- Who holds it while it runs: lock.py.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import yaml

from grpo_cli.config import GrpoConfig
from grpo_cli.errors import UserError
from grpo_cli.run_folder.layout import CONFIG_FILE, OVERRIDES_FILE, SUMMARY_FILE, checkpoint_root, run_folder_of

# What a resumed run may change: how long it runs, how it reports, where its folder now lies
# and how it uses the machine; never what it trains (algorithm, model, data, rewards,
# sampling, optimizer).
RESUMABLE = ("trainer.steps", "trainer.save_every", "trainer.eval_every", "trainer.keep_last",
             "trainer.max_nonfinite_steps", "trainer.micro_batch_size", "trainer.micro_batch_tokens",
             "trainer.logprob_chunk", "trainer.share_prompts", "model.gradient_checkpointing", "sampler.batch_size", "sampler.threads",
             "reward.workers", "trainer.report_to", "trainer.log_samples", "trainer.log_samples_every", "eval.", "score.",
             "device", "resume", "overwrite", "output_dir")
LEADING = (".name", ".name_or_path", ".path", ".objective")
SHOWN_CHANGES = 5  # a resume into another run's checkpoint can differ in dozens of keys


def flat_config(node, prefix: str = "") -> dict:
    """A nested config as {"trainer.lr": 0.0003, ...}."""
    if not isinstance(node, dict):
        return {prefix: node}
    out = {}
    for key, value in node.items():
        out.update(flat_config(value, f"{prefix}.{key}" if prefix else str(key)))
    return out


def changed_keys(saved_yaml: str, config_yaml: str) -> list[str]:
    """Keys whose value differs between two composed configs, other than RESUMABLE ones and
    keys the saved one lacks (added by a later version, at their defaults); the choices that
    imply the others (algorithm.name, model.name_or_path, data.path...) first."""
    saved, new = flat_config(yaml.safe_load(saved_yaml) or {}), flat_config(yaml.safe_load(config_yaml) or {})
    keys = sorted(saved.keys(), key=lambda key: (not key.endswith(LEADING), key))
    return [f"{key} ({saved.get(key)} -> {new.get(key)})" for key in keys
            if saved.get(key) != new.get(key) and not key.startswith(RESUMABLE)]


def require_writable_folder(path: Path, key: str) -> None:
    """`path` is a folder, or can be made one: found before any model loads."""
    if path.exists() and not path.is_dir():
        raise UserError(f"{key}={path} is a file, not a folder; give a folder")
    existing = next(p for p in (path, *path.parents) if p.exists())
    if not existing.is_dir():
        raise UserError(f"{key}={path}: {existing} is a file, not a folder; give a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise UserError(f"{key}={path}: cannot write in {existing}; give a folder you can write to")


def require_writable_file(path: Path, key: str) -> None:
    """`path` can be written as a file (not a folder), checked before the work that fills it."""
    if path.is_dir():
        raise UserError(f"{key}={path} is a folder; give a file name, e.g. {path / 'out.json'}")
    require_writable_folder(path.parent, f"the folder of {key}")


def check_run_dir(cfg: GrpoConfig, config_yaml: str, resume_from: Path | None = None) -> Path:
    """The run folder may take this run: not inside another run's folder, not holding another
    run (unless overwrite), and, on resume, holding the run being resumed. Reads only."""
    run_dir = Path(cfg.output_dir)
    require_writable_folder(run_dir, "output_dir")
    outer = next((parent for parent in run_dir.resolve().parents
                  if (parent / CONFIG_FILE).is_file() and checkpoint_root(parent).is_dir()), None)
    if outer is not None:
        raise UserError(f"output_dir={run_dir} lies inside the run folder {outer}, whose checkpoint pruning "
                        f"could delete it; pick an output_dir outside it")
    saved = run_dir / CONFIG_FILE
    if saved.exists() and cfg.resume is None and not cfg.overwrite and saved.read_text() != config_yaml:
        raise UserError(f"{run_dir} holds another run's config; pass resume=auto to continue it, "
                        f"overwrite=true to reuse the folder, or a new output_dir")
    started = (run_folder_of(resume_from) / CONFIG_FILE) if resume_from else None
    if started is not None and started.is_file():
        changed = changed_keys(started.read_text(), config_yaml)
        if changed:
            more = f" and {len(changed) - SHOWN_CHANGES} more" if len(changed) > SHOWN_CHANGES else ""
            raise UserError(f"resume would change what the run trains: {', '.join(changed[:SHOWN_CHANGES])}{more}; "
                            f"resume with the run's own settings (its overrides.yaml), or start a new run in a new "
                            f"output_dir with model.name_or_path={resume_from}")
    return run_dir


def prepare_run_dir(cfg: GrpoConfig, config_yaml: str, overrides: list[str]) -> Path:
    """Write the run folder's config.yaml and overrides.yaml, once: a resumed run keeps the
    ones it started with (grpo eval reads them for every checkpoint)."""
    run_dir = Path(cfg.output_dir)
    saved = run_dir / CONFIG_FILE
    run_dir.mkdir(parents=True, exist_ok=True)
    if cfg.resume is not None and saved.is_file():
        return run_dir
    saved.write_text(config_yaml)
    (run_dir / OVERRIDES_FILE).write_text(yaml.safe_dump(list(overrides)))
    return run_dir


def write_summary(run_dir: Path, summary: dict) -> None:
    (Path(run_dir) / SUMMARY_FILE).write_text(json.dumps(summary, indent=2) + "\n")
