"""resume=auto continues from the newest complete checkpoint and reproduces the metrics of
the uninterrupted run (same prompts, same samples, same optimizer state), with μ = 2 epochs
over 2 mini-batches so that stored old log-probs and several optimizer steps per step are used."""

import json
import shutil

import pytest

from grpo_cli.cli import main

pytestmark = pytest.mark.slow

RUN = ["trainer.steps=4", "trainer.save_every=2", "trainer.eval_every=0", "eval.num_prompts=8",
       "trainer.prompts_per_step=4", "algorithm.epochs=2", "algorithm.mini_batches=2"]


def records(run_dir):
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("extra", [[], ["algorithm.ref_reset_every=1", "algorithm.ref_mix_alpha=0.6"],
                                   ["environment=feedback", "environment.max_total_tokens=160"]],
                         ids=["grpo", "reference-reset", "feedback-episodes"])
def test_resume_reproduces_the_uninterrupted_run(tmp_path, extra):
    run_dir = tmp_path / "run"
    assert main(["train", f"output_dir={run_dir}", *RUN, *extra]) == 0
    full = records(run_dir)
    shutil.rmtree(run_dir / "checkpoints" / "step_4")  # as if the run died after step 3
    assert main(["train", f"output_dir={run_dir}", "resume=auto", *RUN, *extra]) == 0
    resumed = records(run_dir)
    assert [r["step"] for r in resumed] == [0, 1, 2, 3, 4]
    for before, after in zip(full[3:], resumed[3:]):
        assert after["loss"] == pytest.approx(before["loss"], abs=1e-6)
        assert after["reward/mean"] == pytest.approx(before["reward/mean"], abs=1e-6)
        assert after["lr"] == pytest.approx(before["lr"], rel=1e-9)
        assert after["kl"] == pytest.approx(before["kl"], abs=1e-6)
    assert (run_dir / "checkpoints" / "step_4" / "trainer_state.pt").is_file()


def test_resume_auto_without_checkpoint_fails_cleanly(tmp_path, capsys):
    assert main(["train", f"output_dir={tmp_path / 'empty'}", "resume=auto"]) == 2
    err = capsys.readouterr().err.strip()
    assert "no complete checkpoint" in err and len(err.splitlines()) == 1
