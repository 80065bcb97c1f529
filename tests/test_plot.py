"""`grpo plot` and grpo_cli/plot.py on two real run folders of the embedded default: the picture,
the values drawn (against metrics.jsonl), smoothing, --metrics, the preference panels, bad input."""

import json
import shutil
import sys

import pytest
from matplotlib.image import imread

from grpo_cli.cli import main
from grpo_cli.plot import DEFAULT_PANELS, PREFERENCE_PANELS, plot_runs, read_metrics, run_labels, smooth

FAST = ["trainer.steps=3", "trainer.eval_every=0", "eval.num_prompts=4", "eval.k=2", "trainer.prompts_per_step=2",
        "sampler.n=4"]
# A one-reward run logs no advantage/* or gate figures: those panels are left out.
DEFAULT_NAMES = [panel.name for panel in DEFAULT_PANELS if panel.name not in ("advantage", "gate_open")]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Two three-step GRPO runs, seeds 0 and 1, evaluated at steps 0 and 3."""
    root = tmp_path_factory.mktemp("plot")
    for seed in (0, 1):
        assert main(["train", f"output_dir={root / f'seed{seed}'}", f"seed={seed}", *FAST]) == 0
    return root / "seed0", root / "seed1"


def logged(run, key):
    """(steps, values) of `key` in the run's metrics.jsonl, read here without grpo_cli."""
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()]
    return [r["step"] for r in rows if key in r], [r[key] for r in rows if key in r]


def test_picture_and_the_values_drawn_are_the_logged_ones(runs, tmp_path):
    out = tmp_path / "two.png"
    drawn = plot_runs(runs, out)
    image = imread(out)  # a PNG that matplotlib reads back: rows x columns x RGBA
    assert image.ndim == 3 and image.shape[0] > 600 and image.shape[1] > 1000
    assert 30_000 < out.stat().st_size < 1_000_000
    assert list(drawn) == DEFAULT_NAMES
    for key in ("reward/mean", "kl", "entropy", "eval/accuracy"):
        assert set(drawn[key]) == {"seed0", "seed1"}
        for run in runs:
            steps, values = drawn[key][run.name]
            assert (steps, values) == logged(run, key)
    assert drawn["eval/accuracy"]["seed0"].steps == [0, 3]  # the base model, then the final evaluation
    assert drawn["reward/mean"]["seed1"].steps == [1, 2, 3]  # step 0 holds only eval/*
    # The two seeds sample differently: the curves are the runs' own, not one run twice.
    assert drawn["reward/mean"]["seed0"].values != drawn["reward/mean"]["seed1"].values
    stages = drawn["time"]
    assert len(stages) == 10 and stages["seed1: time/update"] == logged(runs[1], "time/update")
    assert all(value > 0 for curve in stages.values() for value in curve.values)


def test_command_writes_plot_png_here_and_prints_its_path(runs, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["plot", str(runs[0]), str(runs[1])]) == 0
    assert capsys.readouterr().out == "plot.png\n"
    assert (tmp_path / "plot.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_metrics_pick_the_panels(runs, tmp_path, capsys):
    drawn = plot_runs(runs, tmp_path / "some.png", metrics=["entropy", "time/*", "time"])
    assert list(drawn) == ["entropy", "time/*", "time"]
    assert drawn["entropy"]["seed0"] == logged(runs[0], "entropy")
    # a pattern: one line per matching key per run; time/step is logged beside the five stages
    assert {label.split(": ")[1] for label in drawn["time/*"]} >= {"time/generate", "time/step"}
    out = tmp_path / "sub" / "kl.png"
    assert main(["plot", str(runs[0]), "--metrics=kl,reward/mean", "--out", str(out), "--smooth", "0"]) == 0
    assert capsys.readouterr().out == f"{out}\n" and imread(out).shape[1] > 500


def test_smoothing_is_tensorboards_debiased_moving_average():
    values = [1.0, 2.0, 4.0]
    assert smooth(values, 0) == values
    # by hand, weight 0.6: each point is the average of the points so far weighted 0.6^age
    # (0.4, 0.24, 0.144 ...), divided by the weights' sum 1 - 0.6^n
    assert smooth(values, 0.6) == pytest.approx([1.0, (0.4 * 2 + 0.24 * 1) / 0.64,
                                                 (0.4 * 4 + 0.24 * 2 + 0.144 * 1) / 0.784])
    assert smooth(values, 0.6)[2] == pytest.approx(2.836734693877551)


def test_smoothing_0_draws_the_same_values(runs, tmp_path):
    raw = plot_runs(runs[:1], tmp_path / "raw.png", metrics=["reward/mean"], smooth=0)
    assert raw["reward/mean"]["seed0"] == logged(runs[0], "reward/mean")


def test_blank_and_torn_lines_are_skipped(runs, tmp_path):
    run = tmp_path / "torn"
    run.mkdir()
    text = (runs[0] / "metrics.jsonl").read_text()
    (run / "metrics.jsonl").write_text("\n" + text + "\n" + text.splitlines()[1][:40])  # a kill mid-write
    assert read_metrics(run) == read_metrics(runs[0]) == [json.loads(line) for line in text.splitlines()]


def test_labels_are_folder_names_and_parent_name_where_two_collide(tmp_path):
    assert run_labels([tmp_path / "x" / "a", tmp_path / "y" / "a", tmp_path / "b"]) == ["x/a", "y/a", "b"]


PREFERENCE_STEPS = [
    {"step": 1, "loss": 0.69, "rewards/accuracy": 0.0, "rewards/margin": 0.0, "alpha/long": 0.4, "alpha/short": 0.6},
    {"step": 2, "loss": 0.68, "rewards/accuracy": 0.5, "rewards/margin": 0.1, "alpha/long": 0.5, "alpha/short": 0.5,
     "eval/long/preference_accuracy": 0.25, "eval/short/preference_accuracy": 0.75,
     "eval/mean_group_accuracy": 0.5, "eval/worst_group_accuracy": 0.25},
]


def test_preference_runs_get_their_own_panels(runs, tmp_path):
    run = tmp_path / "dpo"
    run.mkdir()
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in PREFERENCE_STEPS))
    drawn = plot_runs([run], tmp_path / "dpo.png")
    assert list(drawn) == [panel.name for panel in PREFERENCE_PANELS]
    assert drawn["alpha"] == {"dpo: alpha/long": ([1, 2], [0.4, 0.5]), "dpo: alpha/short": ([1, 2], [0.6, 0.5])}
    assert drawn["group_accuracy"]["dpo: eval/short/preference_accuracy"] == ([2], [0.75])
    # beside a GRPO run: both sets of panels, each run drawn where it has data
    both = plot_runs([runs[0], run], tmp_path / "both.png")
    assert list(both) == DEFAULT_NAMES + [panel.name for panel in PREFERENCE_PANELS]
    assert set(both["kl"]) == {"seed0"} and set(both["rewards/margin"]) == {"dpo"}
    assert set(both["loss"]) == {"seed0", "dpo"}


def test_a_real_dpo_run_gets_the_preference_panels(tmp_path):
    run = tmp_path / "dpo"
    assert main(["train", "+recipe=gr_dpo", f"output_dir={run}", "trainer.steps=2", "trainer.eval_every=2",
                 "eval.num_prompts=4"]) == 0
    drawn = plot_runs([run], tmp_path / "dpo.png")
    assert list(drawn) == [panel.name for panel in PREFERENCE_PANELS]
    assert {label.split("/")[-1] for label in drawn["alpha"]} == {"long", "medium", "short"}
    assert drawn["preference_accuracy"]["dpo: eval/worst_group_accuracy"] == logged(run, "eval/worst_group_accuracy")


BAD = [
    (["{tmp}/nowhere"], "run folder {tmp}/nowhere does not exist; pass a run's output_dir"),
    (["{tmp}/empty"], "{tmp}/empty has no metrics.jsonl, so it is not a run folder; pass a run's output_dir"),
    (["{tmp}"], "{tmp} has no metrics.jsonl, so it is not a run folder; pass the run folders inside it: {tmp}/copy"),
    (["{run}", "--metrics", "reward/mean,nope/*"], "no run logs nope/*; pick from: eval/accuracy, "),
    (["{run}", "--smooth", "1"], "--smooth must be at least 0 and below 1"),
    (["{run}", "--smooth", "high"], "--smooth takes a number from 0 (raw) to below 1, got 'high'"),
    (["{run}", "--out", "{tmp}/plot.txt"], "--out {tmp}/plot.txt: name a picture file ending in .png"),
    (["{run}", "--out", "{tmp}"], "--out {tmp} is a folder; name a file"),
    (["{run}", "--out"], "--out needs a value; usage: grpo plot RUN"),
    (["{run}", "--colour", "red"], "grpo plot: unknown option --colour; usage: grpo plot RUN"),
    (["{run}", "{run}"], "run folder {run} is given twice; pass each run once"),
    ([], "grpo plot needs at least one run folder; usage: grpo plot RUN"),
]


@pytest.mark.parametrize("args,message", BAD, ids=[" ".join(args) or "none" for args, _ in BAD])
def test_bad_input_is_one_line_and_exit_2(runs, tmp_path, capsys, args, message):
    (tmp_path / "empty").mkdir()
    shutil.copytree(runs[0], tmp_path / "copy")
    fill = {"tmp": tmp_path, "run": runs[0]}
    assert main(["plot", *(a.format(**fill) for a in args)]) == 2
    printed = capsys.readouterr()
    assert printed.err.startswith("error: " + message.format(**fill)) and printed.err.count("\n") == 1
    assert printed.out == "" and not (tmp_path / "plot.png").exists()


def test_without_matplotlib_the_fix_is_named(runs, tmp_path, monkeypatch, capsys):
    for name in [m for m in sys.modules if m == "matplotlib" or m.startswith("matplotlib.")]:
        monkeypatch.setitem(sys.modules, name, None)  # `import matplotlib...` now raises ImportError
    assert main(["plot", str(runs[0]), "--out", str(tmp_path / "p.png")]) == 2
    assert capsys.readouterr().err == ('error: grpo plot needs matplotlib, which is not installed; install it: '
                                       'pip install -e ".[plot]" (or pip install matplotlib)\n')
    assert not (tmp_path / "p.png").exists()
