"""Built-in reward functions that need no model: answer line, overlong, format and language.

`final_answer` scores the number on the last `Answer:` line of a completion against the
reference column, as DAPO's recipe does for math (arXiv 2503.14476: +1 / -1 with
`correct=1, incorrect=-1`); the embedded arithmetic task uses it with 1 / 0.

`overlong` is DAPO's soft length penalty, added to the correctness reward. `format` checks a
tag pattern (open-r1's think / answer layout by default). `language` is the share of a completion's letters
written in the target language's script, DeepSeek-R1's language-consistency reward (arXiv
2501.12948 §2.3.2); R1 counts words, and a script cannot tell English from French.

Every entry of REWARDS is a factory: called with the config's `kwargs`, it returns a reward
function `(prompts, completions, **columns) -> list[float | None]`, where `columns` holds every
data column as a list aligned with the completions, plus `completion_ids` (the token ids of
each completion, EOS included, as TRL passes them). None means "no opinion": that completion
is left out of its group's statistics and gets advantage 0. The math answer rewards and
`length`, which needs them, are in rewards/answers.py.
"""

from __future__ import annotations

import math
import re
import unicodedata
from typing import Callable

RewardFn = Callable[..., list]

_ANSWER_LINE = re.compile(r"Answer:\s*\$?\s*(-?[\d,]*\.?\d+)")


def parse_number(text) -> float | None:
    """A reference or extracted answer as a float: '1,234' -> 1234.0; None when not a number."""
    if text is None:
        return None
    try:
        value = float(str(text).strip().replace(",", "").rstrip("."))
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def extract_final_answer(completion: str) -> float | None:
    """The number on the last `Answer:` line, or None when there is none."""
    matches = _ANSWER_LINE.findall(completion)
    return parse_number(matches[-1]) if matches else None


def same_number(a: float | None, b: float | None) -> bool:
    return a is not None and b is not None and math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-9)


def require_column(columns: dict, key: str, reward: str) -> list:
    if key not in columns:
        raise KeyError(f"reward {reward} needs the data column {key!r} (columns: {', '.join(sorted(columns))}); "
                       f"set its kwargs answer_key or data.answer_key")
    return columns[key]


def final_answer(correct: float = 1.0, incorrect: float = 0.0, answer_key: str = "answer") -> RewardFn:
    """`correct` when the last `Answer:` number equals the reference column, else `incorrect`."""

    def reward(prompts: list[str], completions: list[str], **columns) -> list[float | None]:
        references = require_column(columns, answer_key, "final_answer")
        return [
            correct if same_number(extract_final_answer(c), parse_number(r)) else incorrect
            for c, r in zip(completions, references)
        ]

    return reward


def overlong_penalty(length: int, max_length: int, cache_length: int, factor: float = 1.0) -> float:
    """DAPO's soft overlong punishment (docs/algorithms.md §4.3): 0 up to L_max - L_cache, then linear down to -1 at
    L_max, and -1 beyond it (the paper's clamp; verl omits it because generation stops there)."""
    threshold = max_length - cache_length
    if length <= threshold:
        return 0.0
    return max(-1.0, (threshold - length) / cache_length) * factor


def overlong(max_length: int, cache_length: int, factor: float = 1.0) -> RewardFn:
    """Added to the correctness reward: |y| counts the completion's tokens, EOS included."""
    if not 0 < cache_length <= max_length:
        raise ValueError(f"overlong needs 0 < cache_length <= max_length, got {cache_length} and {max_length}")

    def reward(prompts: list[str], completions: list[str], completion_ids: list[list[int]], **_) -> list[float]:
        return [overlong_penalty(len(ids), max_length, cache_length, factor) for ids in completion_ids]

    return reward


THINK_ANSWER = r"^<think>\n.*?\n</think>\n<answer>\n.*?\n</answer>$"


def format_reward(pattern: str = THINK_ANSWER, match: float = 1.0, mismatch: float = 0.0) -> RewardFn:
    """`match` when the whole completion (surrounding whitespace aside) matches `pattern`
    (a Python regex, `.` matching newlines), else `mismatch`."""
    compiled = re.compile(pattern, re.DOTALL)

    def reward(prompts: list[str], completions: list[str], **_) -> list[float]:
        return [match if compiled.fullmatch(c.strip()) else mismatch for c in completions]

    return reward


SCRIPTS = {"en": {"LATIN"}, "fr": {"LATIN"}, "de": {"LATIN"}, "es": {"LATIN"}, "zh": {"CJK"},
           "ja": {"CJK", "HIRAGANA", "KATAKANA"}, "ko": {"HANGUL"}, "ru": {"CYRILLIC"}, "el": {"GREEK"},
           "ar": {"ARABIC"}, "he": {"HEBREW"}, "hi": {"DEVANAGARI"}, "th": {"THAI"}}
_MATH = re.compile(r"\$\$.*?\$\$|\$.*?\$|\\\(.*?\\\)|\\\[.*?\\\]|\\[a-zA-Z]+", re.DOTALL)


def script_share(text: str, scripts: set[str]) -> float | None:
    """Share of the letters outside LaTeX that belong to `scripts`; None without letters."""
    letters = [ch for ch in _MATH.sub(" ", text) if unicodedata.category(ch).startswith("L")]
    if not letters:
        return None
    inside = sum(unicodedata.name(ch, "?").split(" ")[0] in scripts for ch in letters)
    return inside / len(letters)


def language(language: str = "en") -> RewardFn:
    """Share of the completion's letters in the script of `language` (a code in SCRIPTS);
    None (no opinion) for a completion without letters."""
    if language not in SCRIPTS:
        raise ValueError(f"language {language!r} is not one of {', '.join(sorted(SCRIPTS))}")

    def reward(prompts: list[str], completions: list[str], **_) -> list[float | None]:
        return [script_share(c, SCRIPTS[language]) for c in completions]

    return reward
