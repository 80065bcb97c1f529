"""trainer.report_to and completion samples: what each logger holds, read back with its own
library's reader, equals metrics.jsonl; a resumed run continues the same logger run; the
samples are the completions, rewards and advantages the loss used."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from grpo_cli.cli import main
from grpo_cli.compose import compose, to_object
from grpo_cli.loggers import LOGGERS
from grpo_cli.training.rl import build, train_step
from grpo_cli.validation import validate

REPORT = "trainer.report_to=[tensorboard,wandb,trackio]"
SHORT = ["trainer.eval_every=2", "eval.num_prompts=4", "eval.k=2", "trainer.prompts_per_step=4", "trainer.log_samples_every=3"]


def _train(run_dir: Path, trackio_dir: Path, *overrides: str) -> None:
    env = {**os.environ, "WANDB_MODE": "offline", "TRACKIO_DIR": str(trackio_dir), "WANDB_SILENT": "true"}
    done = subprocess.run([sys.executable, "-m", "grpo_cli", "train", f"output_dir={run_dir}", REPORT, *SHORT, *overrides],
                          env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]


@pytest.fixture(scope="module")
def resumed_run(tmp_path_factory):
    """4 steps: 2, then resumed for 2 more, logging to all three loggers."""
    root = tmp_path_factory.mktemp("loggers")
    _train(root / "run", root / "trackio", "trainer.steps=2")
    _train(root / "run", root / "trackio", "trainer.steps=4", "resume=auto")
    return root / "run", root / "trackio"


def _jsonl_scalars(run_dir: Path) -> dict[int, dict[str, float]]:
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return {row["step"]: {k: v for k, v in row.items() if k != "step" and isinstance(v, (int, float))} for row in rows}


def _tensorboard(run_dir: Path) -> dict[str, list[tuple[int, float]]]:
    from tensorboard.backend.event_processing.event_accumulator import SCALARS, EventAccumulator

    events = EventAccumulator(str(run_dir / "tensorboard"), size_guidance={SCALARS: 0})
    events.Reload()
    return {tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}


def _wandb(run_dir: Path) -> tuple[list[dict], set[str], list[dict]]:
    """History rows of every offline run file, the run ids, and the run records."""
    history, ids, runs = [], set(), []
    for path in sorted(run_dir.glob("wandb/offline-run-*/run-*.wandb")):
        out = subprocess.run([sys.executable, "-m", "wandb", "leet", "inspect", "--json", str(path)],
                             capture_output=True, text=True, timeout=120, check=True).stdout
        for record in map(json.loads, out.splitlines()):
            if record["type"] == "history":
                history.append({"step": record["history"]["step"]["num"], **record["history"]["item"]})
            elif record["type"] == "run":
                ids.add(record["run"]["run_id"])
                runs.append(record["run"])
    return history, ids, runs


def _trackio(trackio_dir: Path, project: str, name: str) -> tuple[list[dict], list[str], dict]:
    code = ("import json, sys; from trackio.sqlite_storage import SQLiteStorage as S; p, n = sys.argv[1:]; "
            "print(json.dumps([S.get_logs(p, n), S.get_runs(p), S.get_run_config(p, n)]))")
    out = subprocess.run([sys.executable, "-c", code, project, name], capture_output=True, text=True, timeout=120,
                         check=True, env={**os.environ, "TRACKIO_DIR": str(trackio_dir)}).stdout
    return json.loads(out.splitlines()[-1])


def _close(a: float, b: float, rel: float) -> bool:
    return math.isclose(a, b, rel_tol=rel, abs_tol=1e-12)


def test_tensorboard_holds_every_scalar_once(resumed_run):
    run_dir, _ = resumed_run
    expected = _jsonl_scalars(run_dir)
    assert sorted(expected) == [0, 1, 2, 3, 4]
    logged = _tensorboard(run_dir)
    for step, scalars in expected.items():
        for name, value in scalars.items():
            points = [v for s, v in logged[name] if s == step]
            assert len(points) == 1, (name, step, points)
            assert _close(points[0], value, 1e-6) or not math.isfinite(value), (name, step, points[0], value)
    for name, points in logged.items():
        assert len({s for s, _ in points}) == len(points), name  # no step twice, across the resume


def test_wandb_offline_run_continues_across_the_resume(resumed_run):
    run_dir, _ = resumed_run
    expected = _jsonl_scalars(run_dir)
    history, ids, runs = _wandb(run_dir)
    state = json.loads((run_dir / "loggers.json").read_text())
    assert ids == {state["wandb"]["id"]} and len(runs) == 2  # two processes, one W&B run
    steps = [row["step"] for row in history if any(k in row for k in expected[1])]
    assert sorted(steps) == [0, 1, 2, 3, 4] or sorted(steps) == [1, 2, 3, 4], steps
    by_step = {row["step"]: row for row in history}
    for step, scalars in expected.items():
        for name, value in scalars.items():
            assert _close(by_step[step][name], value, 1e-12), (name, step)
    assert runs[0]["config"]["update"]["trainer"]["report_to"] == ["tensorboard", "wandb", "trackio"]
    for step in (2, 3):  # the samples table, at the evaluation and every 3 steps
        assert by_step[step]["samples._type"] == "table-file" and by_step[step]["samples.nrows"] == 16


def test_trackio_local_store_holds_every_scalar_once(resumed_run):
    run_dir, trackio_dir = resumed_run
    expected = _jsonl_scalars(run_dir)
    state = json.loads((run_dir / "loggers.json").read_text())["trackio"]
    logs, runs, config = _trackio(trackio_dir, state["project"], state["name"])
    assert runs == [state["name"]]
    scalar_rows = [row for row in logs if "reward/mean" in row or "eval/accuracy" in row]
    assert sorted(row["step"] for row in scalar_rows) == [0, 1, 2, 3, 4]
    by_step = {row["step"]: row for row in scalar_rows}
    for step, scalars in expected.items():
        for name, value in scalars.items():
            assert _close(by_step[step][name], value, 1e-12), (name, step)
    assert config["trainer.lr"] == 3.0e-4


def test_samples_are_written_at_evaluations_and_every_n_steps(resumed_run):
    run_dir, _ = resumed_run
    assert sorted(p.name for p in (run_dir / "samples").iterdir()) == ["step_2.jsonl", "step_3.jsonl", "step_4.jsonl"]
    rows = [json.loads(line) for line in (run_dir / "samples" / "step_3.jsonl").read_text().splitlines()]
    assert len(rows) == 2 * 8 and {row["step"] for row in rows} == {3}  # trainer.log_samples prompts x sampler.n
    assert {row["policy_version"] for row in rows} == {2}


def test_samples_match_what_the_loss_used():
    cfg = validate(to_object(compose(["trainer.prompts_per_step=4", "data.eval_path=null"])))
    cfg.output_dir = "/nonexistent"
    run = build(cfg, cfg.model.name_or_path)
    seen = []
    update = run.learner.update

    def keep(batch, seed, loss):  # the real update, with its batch kept for the comparison
        seen.append(batch)
        return update(batch, seed, loss)

    run.learner.update = keep
    try:
        rows = train_step(run, 0, samples=2).samples
    finally:
        run.close()
    batch = seen[0]
    assert len(rows) == 2 * cfg.sampler.n
    prompt_width = batch.input_ids.shape[1] - batch.loss_mask.shape[1]
    for i, row in enumerate(rows):  # the first two groups are the batch's first rows
        ids = batch.input_ids[i, prompt_width:][batch.loss_mask[i].bool()]
        assert run.tokenizer.decode(ids, skip_special_tokens=True) == row["completion"]
        advantage = float(batch.advantages[i].sum() / batch.loss_mask[i].sum())
        assert row["advantage"] == pytest.approx(advantage, abs=1e-6)
        assert row["length"] == int(batch.loss_mask[i].sum())
    for group in (0, 1):  # GRPO: (r - mean) / (std + eps) within the group, by hand
        members = [row for row in rows if row["group"] == group]
        rewards = torch.tensor([row["reward"] for row in members])
        std = rewards.std() if rewards.std() > 0 else torch.tensor(0.0)
        for row, reward in zip(members, rewards):
            assert row["advantage"] == pytest.approx(float((reward - rewards.mean()) / (std + 1e-6)), abs=1e-4)
            assert row["rewards"]["final_answer"] == row["reward"]


def test_a_logger_that_is_not_installed_names_the_install(monkeypatch, capsys, tmp_path):
    monkeypatch.setattr(LOGGERS["trackio"], "module", "trackio_not_here")
    assert main(["train", f"output_dir={tmp_path / 'run'}", "trainer.report_to=trackio"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: trainer.report_to has trackio") and 'pip install -e ".[trackio]"' in err
    assert len(err.splitlines()) == 1 and not (tmp_path / "run").exists()


def test_an_unknown_logger_is_refused(capsys, tmp_path):
    assert main(["train", f"output_dir={tmp_path / 'run'}", "trainer.report_to=[tensorboard,comet]"]) == 2
    assert "trainer.report_to='comet' is not known; valid: tensorboard, trackio, wandb" in capsys.readouterr().err
