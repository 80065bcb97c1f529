"""Every bad input the user can give `grpo train`: one line naming the problem and the fix,
exit status 2, no traceback, and an existing run folder left exactly as it was."""

import pytest

from grpo_cli.cli import main

BAD = [
    ("trainer.stepz=3", "stepz"),
    ("trainer.lr=-1", "trainer.lr"),
    ("sampler.n=1", "sampler.n=1"),
    ("algorithm.clip_eps_low=1.5", "clip_eps_low"),
    ("algorithm.clip_eps_low=0", "clip_eps_low"),
    ("algorithm=gfpo algorithm.gfpo.k=9", "gfpo.k=9"),
    ("algorithm=nope", "available: cispo, dapo"),
    ("reward=nope", "available: arithmetic"),
    ("sampler=nope", "available: hf, vllm"),
    ("+recipe=nope", "available: dapo_math, dapo_math_1gpu, dpo, dr_grpo_math, embedded, gr_dpo, gsm8k, gsm8k_cpu, gspo"),
    ("model.name_or_path=/no/such/model", "model path /no/such/model does not exist"),
    ("data.path=MISSING.jsonl", "does not exist; check data.path"),
    ("data.path=EMPTY.jsonl", "has no rows"),
    ("data.path=MALFORMED.jsonl", "line 2 is not valid JSON"),
    ("data.path=NOANSWER.jsonl", "row 1 has no column 'answer'"),
    ("reward.functions=[{name:'no_such_module_xyz:f'}]", "cannot import 'no_such_module_xyz'"),
    ("resume=auto", "has no complete checkpoint"),
]


@pytest.fixture
def files(tmp_path):
    (tmp_path / "EMPTY.jsonl").write_text("")
    (tmp_path / "MALFORMED.jsonl").write_text('{"question": "1+1", "answer": "2"}\n{"question": \n')
    (tmp_path / "NOANSWER.jsonl").write_text('{"question": "1+1"}\n')
    return tmp_path


@pytest.mark.parametrize("override, fragment", BAD, ids=[b[0] for b in BAD])
def test_bad_input_is_one_line_and_exit_2(files, capsys, override, fragment):
    args = [a.replace("MISSING.jsonl", str(files / "missing.jsonl")).replace(
        "EMPTY.jsonl", str(files / "EMPTY.jsonl")).replace("MALFORMED.jsonl", str(files / "MALFORMED.jsonl")).replace(
        "NOANSWER.jsonl", str(files / "NOANSWER.jsonl")) for a in override.split(" ")]
    assert main(["train", f"output_dir={files / 'run'}", *args]) == 2
    err = capsys.readouterr().err
    assert fragment in err, err
    assert err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err


def test_another_runs_folder_is_refused_and_left_as_it_was(tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    before = {"config.yaml": "algorithm:\n  name: someone_else\n", "metrics.jsonl": '{"step": 0}\n'}
    for name, text in before.items():
        (run / name).write_text(text)
    assert main(["train", f"output_dir={run}"]) == 2
    assert "holds another run's config; pass resume=auto" in capsys.readouterr().err
    assert {p.name: p.read_text() for p in run.iterdir()} == before


def test_a_run_that_fails_to_start_leaves_no_folder(files, capsys):
    assert main(["train", f"output_dir={files / 'run'}", f"data.path={files / 'NOANSWER.jsonl'}"]) == 2
    assert not (files / "run").exists()
