"""Preference pairs from a local file with the real tiny tokenizer: column mapping, the group
in the prompt, fixed group indices across splits, ties dropped, and errors that name the row."""

import json

import pytest

from grpo_cli.errors import UserError
from grpo_cli.data import load_pairs

ROWS = [
    {"q": "2+3", "good": "Answer: 5", "bad": "Answer: 6", "kind": "short"},
    {"q": "2+3+4+5+6", "good": "Answer: 20", "bad": "Answer: 21", "kind": "long"},
    {"q": "1+1", "good": "Answer: 2", "bad": "Answer: 2", "kind": "short"},  # a tie
    {"q": "4+4", "good": "Answer: 8", "bad": "Answer: 9", "kind": "short"},
]


def write(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def pair_cfg(make_cfg, *overrides):
    return make_cfg("data.prompt_key=q", "data.chosen_key=good", "data.rejected_key=bad", "data.group_key=kind",
                    "data.template='{kind}: {q}'", "data.chat_template=false", *overrides).data


def test_pairs_carry_groups_and_put_them_in_the_prompt(tmp_path, make_cfg, tokenizer):
    pairs = load_pairs(write(tmp_path / "p.jsonl", ROWS), "train", pair_cfg(make_cfg), tokenizer)
    assert len(pairs) == 3 and pairs.dropped_ties == 1
    assert pairs.group_names == ["long", "short"] and pairs.groups.tolist() == [1, 0, 1] and pairs.sizes() == [1, 2]
    assert tokenizer.decode(pairs.prompt_ids[1]).replace(" ", "").startswith("long:2+3+4+5+6")
    assert pairs.chosen_ids[0][-1] == tokenizer.eos_token_id and pairs.chosen_ids[0] != pairs.rejected_ids[0]
    assert tokenizer.decode(pairs.chosen_ids[0], skip_special_tokens=True).replace(" ", "") == "Answer:5"
    held_out = load_pairs(write(tmp_path / "h.jsonl", ROWS[:1]), "test", pair_cfg(make_cfg), tokenizer,
                          group_names=pairs.group_names)
    assert held_out.groups.tolist() == [1] and held_out.sizes() == [0, 1]


def test_a_held_out_group_unseen_in_training_is_refused(tmp_path, make_cfg, tokenizer):
    with pytest.raises(UserError, match="group 'long' is not among the training groups"):
        load_pairs(write(tmp_path / "h.jsonl", ROWS[:2]), "test", pair_cfg(make_cfg), tokenizer, group_names=["short"])


@pytest.mark.parametrize("broken, message", [
    ({"q": "2+2", "bad": "Answer: 5", "kind": "short"}, "row 2: column 'good' is missing"),
    ({"q": "2+2", "good": "Answer: 4", "bad": "Answer: 5"}, "row 2 has no column 'kind'"),
    ({"good": "Answer: 4", "bad": "Answer: 5", "kind": "short"}, "row 2 has no column 'q'"),
])
def test_a_broken_row_is_named(tmp_path, make_cfg, tokenizer, broken, message):
    with pytest.raises(UserError, match=message):
        load_pairs(write(tmp_path / "p.jsonl", [ROWS[0], broken]), "train", pair_cfg(make_cfg), tokenizer)


def test_without_a_group_key_every_pair_is_one_group(tmp_path, make_cfg, tokenizer):
    pairs = load_pairs(write(tmp_path / "p.jsonl", ROWS), "train", pair_cfg(make_cfg, "data.group_key=null",
                                                                              "data.template='{q}'"), tokenizer)
    assert pairs.group_names == ["all"] and pairs.sizes() == [3]
