"""`grpo train -m`: Hydra's grid, one run per point in its own folder; a failed member is
reported and the sweep goes on; the table and sweep.png come from the members' own files."""

import json

from grpo_cli.cli import main
from grpo_cli.sweep import expand

SHORT = ["trainer.steps=1", "trainer.eval_every=0", "eval.num_prompts=4", "eval.k=2", "trainer.prompts_per_step=4"]


def test_the_grid_is_hydras_product_in_order():
    fixed, points = expand(["algorithm=grpo,dapo", "seed=range(0,2)", "trainer.steps=2", "+recipe=embedded"])
    assert fixed == ["trainer.steps=2", "+recipe=embedded"]
    assert points == [["algorithm=grpo", "seed=0"], ["algorithm=grpo", "seed=1"],
                      ["algorithm=dapo", "seed=0"], ["algorithm=dapo", "seed=1"]]


def test_a_sweep_goes_on_past_a_failed_member(tmp_path, capfd):
    root = tmp_path / "sweep"
    assert main(["train", "-m", "seed=0,1", "trainer.lr=3e-4,-1", *SHORT, f"output_dir={root}"]) == 1
    err = capfd.readouterr().err  # the members' own messages come from their processes
    table = json.loads((root / "sweep.json").read_text())
    assert list(table) == ["seed=0,trainer.lr=0.0003", "seed=0,trainer.lr=-1", "seed=1,trainer.lr=0.0003",
                           "seed=1,trainer.lr=-1"]
    for name, row in table.items():
        if name.endswith("-1"):
            assert row["status"] == "failed (2)" and not (root / name).exists()
        else:
            final = json.loads((root / name / "summary.json").read_text())["final"]
            assert row["status"] == "done" and row["accuracy"] == final["accuracy"]
            assert row["mean_length"] == final["mean_length"]
    assert "trainer.lr=-1.0 must be > 0" in err and "2 of 4 runs failed" in err
    assert (root / "sweep.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_sweep_without_a_swept_key_is_refused(tmp_path, capsys):
    assert main(["train", "-m", "seed=0", f"output_dir={tmp_path}"]) == 2
    assert "needs a swept key" in capsys.readouterr().err
    assert main(["eval", "-m", "seed=0,1"]) == 2
