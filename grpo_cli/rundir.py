"""The run folder belongs to one run: where it may lie, what a resume may change, who holds it.

- It never lies inside another run's folder (that run's checkpoint pruning would delete it).
- It holds one run: another run's config is refused unless overwrite=true; a resume may change
  how long the run goes and how it reports (RESUMABLE), never what it trains.
- config.yaml and overrides.yaml are written once, when the run starts; `grpo eval` reads them
  for every checkpoint of the run.
- One live `grpo train` at a time: RunLock holds an flock on `<run>/.lock`, which names the
  holder (pid, host, start time). The kernel releases the lock when the holder dies, so a
  crashed run's folder is taken over by the next run, which says so.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import socket
import time
from pathlib import Path

import yaml

from grpo_cli import checkpoint
from grpo_cli.config import GrpoConfig
from grpo_cli.errors import UserError
from grpo_cli.metrics import console
from grpo_cli.overrides import OVERRIDES_FILE

# What a resumed run may change: how long it runs, how it reports, where its folder now lies
# and how it uses the machine; never what it trains (algorithm, model, data, rewards,
# sampling, optimizer).
RESUMABLE = ("trainer.steps", "trainer.save_every", "trainer.eval_every", "trainer.keep_last",
             "trainer.max_nonfinite_steps", "trainer.micro_batch_size", "trainer.micro_batch_tokens",
             "trainer.logprob_chunk", "model.gradient_checkpointing", "sampler.batch_size", "sampler.threads",
             "reward.workers", "trainer.report_to", "trainer.log_samples", "trainer.log_samples_every", "eval.", "score.",
             "device", "resume", "overwrite", "output_dir")
LEADING = (".name", ".name_or_path", ".path", ".objective")
SHOWN_CHANGES = 5  # a resume into another run's checkpoint can differ in dozens of keys

LOCK_FILE = ".lock"
CONFIG_FILE = "config.yaml"  # the composed config, written once when the run starts
SUMMARY_FILE = "summary.json"  # grpo train's summary, written when the run ends


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
                  if (parent / CONFIG_FILE).is_file() and checkpoint.checkpoint_root(parent).is_dir()), None)
    if outer is not None:
        raise UserError(f"output_dir={run_dir} lies inside the run folder {outer}, whose checkpoint pruning "
                        f"could delete it; pick an output_dir outside it")
    saved = run_dir / CONFIG_FILE
    if saved.exists() and cfg.resume is None and not cfg.overwrite and saved.read_text() != config_yaml:
        raise UserError(f"{run_dir} holds another run's config; pass resume=auto to continue it, "
                        f"overwrite=true to reuse the folder, or a new output_dir")
    started = (checkpoint.run_folder_of(resume_from) / CONFIG_FILE) if resume_from else None
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


class RunLock:
    """Held for a whole `grpo train`: a second live run on the same folder is refused, naming
    the holder. Folders it made are removed again if the run leaves nothing in them (a run
    that fails to start leaves no folder to be refused next time)."""

    def __init__(self, run_dir: Path):
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / LOCK_FILE
        self.fd: int | None = None
        self.made: list[Path] = []

    def __enter__(self) -> "RunLock":
        self.made = [p for p in (self.run_dir, *self.run_dir.parents) if not p.exists()]
        self.run_dir.mkdir(parents=True, exist_ok=True)
        while self.fd is None:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as error:
                holder = read_holder(fd)
                os.close(fd)
                self._remove_made()
                if error.errno not in (errno.EWOULDBLOCK, errno.EACCES):
                    raise UserError(f"cannot lock {self.path}: {error.strerror}; give an output_dir on a "
                                    f"local file system") from error
                raise UserError(f"output_dir={self.run_dir} is in use by another grpo train ({describe_holder(holder)}); "
                                f"wait for it, stop it, or give another output_dir") from error
            if _same_file(fd, self.path):  # not unlinked by a holder that just released it
                self.fd = fd
            else:
                os.close(fd)
        previous = read_holder(self.fd)
        if previous:
            console.print(f"note: taking over {self.run_dir} from a run that ended without releasing it "
                          f"({describe_holder(previous)})")
        holder = {"pid": os.getpid(), "host": socket.gethostname(), "since": time.strftime("%Y-%m-%d %H:%M:%S")}
        os.ftruncate(self.fd, 0)
        os.pwrite(self.fd, json.dumps(holder).encode(), 0)
        return self

    def __exit__(self, *_) -> None:
        # Unlinked while still held: a run that opens the path afterwards makes a new file.
        os.unlink(self.path)
        os.close(self.fd)
        self.fd = None
        self._remove_made()

    def _remove_made(self) -> None:
        for folder in self.made:
            try:
                folder.rmdir()
            except OSError:  # not empty: the run wrote into it
                return


def write_summary(run_dir: Path, summary: dict) -> None:
    (Path(run_dir) / SUMMARY_FILE).write_text(json.dumps(summary, indent=2) + "\n")


def read_holder(fd: int) -> dict:
    """What the lock file at `fd` says of its holder: pid, host, since (empty if unreadable)."""
    try:
        return json.loads(os.pread(fd, 4096, 0) or b"{}")
    except ValueError:
        return {}


def describe_holder(holder: dict) -> str:
    """The holder as RunLock names it when it refuses a second run: pid, host, since."""
    return f"pid {holder.get('pid', '?')} on {holder.get('host', '?')}, since {holder.get('since', '?')}"


def _same_file(fd: int, path: Path) -> bool:
    try:
        return os.fstat(fd).st_ino == os.stat(path).st_ino
    except FileNotFoundError:
        return False
