"""One live `grpo train` per run folder: RunLock holds an flock on `<run>/.lock`, which names
the holder (pid, host, start time). The kernel releases the lock when the holder dies, so a
crashed run's folder is taken over by the next run, which says so. `lock_holder` probes it
without taking it (what `grpo runs` shows as running).
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import socket
import time
from pathlib import Path

from grpo_cli.errors import UserError
from grpo_cli.metrics import console
from grpo_cli.run_folder.layout import LOCK_FILE


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


def lock_holder(run_dir: Path, problems: list[str] | None = None) -> dict | None:
    """Who holds the run folder's lock (RunLock: an flock on .lock, which holds the
    holder's pid, host and start time as JSON), or None when no live process does. Probed with
    a shared, non-blocking flock, released at once; the file is only read, never made."""
    try:
        fd = os.open(Path(run_dir) / LOCK_FILE, os.O_RDONLY)
    except FileNotFoundError:
        return None
    except OSError as error:
        if problems is not None:
            problems.append(f"{LOCK_FILE} cannot be opened: {error.strerror}")
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError as error:
        if error.errno in (errno.EWOULDBLOCK, errno.EACCES):
            holder = read_holder(fd)
            return holder if isinstance(holder, dict) else {}
        if problems is not None:
            problems.append(f"{LOCK_FILE} cannot be probed: {error.strerror}")
        return None
    else:
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)
