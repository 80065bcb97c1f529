"""scripts/compare_rewards.py and compare_length.py end to end, two steps per run: the files
they promise, figures that are the runs' own, and a rerun that trains nothing again."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"
FAST = ["trainer.steps=2", "trainer.eval_every=0", "eval.num_prompts=8", "eval.k=2", "trainer.prompts_per_step=4"]


def run(script, out, *args):
    done = subprocess.run([sys.executable, str(SCRIPTS / script), "--out", str(out), "--seeds", "0,1", *args, *FAST],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.mark.slow
def test_compare_rewards_summarises_every_arm_and_seed(tmp_path):
    out = tmp_path / "rewards"
    run("compare_rewards.py", out)
    results = json.loads((out / "results.json").read_text())
    assert list(results) == ["sum", "decoupled"]
    for arm, result in results.items():
        assert len(result["runs"]) == 2
        rows = [json.loads(line) for line in (out / "runs" / arm / "seed_1" / "metrics.jsonl").read_text().splitlines()]
        assert result["runs"][1]["final_accuracy"] == rows[-1]["eval/accuracy"]
        assert all("advantage/format/std" in r for r in rows if r["step"] > 0)
        mean, sd = result["reward/format_last10"]
        assert 0 <= mean <= 1 and sd >= 0
    assert (out / "rewards.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "| decoupled |" in (out / "results.md").read_text()
    again = run("compare_rewards.py", out)  # every run finished: nothing is trained again
    assert "training" not in again and json.loads((out / "results.json").read_text()) == results


@pytest.mark.slow
def test_compare_length_reports_the_growth_of_each_arm(tmp_path):
    out = tmp_path / "length"
    text = run("compare_length.py", out, "sampler.max_new_tokens=32")
    results = json.loads((out / "results.json").read_text())
    assert list(results) == ["grpo", "gfpo"]
    for result in results.values():
        growth = [r["train_length_last10"] - r["train_length_first5"] for r in result["runs"]]
        assert all(g == 0 for g in growth)  # two steps: the first 5 and the last 10 are the same steps
    assert "GFPO cuts GRPO's length growth by n/a (GRPO did not grow)" in text
    assert (out / "length.png").stat().st_size > 10_000
