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
    ("eval.top_p=-1", "eval.top_p=-1.0 must lie in (0, 1]"),
    ("eval.num_prompts=-1", "eval.num_prompts=-1 must be >= 0"),
    ("eval.max_new_tokens=-5", "eval.max_new_tokens=-5 must be >= 1"),
    ("seed=99999999999999999", "must lie in [0, 2^31)"),
    ("output_dir=", "output_dir is empty"),
    ("output_dir=EMPTY.jsonl", "is a file, not a folder"),
    ("data.path=LISTPROMPT.jsonl", "column 'question' holds a list, not text"),
    ("data.path=NOROLE.jsonl data.prompt_key=messages", "message 0 has role None"),
    ("data.path=LONG.jsonl data.max_prompt_tokens=400", "1 of 2 prompts plus the 64-token generation budget exceed the model's 256 positions; "
                             "set data.max_prompt_tokens=192"),
]


@pytest.fixture
def files(tmp_path):
    (tmp_path / "EMPTY.jsonl").write_text("")
    (tmp_path / "MALFORMED.jsonl").write_text('{"question": "1+1", "answer": "2"}\n{"question": \n')
    (tmp_path / "NOANSWER.jsonl").write_text('{"question": "1+1"}\n')
    (tmp_path / "LISTPROMPT.jsonl").write_text('{"question": ["1+2", "3+4"], "answer": "3"}\n')
    (tmp_path / "NOROLE.jsonl").write_text('{"messages": [{"content": "1+1"}], "answer": "2"}\n')
    (tmp_path / "LONG.jsonl").write_text('{"question": "1+1", "answer": "2"}\n'
                                         '{"question": "%s", "answer": "2"}\n' % ("1+" * 120 + "1"))
    return tmp_path


@pytest.mark.parametrize("override, fragment", BAD, ids=[b[0] for b in BAD])
def test_bad_input_is_one_line_and_exit_2(files, capsys, override, fragment):
    names = {"MISSING.jsonl": "missing.jsonl", **{n: n for n in ("EMPTY.jsonl", "MALFORMED.jsonl", "NOANSWER.jsonl",
                                                                   "LISTPROMPT.jsonl", "NOROLE.jsonl", "LONG.jsonl")}}
    args = []
    for arg in override.split(" "):
        key, _, value = arg.partition("=")
        args.append(f"{key}={files / names[value]}" if value in names else arg)
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


SHORT = ["trainer.steps=2", "trainer.eval_every=0", "eval.num_prompts=4", "eval.k=2", "trainer.prompts_per_step=4"]


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    run = tmp_path_factory.mktemp("finished") / "run"
    assert main(["train", f"output_dir={run}", *SHORT]) == 0
    return run


def snapshot(folder):
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("overrides, status, fragment", [
    ([], 0, "nothing to do: "),  # finished: no summary.json rewritten with the base model's figures
    (["trainer.steps=3", "sampler.n=4"], 2, "resume would change what the run trains: sampler.n (8 -> 4)"),
    (["trainer.steps=3", "algorithm=dapo"], 2, "algorithm.name (grpo -> dapo)"),
], ids=["finished", "group-size", "algorithm"])
def test_a_resume_that_would_rewrite_the_run_changes_nothing(finished_run, capsys, overrides, status, fragment):
    before = snapshot(finished_run)
    assert main(["train", f"output_dir={finished_run}", "resume=auto", *SHORT, *overrides]) == status
    err = capsys.readouterr().err
    assert fragment in err and err.count("\n") == 1 and "Traceback" not in err, err
    assert snapshot(finished_run) == before


def test_an_output_dir_inside_a_run_folder_is_refused(finished_run, capsys):
    before = snapshot(finished_run)
    inner = finished_run / "checkpoints" / "step_2" / "inner"
    assert main(["train", f"output_dir={inner}", *SHORT]) == 2
    err = capsys.readouterr().err
    assert f"lies inside the run folder {finished_run}" in err and err.count("\n") == 1, err
    assert snapshot(finished_run) == before


@pytest.mark.parametrize("command", [["eval", "eval.num_prompts=2"], ["score", "completions=ROWS"]])
def test_an_output_that_is_a_folder_is_refused_before_the_work(tmp_path, capsys, command):
    rows = tmp_path / "rows.jsonl"
    rows.write_text('{"prompt": "1+1", "completion": "Answer: 2", "answer": "2"}\n')
    folder = tmp_path / "results"
    folder.mkdir()
    args = [a.replace("ROWS", str(rows)) for a in command]
    assert main([*args, f"output={folder}"]) == 2
    err = capsys.readouterr().err
    assert f"output={folder} is a folder; give a file name" in err and err.count("\n") == 1, err
    assert list(folder.iterdir()) == []
