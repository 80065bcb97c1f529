"""`grpo score` and training with a user reward that raises on a tenth of rows and hangs on a few."""

import json

import pytest

from grpo_cli.cli import main

# Raises on every tenth reference, sleeps far past the limit when the completion says "slow".
FLAKY = '''
import time


def flaky(prompts, completions, answer, **_):
    out = []
    for completion, ref in zip(completions, answer):
        if int(float(ref)) % 10 == 0:
            raise ValueError(f"no rule for {ref}")
        if "slow" in completion:
            time.sleep(120)
        out.append(1.0 if completion.strip().endswith(str(ref)) else 0.0)
    return out
'''


@pytest.fixture
def flaky_file(tmp_path):
    path = tmp_path / "flaky_reward.py"
    path.write_text(FLAKY)
    return path


def write_rows(path, rows):
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))


def read_rows(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_score_writes_every_row_with_total_and_components(tmp_path, capsys):
    source = tmp_path / "samples.jsonl"
    write_rows(source, [
        {"prompt": "2+3?", "completion": "2+3=5\nAnswer: 5", "answer": "5", "id": 1},
        {"prompt": "2+4?", "completion": "so \\boxed{7}", "answer": "6", "id": 2},
        {"prompt": "1+1?", "completion": "<think>\n1+1\n</think>\n<answer>\n2\n</answer>", "answer": "2", "id": 3},
        {"prompt": "1+2?", "completion": "no idea", "id": 4},
    ])
    out = tmp_path / "scored.jsonl"
    assert main(["score", f"completions={source}", f"output={out}",
                 "reward.functions=[{name:math},{name:format,weight:0.5}]"]) == 0
    rows = read_rows(out)
    assert [row["id"] for row in rows] == [1, 2, 3, 4]
    assert [row["math"] for row in rows] == [1.0, 0.0, 1.0, None]
    assert [row["format"] for row in rows] == [0.0, 0.0, 1.0, 0.0]
    assert [row["reward"] for row in rows] == [1.0, 0.0, 1.5, 0.0]
    printed = capsys.readouterr().err
    assert "rewards on 4 completions" in printed and "0.2500" in printed  # math: a quarter None


def test_score_survives_a_reward_that_raises_and_hangs(tmp_path, flaky_file, capsys):
    source = tmp_path / "samples.jsonl"
    rows = [{"prompt": f"q{i}", "completion": f"{'slow ' if i in (7, 23) else ''}answer {i}", "answer": str(i)}
            for i in range(1, 41)]
    write_rows(source, rows)
    out = tmp_path / "scored.jsonl"
    assert main(["score", f"completions={source}", f"output={out}", "reward.timeout=1", "reward.rows_per_call=8",
                 f"reward.functions=[{{name:'{flaky_file}:flaky'}}]"]) == 0
    scored = read_rows(out)
    failed = [row["answer"] for row in scored if row["flaky"] is None]
    assert failed == ["7", "10", "20", "23", "30", "40"]
    assert all(row["flaky"] == 1.0 for row in scored if row["answer"] not in failed)
    printed = capsys.readouterr().err
    assert "ValueError: no rule for 10" in printed or "timed out after 1s" in printed
    assert "reward flaky failed on" in printed


def test_training_survives_a_reward_that_raises_and_hangs(tmp_path, flaky_file):
    run_dir = tmp_path / "run"
    # The embedded task's answers end in 0 about a tenth of the time; about one completion in 97 hangs.
    slow = tmp_path / "slow_reward.py"
    slow.write_text(FLAKY.replace('"slow" in completion', 'len(completion) % 97 == 0'))
    assert main(["train", f"output_dir={run_dir}", "trainer.steps=2", "trainer.eval_every=0", "trainer.save_every=2",
                 "eval.num_prompts=8", "reward.timeout=1",
                 f"reward.functions=[{{name:final_answer}},{{name:'{slow}:flaky',weight:0.5}}]"]) == 0
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [0, 1, 2]
    assert sum(r["reward/flaky/failed"] for r in records[1:]) > 0
    assert all(r["reward/final_answer/failed"] == 0 for r in records[1:])
    assert (run_dir / "checkpoints" / "step_2").is_dir()


@pytest.mark.parametrize("content, fragment", [
    (None, "completions file"),
    ('{"prompt": "p", "answer": "1"}\n', "row 1 has no text column 'completion'"),
    ('{"prompt": "p", "completion": "c"}\nnot json\n', "line 2 is not valid JSON"),
])
def test_score_bad_input_is_one_line_and_exit_2(tmp_path, capsys, content, fragment):
    source = tmp_path / "samples.jsonl"
    if content is not None:
        source.write_text(content)
    assert main(["score", f"completions={source}"]) == 2
    err = capsys.readouterr().err
    assert fragment in err and err.count("\n") == 1
