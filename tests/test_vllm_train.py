"""`grpo train sampler=vllm` on the CPU (vLLM's CPU build), as a user runs it: the embedded
default trains as well as with the hf sampler and the engine's log-probs stay with the
learner's at every step; `grpo eval sampler=vllm` reproduces the run's own figure and the hf
sampler's within sampling noise; a run stopped by SIGTERM and then killed by SIGKILL resumes
to the metrics of the uninterrupted run and leaves no process behind; two torchrun ranks, each
driving its own engine, log what one process logs.

Runs that need no signal run in this process (vLLM starts faster once imported); one engine
lives at a time, each closed by its run."""

import json
import math
import os
import signal
import subprocess
import sys
import time

import pytest

from grpo_cli.cli import main
from test_vllm import needs_vllm_cpu

pytestmark = [pytest.mark.slow, needs_vllm_cpu]

VLLM = ["sampler=vllm", "sampler.kv_cache_gib=0.25"]
# Short runs start the engine without compiling: 6 steps do not repay the compilation.
SHORT = [*VLLM, "sampler.enforce_eager=true", "trainer.steps=6", "trainer.save_every=2", "trainer.eval_every=0",
         "eval.num_prompts=8", "trainer.prompts_per_step=4"]


def records(run_dir) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def vllm_thirty_steps(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("vllm-thirty") / "run"
    assert main(["train", f"output_dir={run_dir}", *VLLM, "trainer.steps=30", "trainer.eval_every=0"]) == 0
    return run_dir


def test_vllm_trains_as_well_as_hf_and_stays_with_the_learner(vllm_thirty_steps, hf_thirty_steps):
    gains = {}
    for name, run_dir in (("hf", hf_thirty_steps), ("vllm", vllm_thirty_steps)):
        rows = records(run_dir)
        assert [r["step"] for r in rows] == list(range(31))
        gains[name] = rows[-1]["eval/accuracy"] - rows[0]["eval/accuracy"]
    assert gains["vllm"] >= gains["hf"] - 0.05, gains
    assert gains["vllm"] > 0.15, gains
    steps = records(vllm_thirty_steps)[1:]
    assert max(r["mismatch/max_abs_logprob_gap"] for r in steps) <= 1e-3
    assert all(r["time/push"] > 0 for r in steps)
    assert [r["sampler/policy_version"] for r in steps] == list(range(30))  # each step sampled the last push


def eval_figures(checkpoint, output, *overrides) -> dict:
    assert main(["eval", f"checkpoint={checkpoint}", f"output={output}", *overrides]) == 0
    return json.loads(output.read_text())


def test_grpo_eval_with_vllm_reproduces_the_run_and_the_hf_sampler(vllm_thirty_steps, tmp_path):
    checkpoint = vllm_thirty_steps / "checkpoints" / "step_30"
    in_run = records(vllm_thirty_steps)[-1]["eval/accuracy"]
    with_vllm = eval_figures(checkpoint, tmp_path / "vllm.json")  # the run's own overrides: sampler=vllm
    with_hf = eval_figures(checkpoint, tmp_path / "hf.json", "sampler=hf")
    assert with_vllm["accuracy"] == pytest.approx(in_run, abs=1e-9)  # the pushed weights are the saved ones
    # Three standard errors of the difference of two means of k x n draws.
    noise = 3 * math.sqrt(2 * in_run * (1 - in_run) / (with_hf["n"] * with_hf["k"]))
    assert abs(with_hf["accuracy"] - with_vllm["accuracy"]) <= noise, (with_hf["accuracy"], with_vllm["accuracy"], noise)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("vllm-reference") / "run"
    assert main(["train", f"output_dir={run_dir}", *SHORT]) == 0
    return records(run_dir)


def start(run_dir, *extra):
    # A new session, so a kill reaches the reward workers too, and what outlives the run shows.
    return subprocess.Popen([sys.executable, "-m", "grpo_cli", "train", f"output_dir={run_dir}", *SHORT, *extra],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True)


def wait_for_step(process, run_dir, step: int, timeout: float = 300) -> None:
    deadline = time.time() + timeout
    path = run_dir / "metrics.jsonl"
    while not path.exists() or len(path.read_text().splitlines()) - 1 < step:  # rows after the base evaluation
        assert process.poll() is None, process.stderr.read()
        assert time.time() < deadline, "the run did not reach the step in time"
        time.sleep(0.05)


def session_ended(session: int, timeout: float = 10) -> bool:
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            os.killpg(session, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.1)
    return False


def test_sigterm_then_sigkill_then_resume_reproduce_the_run(tmp_path, reference):
    run_dir = tmp_path / "run"
    first = start(run_dir)
    wait_for_step(first, run_dir, 2)
    first.send_signal(signal.SIGTERM)
    _, err = first.communicate(timeout=300)
    assert first.returncode == 128 + signal.SIGTERM, err[-3000:]
    assert "resume with: grpo train" in err and "Traceback" not in err
    assert session_ended(first.pid)  # the engine, its threads and the reward workers are gone
    stopped = records(run_dir)[-1]["step"]
    assert (run_dir / "checkpoints" / f"step_{stopped}" / "trainer_state.pt").is_file()

    second = start(run_dir, "resume=auto")
    wait_for_step(second, run_dir, 5)
    os.killpg(second.pid, signal.SIGKILL)
    second.wait()
    assert max(int(p.name.split("_")[1]) for p in (run_dir / "checkpoints").glob("step_*")) == 4

    assert main(["train", f"output_dir={run_dir}", "resume=auto", *SHORT]) == 0
    resumed = records(run_dir)
    assert [r["step"] for r in resumed] == list(range(7))
    for before, after in zip(reference[1:], resumed[1:]):  # rows of all three processes
        assert after["loss"] == pytest.approx(before["loss"], abs=1e-6), after["step"]
        assert after["reward/mean"] == pytest.approx(before["reward/mean"], abs=1e-6), after["step"]
        assert after["sampler/policy_version"] == after["step"] - 1
        assert after["mismatch/max_abs_logprob_gap"] <= 1e-3


def test_two_torchrun_ranks_with_their_own_engines_log_what_one_process_logs(tmp_path, reference):
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "grpo_cli",
               "train", f"output_dir={tmp_path / 'two'}", *SHORT]
    done = subprocess.run(command, env=dict(os.environ, OMP_NUM_THREADS="1"), capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    two = records(tmp_path / "two")
    assert [r["step"] for r in two] == list(range(7))
    for a, b in zip(reference[1:], two[1:]):
        assert b["reward/mean"] == a["reward/mean"]  # each rank's engine drew what the one process drew
        assert abs(b["loss"] - a["loss"]) < 1e-5, (a["step"], a["loss"], b["loss"])
        assert b["mismatch/max_abs_logprob_gap"] <= 1e-3
    assert two[-1]["eval/accuracy"] == reference[-1]["eval/accuracy"]
