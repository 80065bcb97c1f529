"""Final-answer rewards for math: `math` (equivalence checked by math-verify) and `dapo_math`
(DAPO's string match on the last `Answer:` line, arXiv 2503.14476 and verl's `math_dapo`), and
`length`, Kimi k1.5's group-relative length reward (arXiv 2501.12599 §2.3.3), which needs to
know which completions are right.

`math` reads the completion's final answer (the last `\\boxed{}`, else the last `Answer:` line)
the same way as the reference and checks them with math-verify: rewards/equivalence.py says
how, and where that differs from math-verify's defaults.

`dapo_math` differs from verl in one place: verl's normaliser has a long list of unit words
that it deletes; we delete a `\\text{...}` unit after the number and common trailing units,
which is what those entries amount to for integer answers such as DAPO-Math-17k's.
"""

from __future__ import annotations

import re

from grpo_cli.rewards.builtin import RewardFn, final_answer, require_column
from grpo_cli.rewards.equivalence import closing_brace, math_equal

_ANSWER_TEXT = re.compile(r"(?i)answer\s*:\s*([^\n]+)")  # the whole line, not just a number
_UNIT_WORDS = re.compile(r"\s*(?:\\text\{\s*[a-zA-Z ]*\}|\\mbox\{[^}]*\}|degrees|units|dollars|cents|"
                         r"inches|feet|meters|cm|km|hours|minutes|seconds|points|ways|students)\s*$")


def math_answer(answer_key: str = "answer", correct: float = 1.0, incorrect: float = 0.0,
                timeout: int = 5) -> RewardFn:
    """`correct` when the final answer is equivalent to the reference column, else `incorrect`;
    None when the row has no reference. `timeout`: whole seconds per parse and comparison, over
    which the answer counts as wrong (rewards/equivalence.py)."""

    def reward(prompts: list[str], completions: list[str], **columns) -> list[float | None]:
        references = require_column(columns, answer_key, "math")
        return [None if ref is None else (correct if math_equal(c, ref, timeout) else incorrect)
                for c, ref in zip(completions, references)]

    return reward


def strip_boxed(text: str) -> str:
    """The text with its first `\\boxed{...}` replaced by the box's content."""
    start = text.find("\\boxed{")
    end = closing_brace(text, start + len("\\boxed")) if start >= 0 else -1
    if end < 0:
        return text
    return text[:start] + text[start + len("\\boxed{"):end] + text[end + 1:]


def normalize_answer(text: str) -> str:
    """DAPO-style normal form of a short final answer: no `$`, boxes, `\\text{}`, spaces, unit
    words, thousands separators or trailing full stop."""
    text = str(text).strip().rstrip(".").strip()
    if text.count("$") >= 2:
        text = text[text.find("$") + 1:text.rfind("$")]
    text = strip_boxed(text.replace("\\dfrac", "\\frac").replace("\\tfrac", "\\frac"))
    text = _UNIT_WORDS.sub("", text)
    text = re.sub(r"\\text\{(.*?)\}", r"\1", text)
    text = re.sub(r"\\(?:left|right|!|,|;|\s)", "", text)
    text = text.replace("$", "").replace(" ", "").rstrip(".")
    if re.fullmatch(r"-?\d{1,3}(,\d{3})+(\.\d+)?", text):
        text = text.replace(",", "")
    if re.fullmatch(r"-?\d+\.0+", text):
        text = text.split(".")[0]
    return text


def dapo_answer(completion: str) -> str | None:
    """The text of the last `Answer:` line within the final 300 characters (as verl), or None."""
    found = _ANSWER_TEXT.findall(completion[-300:])
    return found[-1] if found else None


def dapo_math(answer_key: str = "answer", correct: float = 1.0, incorrect: float = -1.0) -> RewardFn:
    """DAPO's rule reward: `correct` when the normalised last `Answer:` equals the normalised
    reference, else `incorrect` (a missing `Answer:` line is wrong, not "no opinion")."""

    def reward(prompts: list[str], completions: list[str], **columns) -> list[float | None]:
        references = require_column(columns, answer_key, "dapo_math")
        out = []
        for completion, reference in zip(completions, references):
            answer = dapo_answer(completion)
            same = answer is not None and reference is not None and normalize_answer(answer) == normalize_answer(reference)
            out.append(None if reference is None else (correct if same else incorrect))
        return out

    return reward


CHECKERS = {"math": math_answer, "dapo_math": dapo_math, "final_answer": final_answer}


def length(answer_key: str = "answer", checker: str = "math") -> RewardFn:
    """Kimi k1.5: within each prompt's completions, lambda = 0.5 - (len - min) / (max - min) in
    tokens; a correct completion gets lambda, a wrong one min(0, lambda); 0 when all lengths are
    equal. `checker` (math, dapo_math or final_answer) decides correctness: its value above 0."""
    if checker not in CHECKERS:
        raise ValueError(f"checker {checker!r} is not one of {', '.join(CHECKERS)}")
    scorer = CHECKERS[checker](answer_key=answer_key)

    def reward(prompts: list[str], completions: list[str], completion_ids: list[list[int]], **columns) -> list[float]:
        right = [v is not None and v > 0 for v in scorer(prompts, completions, **columns)]
        groups: dict[str, list[int]] = {}
        for row, prompt in enumerate(prompts):
            groups.setdefault(prompt, []).append(row)
        out = [0.0] * len(completions)
        for rows in groups.values():
            sizes = [len(completion_ids[r]) for r in rows]
            low, high = min(sizes), max(sizes)
            for r, size in zip(rows, sizes):
                value = 0.0 if high == low else 0.5 - (size - low) / (high - low)
                out[r] = value if right[r] else min(0.0, value)
        return out

    return reward
