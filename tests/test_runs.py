"""`grpo runs`: real run folders made by the real CLI, one of each status, read back exactly.

The world, made once for the module under a folder named `runs` (the default DIR):
- grpo/done: a finished GRPO run (2 of 2 steps, evaluated at 0 and 2, checkpoint step_2);
- grpo/stopped: a run stopped by the non-finite guard (lr 1e30) before its 4 planned steps;
- dpo/one: a finished DPO run, whose held-out figure is eval/mean_group_accuracy;
- sweep/lr 1e-3/running: a copy of the stopped run whose lock this test holds, as RunLock does;
- copies with garbage in config.yaml or metrics.jsonl, a stale .lock left by a dead run, no
  checkpoint, and no step at all.
"""

import json
import os
import shlex
import shutil
from pathlib import Path

import pytest

from grpo_cli.cli import main
from grpo_cli.errors import UserError
from grpo_cli.run_folder.checkpoint import list_checkpoints
from grpo_cli.run_folder.layout import LOCK_FILE
from grpo_cli.run_folder.listing import find_runs, list_runs, read_run
from grpo_cli.run_folder.lock import RunLock, lock_holder

pytestmark = pytest.mark.slow

SHORT = ["trainer.steps=2", "trainer.eval_every=0", "eval.num_prompts=8", "eval.k=2", "trainer.prompts_per_step=4"]
STOPPED = ["trainer.steps=4", "trainer.save_every=1", "trainer.lr=1e30", "trainer.max_nonfinite_steps=1",
           "trainer.eval_every=0", "eval.num_prompts=8", "eval.k=2", "trainer.prompts_per_step=4"]
RUNNING = "sweep/lr 1e-3/running"


def records(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def best(run_dir: Path, key: str) -> tuple[float, int]:
    """The highest value of `key` in metrics.jsonl and the first step that reached it."""
    scored = [(r[key], r["step"]) for r in records(run_dir) if key in r]
    top = max(value for value, _ in scored)
    return top, min(step for value, step in scored if value == top)


def snapshot(root: Path) -> dict:
    return {str(p.relative_to(root)): (p.is_dir(), p.stat().st_size, p.stat().st_mtime_ns) for p in root.rglob("*")}


def copy_run(root: Path, source: str, name: str) -> Path:
    shutil.copytree(root / source, root / name)
    return root / name


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    base = tmp_path_factory.mktemp("world")
    root = base / "runs"
    assert main(["train", f"output_dir={root / 'grpo/done'}", *SHORT]) == 0
    assert main(["train", f"output_dir={root / 'grpo/stopped'}", *STOPPED]) == 3  # the non-finite guard
    assert main(["train", "+recipe=dpo", f"output_dir={root / 'dpo/one'}", "trainer.steps=1",
                 "eval.num_prompts=4"]) == 0
    (copy_run(root, "grpo/done", "broken/config") / "config.yaml").write_text("trainer: [1, 2\n")
    (copy_run(root, "grpo/done", "broken/not_a_mapping") / "config.yaml").write_text("just words\n")
    metrics = copy_run(root, "grpo/done", "broken/metrics") / "metrics.jsonl"
    lines = metrics.read_text().splitlines()
    metrics.write_text("\n".join([lines[0], '{"step": 1, "loss": ', *lines[1:]]) + "\n")
    stale = copy_run(root, "grpo/stopped", "crashed")
    (stale / LOCK_FILE).write_text(json.dumps({"pid": 999999999, "host": "gone", "since": "2020-01-01 00:00:00"}))
    shutil.rmtree(copy_run(root, "grpo/stopped", "no_checkpoint") / "checkpoints")
    fresh = root / "not_started"
    fresh.mkdir()
    for name in ("config.yaml", "overrides.yaml"):
        shutil.copy(root / "grpo/done" / name, fresh / name)
    (root / ".hidden/run").mkdir(parents=True)  # not searched
    shutil.copy(root / "grpo/done/config.yaml", root / ".hidden/run/config.yaml")
    copy_run(root, "grpo/stopped", RUNNING)
    with RunLock(root / RUNNING):
        yield base, root


def by_name(root: Path) -> dict:
    return {str(info.path.relative_to(root)): info for info in list_runs(root)}


def test_finds_every_run_folder_sorted_by_path(world):
    _, root = world
    assert [str(p.relative_to(root)) for p in find_runs(root)] == [
        "broken/config", "broken/metrics", "broken/not_a_mapping", "crashed", "dpo/one", "grpo/done", "grpo/stopped",
        "no_checkpoint", "not_started", RUNNING]


def test_a_finished_run(world):
    _, root = world
    info = read_run(root / "grpo/done")
    assert (info.algorithm, info.objective, info.steps_done, info.steps_planned) == ("grpo", "rl", 2, 2)
    assert info.model.endswith("assets/tiny-arith")
    assert info.checkpoint == root / "grpo/done/checkpoints/step_2" == list_checkpoints(root / "grpo/done")[-1][1]
    assert (info.best_accuracy, info.best_step) == best(root / "grpo/done", "eval/accuracy")
    assert info.accuracy_key == "eval/accuracy"
    assert (info.status, info.resume_command, info.holder, info.problems) == ("finished", None, None, [])


def test_a_stopped_run_says_how_to_resume_with_its_own_overrides(world):
    _, root = world
    run = root / "grpo/stopped"
    info = read_run(run)
    last = records(run)[-1]["step"]
    assert 0 < last < 4 and (info.steps_done, info.steps_planned) == (last, 4)
    assert info.checkpoint == run / "checkpoints" / f"step_{last}"
    assert (info.best_accuracy, info.best_step) == best(run, "eval/accuracy")
    assert info.best_step == 0  # evaluated only before training: eval_every=0 and no last step
    assert info.status == "stopped" and info.problems == []
    assert info.resume_command == shlex.join(["grpo", "train", *STOPPED, f"output_dir={run}", "resume=auto"])


def test_a_preference_run_reports_its_mean_group_accuracy(world):
    _, root = world
    info = read_run(root / "dpo/one")
    assert (info.algorithm, info.objective, info.steps_done, info.steps_planned) == ("dpo", "preference", 1, 1)
    assert info.accuracy_key == "eval/mean_group_accuracy"
    assert (info.best_accuracy, info.best_step) == best(root / "dpo/one", "eval/mean_group_accuracy")
    assert info.status == "finished" and info.checkpoint.name == "step_1"


def test_a_run_whose_lock_is_held_is_running_and_stays_held(world):
    _, root = world
    run = root / RUNNING
    lock_before = (run / LOCK_FILE).read_text()
    info = read_run(run)
    assert info.status == "running" and info.holder["pid"] == os.getpid()
    assert info.resume_command is None
    assert (run / LOCK_FILE).read_text() == lock_before
    with pytest.raises(UserError, match="in use by another grpo train"):  # the probe left the lock held
        with RunLock(run):
            pass


def test_a_stale_lock_of_a_dead_run_is_not_running(world):
    _, root = world
    assert lock_holder(root / "crashed") is None
    info = read_run(root / "crashed")
    assert info.status == "stopped" and info.resume_command.endswith(f"output_dir={root / 'crashed'} resume=auto")


def test_damaged_files_are_reported_on_their_row(world):
    _, root = world
    runs = by_name(root)
    config = runs["broken/config"]
    assert config.algorithm is None and config.steps_planned is None and config.status == "unknown"
    assert config.steps_done == 2 and config.checkpoint.name == "step_2"
    assert len(config.problems) == 1 and config.problems[0].startswith("config.yaml cannot be read: ")
    assert runs["broken/not_a_mapping"].problems == ["config.yaml holds no settings (a str, not a mapping)"]
    metrics = runs["broken/metrics"]
    assert metrics.problems == ["metrics.jsonl line 2 not a JSON record with a step"]
    assert (metrics.steps_done, metrics.status) == (2, "finished")
    assert (metrics.best_accuracy, metrics.best_step) == best(root / "grpo/done", "eval/accuracy")


def test_no_step_and_no_checkpoint(world):
    _, root = world
    runs = by_name(root)
    fresh = runs["not_started"]
    assert (fresh.status, fresh.steps_done, fresh.steps_planned, fresh.checkpoint) == ("not started", 0, 2, None)
    assert fresh.best_accuracy is None and fresh.resume_command is None
    bare = runs["no_checkpoint"]
    assert bare.status == "stopped" and bare.checkpoint is None and bare.resume_command is None


def test_the_command_lists_one_line_per_run_and_changes_nothing(world, capsys, monkeypatch):
    base, root = world
    before = snapshot(root)
    monkeypatch.chdir(base)
    assert main(["runs"]) == 0  # the default DIR, runs
    out, err = capsys.readouterr()
    assert err == "" and snapshot(root) == before
    lines = out.splitlines()
    assert lines[0].strip() == "10 run folders under runs"
    rows = [line for line in lines if line.startswith("  runs/")]
    assert len(rows) == 10  # one line each, damaged ones included
    for name, status in [("grpo/done", "finished"), ("grpo/stopped", "stopped"), ("dpo/one", "finished"),
                         ("crashed", "stopped"), ("not_started", "not started"), ("broken/config", "unknown"),
                         (RUNNING, f"running (pid {os.getpid()} on ")]:
        row = [line for line in rows if line.startswith(f"  runs/{name} ")]
        assert len(row) == 1 and status in row[0], (name, out)
    done = next(line for line in rows if line.startswith("  runs/grpo/done "))
    accuracy, step = best(root / "grpo/done", "eval/accuracy")
    assert done.split() == ["runs/grpo/done", "grpo", "…/assets/tiny-arith", "2/2", "step_2", f"{accuracy:.4f}", "@",
                            str(step), "finished"]
    assert "config.yaml cannot be read: " in out and "metrics.jsonl line 2 not a JSON record with a step" in out
    assert "best accuracy of a preference run (dpo)" in out
    resume = shlex.join(["grpo", "train", *STOPPED, "output_dir=runs/grpo/stopped", "resume=auto"])
    assert f"resume runs/grpo/stopped: {resume}\n" in out
    assert "runs/no_checkpoint stopped after step" in out and "no complete checkpoint" in out
    assert "hidden" not in out


def test_the_printed_resume_command_is_accepted(world, capsys, monkeypatch):
    base, _ = world
    monkeypatch.chdir(base)
    assert main(["runs", "runs/grpo"]) == 0
    command = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("resume "))
    args = shlex.split(command.split(": ", 1)[1])
    assert args[:2] == ["grpo", "train"]
    assert main(["validate", *args[2:]]) == 0  # every check grpo train makes before resuming
    assert f"resumes from {base / 'runs/grpo/stopped/checkpoints/step_'}" in capsys.readouterr().err


@pytest.mark.parametrize("args, message", [
    (["{base}/missing"],
     "error: grpo runs: {base}/missing does not exist; pass the folder your runs' output_dir lies in"),
    (["{root}/grpo/done/config.yaml"], "error: grpo runs: {root}/grpo/done/config.yaml is a file, not a folder"),
    (["a", "b"], "error: grpo runs takes one folder, got 2: a b; usage: grpo runs [DIR]"),
    (["--all"], "error: grpo runs: unknown option --all; usage: grpo runs [DIR]"),
])
def test_bad_input_is_one_line_and_exit_2(world, capsys, args, message):
    base, root = world
    assert main(["runs", *[a.format(base=base, root=root) for a in args]]) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.count("\n") == 1 and err.startswith(message.format(base=base, root=root))


def test_default_dir_missing_and_a_folder_without_runs(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["runs"]) == 2
    assert capsys.readouterr().err == "error: grpo runs: runs does not exist; run it where runs/ is, or pass DIR\n"
    (tmp_path / "empty/sub").mkdir(parents=True)
    assert main(["runs", "empty"]) == 0
    assert capsys.readouterr().out == "no run folders under empty (a run folder holds config.yaml)\n"
