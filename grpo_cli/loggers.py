"""trainer.report_to: the run's scalars and completion samples mirrored to TensorBoard, W&B
and Trackio, each through its own library.

metrics.jsonl stays the source of truth: every scalar of a step's record goes to each logger
under the same name and step, the composed config (config.yaml) goes in as hyper-parameters,
and samples go as a table (TensorBoard text, W&B and Trackio tables). Every logger library
is optional and imported only when asked for.

A resumed run continues the same logger run. TensorBoard purges the steps after the
checkpoint (purge_step), so the resumed values replace those of a killed run. W&B and
Trackio cannot rewrite a step: the run id and the last step each one holds are kept in
`loggers.json` in the run folder, and steps they already have are not sent again (W&B's own
server drops them too). On the CPU a resumed step equals the lost one to 1e-6.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import io
import json
import math
import os
import uuid
from pathlib import Path

import yaml

from grpo_cli.errors import UserError
from grpo_cli.metrics import console
from grpo_cli.run_folder.admission import flat_config
from grpo_cli.run_folder.layout import CONFIG_FILE, LOGGERS_STATE_FILE, TENSORBOARD_DIR

SAMPLE_COLUMNS = ("prompt", "completion", "reward", "advantage", "length", "truncated", "correct")


def check_ready(names: list[str]) -> None:
    """Each logger's library is importable and can write, or one line saying how to fix it;
    before the run folder is made."""
    for name in names:
        module = LOGGERS[name].module
        if importlib.util.find_spec(module) is None:
            raise UserError(f"trainer.report_to has {name}, but {module} is not installed; "
                            f"pip install -e \".[{name}]\" (or pip install {module})")
        LOGGERS[name].check()


def _hyperparameters(config: dict) -> dict:
    """The flat config, lists and None as text (TensorBoard's hyper-parameters take numbers,
    booleans and strings only)."""
    return {k: v if isinstance(v, (int, float, bool, str)) else json.dumps(v) for k, v in flat_config(config).items()}


def _scalars(record: dict) -> dict[str, float]:
    return {k: float(v) for k, v in record.items() if k != "step" and isinstance(v, (int, float))}


class TensorBoardLogger:
    module = "tensorboard"

    @staticmethod
    def check() -> None:
        """Writes local event files: nothing to check."""

    def __init__(self, run_dir: Path, config: dict, state: dict, resumed_at: int | None):
        summary_writer = importlib.import_module("torch.utils.tensorboard")
        hparams = importlib.import_module("torch.utils.tensorboard.summary").hparams
        # purge_step: a viewer drops what a killed run logged after the checkpoint
        self.writer = summary_writer.SummaryWriter(str(run_dir / TENSORBOARD_DIR), flush_secs=10,
                                                   purge_step=None if resumed_at is None else resumed_at + 1)
        if resumed_at is None:
            for summary in hparams(_hyperparameters(config), {"eval/accuracy": math.nan}):
                self.writer.file_writer.add_summary(summary)
            self.writer.add_text("config", "```yaml\n" + yaml.safe_dump(config, sort_keys=False) + "```", 0)

    def log(self, step: int, scalars: dict[str, float]) -> None:
        for name, value in scalars.items():
            self.writer.add_scalar(name, value, step)

    def log_samples(self, step: int, rows: list[dict]) -> None:
        lines = ["| " + " | ".join(SAMPLE_COLUMNS) + " |", "|" + "---|" * len(SAMPLE_COLUMNS)]
        lines += ["| " + " | ".join(str(row[c]).replace("|", "\\|").replace("\n", "<br>") for c in SAMPLE_COLUMNS) + " |"
                  for row in rows]
        self.writer.add_text("samples", "\n".join(lines), step)

    def close(self) -> None:
        self.writer.close()


class RunLogger:
    """W&B and Trackio: a run object that logs a dict at a step, and a Table type."""

    library: object
    run: object

    def log(self, step: int, scalars: dict[str, float]) -> None:
        self.run.log(scalars, step=step)

    def log_samples(self, step: int, rows: list[dict]) -> None:
        table = self.library.Table(columns=list(SAMPLE_COLUMNS), data=[[row[c] for c in SAMPLE_COLUMNS] for row in rows])
        self.run.log({"samples": table}, step=step)


class WandbLogger(RunLogger):
    module = "wandb"

    @staticmethod
    def check() -> None:
        """Online W&B needs a key; offline it writes under the run folder."""
        if os.environ.get("WANDB_MODE") in ("offline", "disabled") or os.environ.get("WANDB_API_KEY"):
            return
        if not importlib.import_module("wandb").login(prompt=False, verify=False):
            raise UserError("trainer.report_to has wandb, but W&B has no API key: run `wandb login`, or set "
                            "WANDB_MODE=offline to write the run under the run folder and `wandb sync` it later")

    def __init__(self, run_dir: Path, config: dict, state: dict, resumed_at: int | None):
        self.library = importlib.import_module("wandb")
        state.setdefault("id", uuid.uuid4().hex[:12])
        settings = self.library.Settings(console="off", silent=True, x_disable_stats=True)
        self.run = self.library.init(project=os.environ.get("WANDB_PROJECT", "grpo"), name=run_dir.name, id=state["id"],
                                   resume="allow", dir=str(run_dir), config=config, settings=settings)

    def close(self) -> None:
        self.run.finish()


class TrackioLogger(RunLogger):
    module = "trackio"

    @staticmethod
    def check() -> None:
        """Writes its local store (TRACKIO_DIR): nothing to check."""

    def __init__(self, run_dir: Path, config: dict, state: dict, resumed_at: int | None):
        self.library = importlib.import_module("trackio")
        state.setdefault("project", os.environ.get("TRACKIO_PROJECT", "grpo"))
        state.setdefault("name", f"{run_dir.name}-{uuid.uuid4().hex[:6]}")  # a run name is its id in trackio
        with contextlib.redirect_stdout(io.StringIO()):  # its banner would break the progress bar
            self.run = self.library.init(project=state["project"], name=state["name"], config=_hyperparameters(config),
                                         resume="allow", embed=False, auto_log_cpu=False, auto_log_gpu=False)
        console.print(f"trackio: project {state['project']}, run {state['name']} "
                      f"(trackio show --project {state['project']})")

    def close(self) -> None:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            self.run.finish()


# trainer.report_to
LOGGERS = {"tensorboard": TensorBoardLogger, "wandb": WandbLogger, "trackio": TrackioLogger}
# Those that cannot rewrite a step: steps they already hold are not sent again.
APPEND_ONLY = {"wandb", "trackio"}


class Loggers:
    """The loggers of trainer.report_to for one run folder (none: every call does nothing)."""

    def __init__(self, names: list[str], run_dir: Path | None, resumed_at: int | None):
        self.loggers: dict[str, object] = {}
        if not names or run_dir is None:
            return
        check_ready(names)
        self.path = run_dir / LOGGERS_STATE_FILE
        self.state = json.loads(self.path.read_text()) if self.path.exists() and resumed_at is not None else {}
        config = yaml.safe_load((run_dir / CONFIG_FILE).read_text())
        try:
            for name in names:
                self.loggers[name] = LOGGERS[name](run_dir, config, self.state.setdefault(name, {}), resumed_at)
        except Exception:
            self.close()
            raise
        self._save()

    def log(self, record: dict) -> None:
        step, scalars = record["step"], _scalars(record)
        for name, logger in self.loggers.items():
            if name in APPEND_ONLY and step <= self.state[name].get("last_step", -1):
                continue
            logger.log(step, scalars)
            self.state[name]["last_step"] = step
        if APPEND_ONLY & self.loggers.keys():  # only they need to know their last step
            self._save()

    def log_samples(self, step: int, rows: list[dict]) -> None:
        for name, logger in self.loggers.items():
            if name not in APPEND_ONLY or step >= self.state[name].get("last_step", -1):
                logger.log_samples(step, rows)

    def _save(self) -> None:
        partial = self.path.with_suffix(".partial")
        partial.write_text(json.dumps(self.state, indent=1))
        os.replace(partial, self.path)

    def close(self) -> None:
        for logger in self.loggers.values():
            logger.close()
        self.loggers = {}

    def __enter__(self) -> "Loggers":
        return self

    def __exit__(self, *_) -> None:
        self.close()
