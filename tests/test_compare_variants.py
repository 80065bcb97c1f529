"""scripts/compare_variants.py end to end on two algorithms and two steps: the files it promises."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "compare_variants.py"
FAST = ["trainer.eval_every=1", "eval.num_prompts=8", "eval.k=2", "trainer.prompts_per_step=4"]


@pytest.mark.slow
def test_compare_two_algorithms(tmp_path):
    out = tmp_path / "cmp"
    run = subprocess.run([sys.executable, str(SCRIPT), "--out", str(out), "--algorithms", "grpo,dapo",
                          "--steps", "2", *FAST], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    results = json.loads((out / "results.json").read_text())
    assert [r["algorithm"] for r in results] == ["grpo", "dapo"]
    for r in results:
        assert 0 <= r["base_accuracy"] <= 1 and 0 <= r["final_accuracy"] <= 1
        assert r["final_mean_length"] > 0 and r["seconds"] > 0 and r["steps"] == 2
    assert results[0]["base_accuracy"] == results[1]["base_accuracy"]  # same seed, same base
    assert "sampling/dropped_groups_total" in results[1] and "sampling/rounds_mean" in results[1]
    table = (out / "results.md").read_text().splitlines()
    assert len(table) == 4 and table[2].startswith("| grpo |") and table[3].startswith("| dapo |")
    png = (out / "variants.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 20_000
    again = subprocess.run([sys.executable, str(SCRIPT), "--out", str(out), "--algorithms", "grpo,dapo",
                            "--from-runs"], capture_output=True, text=True)
    assert again.returncode == 0, again.stderr
    assert json.loads((out / "results.json").read_text()) == results


PREFERENCE = Path(__file__).resolve().parents[1] / "scripts" / "compare_preference.py"


@pytest.mark.slow
def test_compare_preference_writes_results_table_and_picture(tmp_path):
    out = tmp_path / "pref"
    # One seed (each run is a fresh process that caches the reference sums of 2000 pairs); the
    # mean rows are still written, over that seed.
    run = subprocess.run([sys.executable, str(PREFERENCE), "--out", str(out), "--seeds", "1",
                          "trainer.steps=3", "trainer.eval_every=3"], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    results = json.loads((out / "results.json").read_text())
    assert [(r["method"], r["seed"]) for r in results] == [("dpo", 1), ("gr_dpo", 1)]
    for r in results:
        assert sorted(r["groups"]) == ["long", "medium", "short"] and r["steps"] == 3
        assert r["worst_group_accuracy"] == min(r["groups"].values())
        assert r["mean_group_accuracy"] == pytest.approx(sum(r["groups"].values()) / 3)
    table = (out / "results.md").read_text().splitlines()
    assert len(table) == 6 and table[-2].startswith("| **dpo** | mean |") and table[-1].startswith("| **gr_dpo** | mean |")
    png = (out / "preference.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 20_000
