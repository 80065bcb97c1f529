"""Prompt loading on real files: the shipped split, GSM8K from ../shared/data, bad rows."""

import json
from pathlib import Path

import pytest

from grpo_cli.data import load_prompts
from grpo_cli.errors import UserError
from grpo_cli.training.clock import step_indices

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


def test_embedded_prompts_use_the_chat_template(make_cfg, tokenizer):
    cfg = make_cfg()
    prompts = load_prompts(cfg.data.path, "train", cfg.data, tokenizer, limit=5)
    row = prompts.examples[0]
    assert prompts.prompts[0] == tokenizer.apply_chat_template(
        [{"role": "user", "content": row["question"]}], add_generation_prompt=True, tokenize=False)
    assert tokenizer.decode(prompts.prompt_ids[0]) == prompts.prompts[0]


@pytest.mark.skipif(not (SHARED / "gsm8k" / "test.jsonl").is_file(), reason="needs ../shared/data")
def test_gsm8k_file_with_template_and_length_limit(make_cfg, tokenizer):
    cfg = make_cfg("data.template='Q: {question}'", "data.chat_template=false", "data.max_prompt_tokens=120")
    prompts = load_prompts(str(SHARED / "gsm8k" / "test.jsonl"), "test", cfg.data, tokenizer)
    assert len(prompts) + prompts.dropped_too_long == 1319
    assert prompts.dropped_too_long > 0 and all(len(ids) <= 120 for ids in prompts.prompt_ids)
    assert all(p.startswith("Q: ") for p in prompts.prompts)


def test_missing_column_names_file_row_and_column(make_cfg, tokenizer, tmp_path):
    path = tmp_path / "rows.jsonl"
    path.write_text('{"question": "1+1", "answer": "2"}\n{"question": "2+2"}\n')
    with pytest.raises(UserError, match=r"rows.jsonl: row 2 has no column 'answer'"):
        load_prompts(str(path), "train", make_cfg().data, tokenizer)


def test_unknown_template_column(make_cfg, tokenizer, tmp_path):
    path = tmp_path / "rows.jsonl"
    path.write_text('{"question": "1+1", "answer": "2"}\n')
    with pytest.raises(UserError, match="no column 'problem'"):
        load_prompts(str(path), "train", make_cfg("data.template='{problem}'").data, tokenizer)


@pytest.mark.parametrize("content, message", [
    ("", "has no rows"),
    ('{"question": "1+1", "answer": "2"}\n{"question": "1+1", "answer"\n', "line 2 is not valid JSON"),
])
def test_empty_or_malformed_file(make_cfg, tokenizer, tmp_path, content, message):
    path = tmp_path / "rows.jsonl"
    path.write_text(content)
    with pytest.raises(UserError, match=message):
        load_prompts(str(path), "train", make_cfg().data, tokenizer)


def test_missing_file(make_cfg, tokenizer, tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        load_prompts(str(tmp_path / "nope.jsonl"), "train", make_cfg().data, tokenizer)


def test_step_indices_walk_seeded_epochs_without_repeats():
    seen = [i for step in range(5) for i in step_indices(10, 4, step, seed=3)]
    assert sorted(seen[:10]) == list(range(10)) and sorted(seen[10:20]) == list(range(10))
    assert step_indices(10, 4, 2, seed=3) == step_indices(10, 4, 2, seed=3)
    assert step_indices(10, 4, 0, seed=3) != step_indices(10, 4, 0, seed=4)


needs_shared = pytest.mark.skipif(not (SHARED / "gsm8k" / "test.jsonl").is_file(), reason="needs ../shared/data")


@needs_shared
def test_gsm8k_config_on_the_local_files(make_cfg, tokenizer):
    cfg = make_cfg("data=gsm8k", f"data.path={SHARED}/gsm8k/train.jsonl", f"data.eval_path={SHARED}/gsm8k/test.jsonl")
    prompts = load_prompts(cfg.data.eval_path, cfg.data.eval_split, cfg.data, tokenizer)
    # The tiny model's tokenizer is close to character level, so a few long problems pass 512.
    assert len(prompts) + prompts.dropped_too_long == 1319 and len(prompts) > 1200
    first = prompts.examples[0]
    assert first["answer"] == "18" and first["answer_raw"].endswith("#### 18")
    assert "put your final answer within \\boxed{}" in prompts.prompts[0]


@needs_shared
@pytest.mark.parametrize("name, rows", [("aime24", 30), ("amc23", 40)])
def test_evaluation_configs_take_a_local_file_with_one_override(make_cfg, tokenizer, name, rows):
    cfg = make_cfg(f"data={name}", f"data.path={SHARED}/{name}/test.jsonl")
    assert cfg.data.eval_path == cfg.data.path
    prompts = load_prompts(cfg.data.eval_path, cfg.data.eval_split, cfg.data, tokenizer)
    assert len(prompts) == rows and prompts.dropped_too_long == 0
    assert all(example["answer"] is not None for example in prompts.examples)


def test_dapo_math_schema_rows_are_deduplicated(make_cfg, tokenizer, tmp_path):
    path = tmp_path / "dapo.jsonl"
    lines = []
    for copy in range(3):
        for i, truth in enumerate(["34", "7", "-2"]):
            lines.append(json.dumps({
                "data_source": "math_dapo", "ability": "MATH",
                "prompt": [{"role": "user", "content": f"Solve problem {i}. The last line of your response should be "
                                                       f"of the form Answer: $Answer"}],
                "reward_model": {"ground_truth": truth, "style": "rule-lighteval/MATH_v2"},
                "extra_info": {"index": f"{i}-{copy}"}}))
    path.write_text("\n".join(lines) + "\n")
    cfg = make_cfg("data=dapo_math", f"data.path={path}")
    prompts = load_prompts(cfg.data.path, cfg.data.split, cfg.data, tokenizer)
    assert len(prompts) == 3 and prompts.dropped_duplicates == 6
    assert [example["answer"] for example in prompts.examples] == ["34", "7", "-2"]
    assert prompts.prompts[0] == tokenizer.apply_chat_template(
        [{"role": "user", "content": "Solve problem 0. The last line of your response should be of the form "
                                     "Answer: $Answer"}], add_generation_prompt=True, tokenize=False)


@pytest.mark.parametrize("group, content, message", [
    ("gsm8k", '{"question": "q1", "answer": "so #### 4"}\n{"question": "q2", "answer": "no marker"}\n',
     r"rows.jsonl: row 2: answer 'no marker' has no match for data.answer_pattern"),
    ("dapo_math", '{"prompt": [{"role": "user", "content": "q"}], "reward_model": {"style": "rule"}}\n',
     r"row 1 has no column 'reward_model.ground_truth'"),
], ids=["answer_pattern_without_a_match", "nested_answer_key_missing"])
def test_a_bad_reference_names_the_row(make_cfg, tokenizer, tmp_path, group, content, message):
    path = tmp_path / "rows.jsonl"
    path.write_text(content)
    cfg = make_cfg(f"data={group}", f"data.path={path}")
    with pytest.raises(UserError, match=message):
        load_prompts(str(path), "train", cfg.data, tokenizer)


@pytest.mark.parametrize("extension", ["parquet", "csv", "json"])
def test_parquet_csv_and_json_files_load_like_jsonl(make_cfg, tokenizer, tmp_path, extension):
    import datasets

    rows = [{"question": f"{a}+{b}", "answer": str(a + b)} for a, b in [(1, 2), (3, 4), (5, 6)]]
    path = tmp_path / f"rows.{extension}"
    table = datasets.Dataset.from_list(rows)
    {"parquet": table.to_parquet, "csv": table.to_csv, "json": table.to_json}[extension](str(path))
    prompts = load_prompts(str(path), "train", make_cfg().data, tokenizer)
    assert [e["question"] for e in prompts.examples] == ["1+2", "3+4", "5+6"]
    assert [str(e["answer"]) for e in prompts.examples] == ["3", "7", "11"]


def test_answer_pattern_must_be_a_regex_with_one_group(make_cfg):
    from grpo_cli.errors import ConfigError

    with pytest.raises(ConfigError, match="is not a regular expression"):
        make_cfg("data.answer_pattern='(unclosed'")
    with pytest.raises(ConfigError, match="has 2 groups"):
        make_cfg("data.answer_pattern='(a)(b)'")


def test_dropping_long_prompts_says_how_many_and_which_setting_keeps_them(make_cfg, tokenizer, capsys):
    from grpo_cli.training.runtime import load_and_report

    cfg = make_cfg("data.max_prompt_tokens=10")
    everything = load_prompts(cfg.data.eval_path, "test", make_cfg().data, tokenizer)
    longest = max(len(ids) for ids in everything.prompt_ids)
    over = sum(len(ids) > 10 for ids in everything.prompt_ids)
    kept = load_and_report(cfg.data.eval_path, "test", cfg, tokenizer)
    assert 0 < over < len(everything) and len(kept) == len(everything) - over
    err = " ".join(capsys.readouterr().err.split())
    assert (f"warning: {cfg.data.eval_path}: dropped {over} of {len(everything)} prompts ({over / len(everything):.0%}) "
            f"longer than data.max_prompt_tokens=10 tokens with this tokenizer and template; the longest has {longest}: "
            f"set data.max_prompt_tokens={longest} to keep them all") in err


def test_when_every_prompt_is_too_long_the_error_gives_the_longest(make_cfg, tokenizer):
    cfg = make_cfg("data.max_prompt_tokens=5")
    with pytest.raises(UserError, match=r"all 200 prompts are longer than data.max_prompt_tokens=5 \(the longest has "
                                        r"\d+ tokens\); raise data.max_prompt_tokens"):
        load_prompts(cfg.data.eval_path, "test", cfg.data, tokenizer)


WORD_PROBLEM_ARITHMETIC = {  # kind -> the expression its numbers make, in the order the story tells them
    "add": "{}+{}", "subtract": "{}-{}", "multiply": "{}*{}", "divide": "{}//{}", "gain_then_lose": "{}+{}-{}",
    "friend_has_more": "{}+{}"}
OPERATIONS = {"add": lambda a, b: a + b, "subtract": lambda a, b: a - b, "multiply": lambda c, a: c * a,
              "divide": lambda q, c: q // c, "gain_then_lose": lambda a, b, c: a + b - c,
              "friend_has_more": lambda a, b: a + b}


def test_word_problems_are_right_and_the_held_out_arithmetic_is_never_trained_on(make_cfg):
    import re

    from grpo_cli.tasks import word_problems

    cfg = make_cfg("data=word_problems")
    expressions = {}
    for split, path in (("train", cfg.data.path), ("test", cfg.data.eval_path)):
        rows = [json.loads(line) for line in Path(path).read_text().splitlines()]
        assert rows == word_problems.make_rows(split, len(rows))  # the shipped files are the generator's
        expressions[split] = set()
        for row in rows:
            numbers = [int(n) for n in re.findall(r"\d+", row["question"])]
            assert row["answer"] == str(OPERATIONS[row["kind"]](*numbers)), row
            expression = WORD_PROBLEM_ARITHMETIC[row["kind"]].format(*numbers)
            assert word_problems.split_of(expression) == split
            expressions[split].add(expression)
    assert not expressions["train"] & expressions["test"]
    assert len(expressions["test"]) > 80 and len(expressions["train"]) > 600



def test_missing_term_rows_are_right_and_the_splits_are_disjoint(make_cfg):
    from grpo_cli.tasks import missing_term

    cfg = make_cfg("+recipe=embedded_verbose")
    questions = {}
    for split, path in (("train", cfg.data.path), ("test", cfg.data.eval_path)):
        rows = [json.loads(line) for line in Path(path).read_text().splitlines()]
        assert rows == missing_term.make_rows(split, len(rows), 0)  # the shipped files are the generator's
        for row in rows:
            known, total = missing_term.parse_question(row["question"])
            assert int(row["answer"]) + sum(known) == total and 1 <= int(row["answer"]) <= 9
        questions[split] = {r["question"] for r in rows}
    assert not questions["train"] & questions["test"]
    assert (len(questions["train"]), len(questions["test"])) == (731, 79)  # every problem there is: 9 x (9 + 81)


def test_a_missing_term_solution_guesses_or_works_it_out_and_may_pad():
    import random

    from grpo_cli.tasks import missing_term

    rng = random.Random(0)
    guesses = {missing_term.solution_text("?+4+3=15", rng, guess_rate=1.0, verbose_rate=0.0) for _ in range(200)}
    assert guesses == {f"Answer: {n}" for n in range(1, 10)}
    short = missing_term.solution_text("?+4+3=15", rng, guess_rate=0.0, verbose_rate=0.0)
    assert short == "15-4=11\n11-3=8\nAnswer: 8"
    long = missing_term.solution_text("?+4+3=15", rng, guess_rate=0.0, verbose_rate=1.0)
    assert long == "15-4=11\n11-3=8\nCheck: 8+4+3=15\nSo the missing term is 8.\nAnswer: 8"
