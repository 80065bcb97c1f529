"""A short GRPO run of the shipped tiny model: held-out accuracy must rise, the run folder
must hold what the contract says, and the checkpoint must load and evaluate."""

import json
import subprocess
import sys

import pytest
import yaml
from transformers import AutoModelForCausalLM, AutoTokenizer

from grpo_cli.cli import main

pytestmark = pytest.mark.slow

@pytest.fixture(scope="module")
def trained_run(hf_thirty_steps):
    """30 steps, held-out evaluations at 0, 15 and 30, checkpoints at 15 and 30 (conftest.py)."""
    return hf_thirty_steps


def records(run_dir):
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_held_out_accuracy_rises(trained_run):
    rows = records(trained_run)
    base, final = rows[0]["eval/accuracy"], rows[-1]["eval/accuracy"]
    assert final >= base + 0.15, (base, final)
    assert "eval/accuracy" in rows[15]  # eval_every=15


def test_metrics_file_has_one_record_per_step(trained_run):
    rows = records(trained_run)
    assert [r["step"] for r in rows] == list(range(31))
    for row in rows[1:]:
        for key in ("loss", "reward/mean", "completion/mean_length", "kl", "clip/fraction", "entropy"):
            assert isinstance(row[key], float), key


def test_run_folder_contract(trained_run):
    assert (trained_run / "config.yaml").is_file()
    assert sorted(p.name for p in (trained_run / "checkpoints").iterdir()) == ["step_15", "step_30"]
    step = trained_run / "checkpoints" / "step_30"
    model = AutoModelForCausalLM.from_pretrained(step)
    tokenizer = AutoTokenizer.from_pretrained(step)
    assert model.config.vocab_size >= len(tokenizer)
    assert (step / "trainer_state.pt").is_file()
    summary = json.loads((trained_run / "summary.json").read_text())
    assert summary["checkpoint"] == str(step)


def test_eval_checkpoint_matches_the_training_eval(trained_run, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    step = trained_run / "checkpoints" / "step_30"
    assert main(["eval", f"checkpoint={step}", "output=out/eval.json"]) == 0
    result = json.loads((tmp_path / "out" / "eval.json").read_text())
    assert set(result) >= {"accuracy", "pass_at_k", "k", "n"}
    assert (result["k"], result["n"]) == (4, 200)
    assert result["accuracy"] == pytest.approx(records(trained_run)[-1]["eval/accuracy"])
    assert result["pass_at_k"] >= result["accuracy"]


def test_eval_rejects_a_folder_that_is_not_a_checkpoint(tmp_path, capsys):
    assert main(["eval", f"checkpoint={tmp_path}"]) == 2
    err = capsys.readouterr().err.strip()
    assert "is not a checkpoint" in err and len(err.splitlines()) == 1


def test_refuses_a_folder_holding_another_run(trained_run, capsys):
    assert main(["train", f"output_dir={trained_run}", "trainer.steps=3"]) == 2
    assert "resume=auto" in capsys.readouterr().err
    assert len(records(trained_run)) == 31  # nothing lost


@pytest.mark.parametrize("launcher", [[sys.executable, "-m", "grpo_cli"], ["grpo"]])
def test_module_and_script_entry_points(launcher):
    out = subprocess.run([*launcher, "train", "--cfg", "job", "sampler.n=3"], capture_output=True, text=True, check=True)
    assert yaml.safe_load(out.stdout)["sampler"]["n"] == 3


def test_eval_takes_the_runs_own_overrides_under_the_command_line(tmp_path):
    from grpo_cli.cli import _eval_overrides

    step = tmp_path / "run" / "checkpoints" / "step_3"
    step.mkdir(parents=True)
    (tmp_path / "run" / "overrides.yaml").write_text(yaml.safe_dump(
        ["eval.num_prompts=64", "sampler=vllm", "sampler.n=4", f"output_dir={tmp_path / 'run'}", "resume=auto"]))
    given = [f"eval.checkpoint={step}", "sampler.n=2"]
    assert _eval_overrides(given) == ["eval.num_prompts=64", "sampler=vllm", *given]
