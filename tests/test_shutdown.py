"""Nothing lost: a run killed with SIGKILL at three different points, or mid-save, resumes to the
same metrics as an uninterrupted run; SIGTERM saves and says how to resume; a run whose loss
turns non-finite skips those updates and stops with a message."""

import json
import os
import shlex
import signal
import subprocess
import sys
import time

import pytest

from grpo_cli.cli import main

pytestmark = pytest.mark.slow

RUN = ["trainer.steps=6", "trainer.save_every=2", "trainer.eval_every=0", "eval.num_prompts=8",
       "trainer.prompts_per_step=4"]


def records(run_dir):
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def steps_written(run_dir) -> int:
    path = run_dir / "metrics.jsonl"
    return len(path.read_text().splitlines()) - 1 if path.exists() else -1


def start(run_dir, *extra):
    # A new session, so the kill reaches the reward workers too, as a machine failure would.
    return subprocess.Popen([sys.executable, "-m", "grpo_cli", "train", f"output_dir={run_dir}", *RUN, *extra],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True)


def wait_for_step(process, run_dir, step: int, timeout: float = 240) -> None:
    deadline = time.time() + timeout
    while steps_written(run_dir) < step:
        assert process.poll() is None, process.stderr.read()
        assert time.time() < deadline, "the run did not reach the step in time"
        time.sleep(0.02)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("reference") / "run"
    assert main(["train", f"output_dir={run_dir}", *RUN]) == 0
    return records(run_dir)


def assert_same_run(resumed, reference, from_step: int):
    assert [r["step"] for r in resumed] == list(range(7))  # nothing duplicated, nothing missing
    for before, after in zip(reference[from_step + 1:], resumed[from_step + 1:]):
        assert after["loss"] == pytest.approx(before["loss"], abs=1e-6), after["step"]
        assert after["reward/mean"] == pytest.approx(before["reward/mean"], abs=1e-6), after["step"]


@pytest.mark.parametrize("kill_after", [3, 4, 5])
def test_sigkill_then_resume_auto_reproduces_the_run(tmp_path, reference, kill_after):
    run_dir = tmp_path / "run"
    process = start(run_dir)
    wait_for_step(process, run_dir, kill_after)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    saved = sorted(int(p.name.split("_")[1]) for p in (run_dir / "checkpoints").glob("step_*"))
    assert main(["train", f"output_dir={run_dir}", "resume=auto", *RUN]) == 0
    assert_same_run(records(run_dir), reference, from_step=saved[-1])


def test_a_kill_during_save_leaves_the_previous_checkpoint(tmp_path, reference):
    run_dir = tmp_path / "run"
    assert main(["train", f"output_dir={run_dir}", *RUN[1:], "trainer.steps=4"]) == 0
    # The state a kill between writing and renaming leaves: step_4 only as a partial staging folder.
    checkpoints = run_dir / "checkpoints"
    os.replace(checkpoints / "step_4", checkpoints / ".tmp-step_4")
    (checkpoints / ".tmp-step_4" / "trainer_state.pt").unlink()
    assert main(["train", f"output_dir={run_dir}", "resume=auto", *RUN]) == 0
    assert_same_run(records(run_dir), reference, from_step=2)
    assert sorted(p.name for p in checkpoints.iterdir()) == ["step_2", "step_4", "step_6"]


def test_keep_last_prunes_only_after_the_new_checkpoint(tmp_path):
    run_dir = tmp_path / "run"
    assert main(["train", f"output_dir={run_dir}", *RUN, "trainer.keep_last=2"]) == 0
    assert sorted(p.name for p in (run_dir / "checkpoints").iterdir()) == ["step_4", "step_6"]


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_stop_signal_finishes_the_step_saves_and_says_how_to_resume(tmp_path, reference, sig):
    run_dir = tmp_path / "run"
    process = start(run_dir)
    wait_for_step(process, run_dir, 3)
    process.send_signal(sig)
    _, err = process.communicate(timeout=240)
    assert process.returncode == 128 + sig
    last = records(run_dir)[-1]["step"]
    assert f"{sig.name}: stopped after step {last}" in err
    assert (run_dir / "checkpoints" / f"step_{last}" / "trainer_state.pt").is_file()
    # The printed command, pasted as it is, carries the run's own overrides and continues it.
    command = shlex.split(err.split("resume with: ", 1)[1].splitlines()[0])
    assert command[:2] == ["grpo", "train"] and command[2:] == [*RUN, f"output_dir={run_dir}", "resume=auto"]
    assert main(command[1:]) == 0
    assert_same_run(records(run_dir), reference, from_step=last)


def test_non_finite_updates_are_skipped_then_the_run_stops(tmp_path, capsys):
    run_dir = tmp_path / "run"
    code = main(["train", f"output_dir={run_dir}", *RUN, "trainer.lr=1e30", "trainer.max_nonfinite_steps=2"])
    assert code == 3
    err = capsys.readouterr().err
    assert "2 steps in a row had a non-finite loss or gradient" in err and "lower trainer.lr" in err
    rows = records(run_dir)
    skipped = [r["step"] for r in rows[1:] if r["update/nonfinite"] > 0]
    assert skipped and skipped == list(range(skipped[0], rows[-1]["step"] + 1))
