"""Prompt loading on real files: the shipped split, GSM8K from ../shared/data, bad rows."""

from pathlib import Path

import pytest

from grpo_cli.config import UserError
from grpo_cli.data import load_prompts, step_indices

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
