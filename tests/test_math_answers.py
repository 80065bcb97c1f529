"""The `math` checker on every answer form (rewards/equivalence.py): hand-picked cases, each
with a wrong answer of the same form that must score 0."""

import json
from pathlib import Path

import pytest

from grpo_cli.rewards.answers import length, math_answer
from grpo_cli.rewards.equivalence import answer_line, last_boxed, read_answer, unwrap

# (completion, reference, expected score)
FORMS = {
    "integer": [("\\boxed{42}", "42", 1.0), ("Answer: 42", "$42$", 1.0), ("\\boxed{43}", "42", 0.0)],
    "decimal and fraction": [("\\boxed{0.5}", "\\frac{1}{2}", 1.0), ("Answer: \\dfrac{3}{4}", "0.75", 1.0),
                             ("\\boxed{0.6}", "\\frac{1}{2}", 0.0)],
    "thousands": [("Answer: 1,234", "1234", 1.0), ("\\boxed{1234}", "1,234", 1.0), ("\\boxed{1235}", "1,234", 0.0)],
    "percent": [("\\boxed{50\\%}", "50\\%", 1.0), ("Answer: 1.1\\%", "$1.1\\%$", 1.0), ("\\boxed{1.2\\%}", "$1.1\\%$", 0.0)],
    "scientific": [("\\boxed{4.5 \\times 10^{33}}", "4.5e33", 1.0), ("Answer: 4.5e33", "$4.5 \\times 10^{33}$", 1.0),
                   ("\\boxed{3e6}", "3000000", 1.0), ("\\boxed{3}", "3e6", 0.0), ("Answer: 4.6e33", "4.5e33", 0.0),
                   ("Answer: 3.83e35", "3.83e35", 1.0)],
    "expression": [("\\boxed{\\frac{a M^{1/3}}{G M^{2/3}+b}}", "\\frac{a M^{1 / 3}}{G M^{2 / 3}+b}", 1.0),
                   ("Answer: \\frac{a M^{1/3}}{G M^{2/3}+b}", "$\\frac{a M^{1 / 3}}{G M^{2 / 3}+b}$", 1.0),
                   ("\\boxed{3}", "\\frac{a M^{1 / 3}}{G M^{2 / 3}+b}", 0.0),
                   ("\\boxed{-t - t^2 - 3}", "-t^2 - t - 3", 1.0), ("\\boxed{-t^2-t+3}", "-t^2 - t - 3", 0.0),
                   ("\\boxed{\\frac{e^t}{3}}", "e^{t} / 3", 1.0), ("Answer: 3", "e^{t} / 3", 0.0),
                   ("Answer: x/2 - 1/4 + c e^{-2x}", "x / 2-1 / 4+c e^{-2 x}", 1.0)],
    "equation": [("\\boxed{y = 2x + 1}", "$y=2 x+1$", 1.0), ("\\boxed{y = 2x - 1}", "$y=2 x+1$", 0.0),
                 ("\\boxed{x = 5}", "5", 1.0), ("\\boxed{5}", "$x=5$", 1.0)],
    "complex": [("\\boxed{1 + i\\sqrt{3}}", "1+\\sqrt{3} i", 1.0), ("\\boxed{1 - \\sqrt{3} i}", "1+\\sqrt{3} i", 0.0),
                ("\\boxed{\\frac{i\\pi}{3} + \\ln 2}", "\\ln 2 + i\\pi / 3", 1.0), ("Answer: 3", "\\ln 2 + i\\pi / 3", 0.0)],
    "function": [("\\boxed{\\sqrt{2}\\cos\\left(2t - \\frac{\\pi}{4}\\right)}", "\\sqrt{2} \\cos (2 t-\\pi / 4)", 1.0),
                 ("\\boxed{\\frac{2\\pi}{\\omega}}", "2 \\pi / \\omega", 1.0), ("\\boxed{2}", "2 \\pi / \\omega", 0.0)],
    "interval and union": [("\\boxed{(0,125)\\cup(125,\\infty)}", "$(0,125) \\cup(125, \\infty)$", 1.0),
                           ("\\boxed{[2, \\infty)}", "$[2,+\\infty)$", 1.0), ("\\boxed{(2, \\infty)}", "$[2,+\\infty)$", 0.0)],
    "set": [("\\boxed{\\{3, 1, 2\\}}", "$\\{1,2,3\\}$", 1.0), ("\\boxed{\\{1, 2\\}}", "$\\{1,2,3\\}$", 0.0)],
    "tuple": [("\\boxed{(1, -2, 3)}", "$(1,-2,3)$", 1.0), ("\\boxed{(1, 2, 3)}", "$(1,-2,3)$", 0.0)],
    "matrix": [("\\boxed{\\begin{pmatrix}1 & 2\\\\ 3 & 4\\end{pmatrix}}",
                "$\\left[\\begin{array}{ll}1 & 2 \\\\ 3 & 4\\end{array}\\right]$", 1.0),
               ("\\boxed{\\begin{pmatrix}1 & 2\\\\ 3 & 5\\end{pmatrix}}",
                "$\\left[\\begin{array}{ll}1 & 2 \\\\ 3 & 4\\end{array}\\right]$", 0.0)],
    "words": [("\\boxed{\\text{No solution}}", "No solution", 1.0), ("Answer: no solution", "No solution", 1.0),
              ("\\boxed{2}", "No solution", 0.0), ("\\boxed{\\text{all real numbers}}", "all real numbers", 1.0),
              ("\\boxed{B}", "B", 1.0), ("\\boxed{C}", "B", 0.0)],
    "delimiters": [("Answer: \\(\\frac{1}{2}\\)", "0.5", 1.0), ("Answer: \\[ \\frac12 \\]", "$0.5$", 1.0),
                   ("Answer: $$\n\\frac{1}{2}\n$$", "\\boxed{\\frac{1}{2}}", 1.0), ("**Answer:** 42", "42", 1.0),
                   ("Answer: 5\nI hope it is correct.", "5", 1.0)],
    "units": [("\\boxed{20\\text{ cm}^2}", "20", 1.0), ("\\boxed{20}", "$20 \\text{ cm}^{2}$", 1.0),
              ("\\boxed{10^\\circ}", "10", 1.0), ("\\boxed{21\\text{ cm}^2}", "20", 0.0)],
    "prose with math": [("Answer: $x=-3$ or $x=11$", "$x=-3$ or $x=11$", 1.0),
                        ("Answer: $y_1 = x$\n$y_2 = x^2$", "$y_{1}=x$\n$y_{2}=x^{2}$", 1.0)],
}
CASES = [(form, *case) for form, cases in FORMS.items() for case in cases]


@pytest.mark.parametrize("form, completion, reference, expected", CASES)
def test_math_answer_forms(form, completion, reference, expected):
    assert math_answer()(["p"], [f"Some working first.\n{completion}"], answer=[reference]) == [expected]


def test_extraction_reads_nested_and_escaped_braces():
    assert last_boxed("so \\boxed{\\left\\{x \\mid x > 1\\right.} and \\boxed{\\frac{1}{\\sqrt{2}}}") == "\\frac{1}{\\sqrt{2}}"
    assert last_boxed("\\boxed{C(p)=\\left\\{\\begin{array}{l} 1 \\end{array}\\right.}") == \
        "C(p)=\\left\\{\\begin{array}{l} 1 \\end{array}\\right."
    assert last_boxed("no box") is None
    assert answer_line("Answer: 3\nAnswer: $\\frac{1}{2}$\nDone.") == "$\\frac{1}{2}$"
    assert answer_line("Answer:\n$$\n1\n$$\nthen") == "$$\n1\n$$\nthen"


def test_a_reference_is_read_whole_not_searched_for_a_number():
    # math-verify's own search reads these as 3 (or 4): the bug this checker exists to avoid.
    assert read_answer("\\frac{a M^{1 / 3}}{G M^{2 / 3}+b}", 5)[0] != 3
    assert read_answer("x / 2-1 / 4+c e^{-2 x}", 5)[0] != 4
    assert str(read_answer("3e6", 5)[0]) == "3*10**6"


def test_a_comparison_over_the_limit_is_wrong_not_a_failure():
    # sympy's solve takes about a minute to tell these equations apart; the limit makes it 0.
    completion = "\\boxed{y=c_{1} e^{-x / 2}+c_{2} e^{-x / 3}+c_{3} \\cos x+c_{4} \\sin x}"
    assert math_answer(timeout=1)(["p"], [completion], answer=["$y=k x^{2}$"]) == [0.0]


def test_length_uses_the_same_checker():
    values = length()(["q", "q"], ["\\boxed{4.5 \\times 10^{33}}", "\\boxed{4.5}"],
                      completion_ids=[[1] * 10, [1] * 20], answer=["4.5e33", "4.5e33"])
    assert values == [0.5, -0.5]


SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


def self_accepted(references: list[str]) -> list[str]:
    """The references math-verify itself accepts against themselves, boxed (its defaults)."""
    from math_verify import parse, verify

    def boxed(ref):
        return f"The answer is $\\boxed{{{unwrap(ref)}}}$."

    return [ref for ref in references if verify(parse(ref), parse(boxed(ref)))
            or verify(parse(f"${unwrap(ref)}$"), parse(boxed(ref)))]


@pytest.mark.skipif(not (SHARED / "gaokao2023en").is_dir(), reason="needs ../shared/data")
@pytest.mark.parametrize("name, every", [("gaokao2023en", 1), ("college_math", 14)])
def test_symbolic_references_match_themselves_and_not_others(name, every):
    rows = [json.loads(line) for line in (SHARED / name / "test.jsonl").read_text().splitlines() if line.strip()]
    references = self_accepted([str(row["answer"]) for row in rows][::every])
    reward = math_answer(timeout=1)
    boxed = reward(["p"] * len(references), [f"So \\boxed{{{unwrap(r)}}}." for r in references], answer=references)
    line = reward(["p"] * len(references), [f"So we are done.\nAnswer: {r}" for r in references], answer=references)
    assert sum(boxed) >= 0.995 * len(references) and sum(line) >= 0.995 * len(references)
    others = [next(o for o in references[i + 1:] + references if unwrap(o) != unwrap(r)) for i, r in enumerate(references)]
    crossed = reward(["p"] * len(references), [f"So \\boxed{{{unwrap(o)}}}." for o in others], answer=references)
    assert crossed.count(0.0) >= 0.99 * len(references)
