"""Built-in reward functions on real benchmark answers (../shared/data) and hand-worked values."""

import json
from pathlib import Path

import pytest

from grpo_cli.rewards.answers import dapo_math, length, math_answer, normalize_answer
from grpo_cli.rewards.builtin import format_reward, language

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
needs_shared = pytest.mark.skipif(not (SHARED / "gsm8k" / "test.jsonl").is_file(), reason="needs ../shared/data")


def read(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def gsm8k_references() -> list[str]:
    return [row["answer"].split("####")[-1].strip() for row in read(SHARED / "gsm8k" / "test.jsonl")]


ENDINGS = {
    "boxed": "She pays 3 dollars, then 4 more, so the total is \\boxed{{{}}}.",
    "answer_line": "She pays 3 dollars, then 4 more.\nAnswer: {}",
    "last_number": "She pays 3 dollars, then 4 more, which makes {}",
}


@needs_shared
@pytest.mark.parametrize("form", sorted(ENDINGS))
def test_math_scores_every_gsm8k_reference(form):
    references = gsm8k_references()
    completions = [ENDINGS[form].format(ref) for ref in references]
    scores = math_answer()(["p"] * len(references), completions, answer=references)
    assert scores == [1.0] * len(references)


@needs_shared
def test_math_rejects_another_rows_answer():
    references = gsm8k_references()
    # The next row whose answer is a different number (neighbours sometimes share one).
    others = []
    for i, ref in enumerate(references):
        j = (i + 1) % len(references)
        while float(references[j].replace(",", "")) == float(ref.replace(",", "")):
            j = (j + 1) % len(references)
        others.append(references[j])
    for form in ENDINGS.values():
        completions = [form.format(ref) for ref in references]
        scores = math_answer()(["p"] * len(references), completions, answer=others)
        assert scores.count(0.0) >= 0.99 * len(references)


@needs_shared
@pytest.mark.parametrize("name, key", [("aime24", "answer"), ("amc23", "answer")])
def test_math_scores_boxed_competition_references(name, key):
    rows = read(SHARED / name / "test.jsonl")
    references = [row[key] for row in rows]
    completions = [f"Putting it together, the answer is $\\boxed{{{ref}}}$." for ref in references]
    assert math_answer()(["p"] * len(rows), completions, answer=references) == [1.0] * len(rows)


@pytest.mark.parametrize("completion, reference, expected", [
    ("x = \\frac{1}{2}, so \\boxed{0.5}", "\\frac{1}{2}", 1.0),
    ("Answer: \\dfrac{14}{3}", "\\frac{14}{3}", 1.0),
    ("The answer is $2\\sqrt{2}$", "\\sqrt{8}", 1.0),
    ("Answer: 1,234", 1234, 1.0),
    ("Answer: 27", 27.0, 1.0),
    ("Answer: 28", 27.0, 0.0),
    ("no number at all", "5", 0.0),
])
def test_math_equivalence(completion, reference, expected):
    assert math_answer()(["p"], [completion], answer=[reference]) == [expected]


def test_math_without_a_reference_has_no_opinion():
    assert math_answer()(["p"], ["\\boxed{3}"], answer=[None]) == [None]


@pytest.mark.parametrize("completion, reference, expected", [
    ("Step 1 ... Answer: 34", "34", 1.0),
    ("Answer: 3\nAnswer: $34$", "34", 1.0),  # the last Answer: line counts
    ("answer: \\boxed{34}", "34", 1.0),
    ("Answer: 1,000 dollars", "1000", 1.0),
    ("Answer: 34.0", "34", 1.0),
    ("Answer: 35", "34", -1.0),
    ("\\boxed{34}", "34", -1.0),  # DAPO reads only the Answer: line
])
def test_dapo_math(completion, reference, expected):
    assert dapo_math()(["p"], [completion], answer=[reference]) == [expected]


def test_dapo_math_reads_only_the_last_300_characters():
    completion = "Answer: 34\n" + "x" * 300
    assert dapo_math()(["p"], [completion], answer=["34"]) == [-1.0]
    assert normalize_answer("$\\text{(B) }12$") == "(B)12"


def test_format_think_answer():
    good = "<think>\nadd them\n</think>\n<answer>\n7\n</answer>"
    bad = "<think>add them</think> 7"
    assert format_reward()(["p", "p"], [good, bad]) == [1.0, 0.0]
    assert format_reward(pattern=r"<a>.*</a>")(["p"], ["<a>x\ny</a>"]) == [1.0]


def test_length_is_kimi_group_relative():
    # One group, lengths 10 / 20 / 30 tokens: lambda = 0.5, 0, -0.5. Wrong answers keep min(0, lambda).
    completions = ["\\boxed{4}", "\\boxed{5}", "\\boxed{4}", "\\boxed{4}"]
    ids = [[1] * 10, [1] * 10, [1] * 20, [1] * 30]
    prompts = ["q", "q", "q", "q"]
    values = length()(prompts, completions, completion_ids=ids, answer=["4"] * 4)
    assert values == pytest.approx([0.5, 0.0, 0.0, -0.5])
    same = length()(["q", "q"], ["\\boxed{4}"] * 2, completion_ids=[[1] * 5] * 2, answer=["4"] * 2)
    assert same == [0.0, 0.0]


def test_language_is_the_share_of_letters_in_the_script():
    values = language("en")(["p"] * 4, ["all english words", "english 中文", "$\\frac{1}{2}$ 中文", "3 + 4 = 7"])
    assert values[0] == 1.0
    assert values[1] == pytest.approx(7 / 9)
    assert values[2] == 0.0  # LaTeX is not counted as English
    assert values[3] is None  # no letters: no opinion
    assert language("zh")(["p"], ["中文 ok"]) == [pytest.approx(0.5)]
    with pytest.raises(ValueError):
        language("xx")
