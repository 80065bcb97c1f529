"""`grpo validate`: a config, its model, data and rewards checked without training or a run folder."""

import pytest

from grpo_cli.cli import main


def test_validate_the_embedded_default(tmp_path, capsys):
    assert main(["validate", f"output_dir={tmp_path / 'run'}"]) == 0
    err = capsys.readouterr().err
    assert "llama, 4 layers" in err and "4000 prompts" in err and "200 prompts" in err
    assert "final_answer (ok)" in err and "would start" in err
    assert not (tmp_path / "run").exists()  # nothing written


def test_validate_reports_a_reward_that_fails_on_the_data(tmp_path, capsys):
    reward = tmp_path / "needs_column.py"
    reward.write_text("def f(prompts, completions, solution, **_):\n    return [0.0] * len(completions)\n")
    assert main(["validate", f"output_dir={tmp_path / 'run'}", f"reward.functions=[{{name:'{reward}:f'}}]"]) == 0
    assert "f (failed: TypeError" in capsys.readouterr().err


@pytest.mark.parametrize("override, fragment", [
    ("model.name_or_path=/no/such/model", "model path /no/such/model does not exist"),
    ("data.path=/no/such/file.jsonl", "data file /no/such/file.jsonl does not exist"),
    ("data.template='{nope}'", "has no column 'nope'"),
    ("resume=auto", "has no complete checkpoint"),
])
def test_validate_fails_like_train_would(tmp_path, capsys, override, fragment):
    assert main(["validate", f"output_dir={tmp_path / 'run'}", override]) == 2
    err = capsys.readouterr().err
    assert fragment in err and err.count("\n") == 1
