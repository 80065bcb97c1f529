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

SHORT = ["trainer.steps=24", "trainer.eval_every=12", "trainer.save_every=12", "eval.num_prompts=64"]


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("train") / "run"
    assert main(["train", f"output_dir={run_dir}", *SHORT]) == 0
    return run_dir


def records(run_dir):
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_held_out_accuracy_rises(trained_run):
    rows = records(trained_run)
    base, final = rows[0]["eval/accuracy"], rows[-1]["eval/accuracy"]
    assert final >= base + 0.15, (base, final)
    assert "eval/accuracy" in rows[12]  # eval_every=12


def test_metrics_file_has_one_record_per_step(trained_run):
    rows = records(trained_run)
    assert [r["step"] for r in rows] == list(range(25))
    for row in rows[1:]:
        for key in ("loss", "reward/mean", "completion/mean_length", "kl", "clip/fraction", "entropy"):
            assert isinstance(row[key], float), key


def test_run_folder_contract(trained_run):
    assert (trained_run / "config.yaml").is_file()
    assert sorted(p.name for p in (trained_run / "checkpoints").iterdir()) == ["step_12", "step_24"]
    step = trained_run / "checkpoints" / "step_24"
    model = AutoModelForCausalLM.from_pretrained(step)
    tokenizer = AutoTokenizer.from_pretrained(step)
    assert model.config.vocab_size >= len(tokenizer)
    assert (step / "trainer_state.pt").is_file()
    summary = json.loads((trained_run / "summary.json").read_text())
    assert summary["checkpoint"] == str(step)


def test_eval_checkpoint_matches_the_training_eval(trained_run, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    step = trained_run / "checkpoints" / "step_24"
    assert main(["eval", f"checkpoint={step}", "output=out/eval.json"]) == 0
    result = json.loads((tmp_path / "out" / "eval.json").read_text())
    assert set(result) >= {"accuracy", "pass_at_k", "k", "n"}
    assert (result["k"], result["n"]) == (4, 64)  # inherited eval.num_prompts=64 from the run
    assert result["accuracy"] == pytest.approx(records(trained_run)[-1]["eval/accuracy"])
    assert result["pass_at_k"] >= result["accuracy"]


def test_eval_rejects_a_folder_that_is_not_a_checkpoint(tmp_path, capsys):
    assert main(["eval", f"checkpoint={tmp_path}"]) == 2
    err = capsys.readouterr().err.strip()
    assert "is not a checkpoint" in err and len(err.splitlines()) == 1


def test_refuses_a_folder_holding_another_run(trained_run, capsys):
    assert main(["train", f"output_dir={trained_run}", "trainer.steps=3"]) == 2
    assert "resume=auto" in capsys.readouterr().err
    assert len(records(trained_run)) == 25  # nothing lost


@pytest.mark.parametrize("launcher", [[sys.executable, "-m", "grpo_cli"], ["grpo"]])
def test_module_and_script_entry_points(launcher):
    out = subprocess.run([*launcher, "train", "--cfg", "job", "sampler.n=3"], capture_output=True, text=True, check=True)
    assert yaml.safe_load(out.stdout)["sampler"]["n"] == 3
