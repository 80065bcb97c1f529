"""Synthetic tool-use task: sums of three or four numbers up to 999, too long to add in one's head.

The question reads like the embedded arithmetic task's (``347+589+120``) and the answer is its
value. The tiny tools model (scripts/make_tiny_tools_model.py) answers it either in its head,
with a bare ``Answer: <int>`` that a 1M-parameter model mostly gets wrong, or by calling the
`add` tool and copying its result. The call is the skill RL can teach in minutes; adding four
three-digit numbers without working is not. The split rule is arithmetic's (a stable hash of the
question), so train and test never share a problem.
"""

from __future__ import annotations

import random

from grpo_cli.tasks.arithmetic import format_question, split_of

MIN_TERMS, MAX_TERMS = 3, 4
MIN_TERM, MAX_TERM = 10, 999


def sample_terms(rng: random.Random, split: str) -> list[int]:
    """A random problem of `split` (rejection sampling on the split hash)."""
    while True:
        terms = [rng.randint(MIN_TERM, MAX_TERM) for _ in range(rng.randint(MIN_TERMS, MAX_TERMS))]
        if split_of(format_question(terms)) == split:
            return terms


def make_rows(split: str, n: int, seed: int) -> list[dict]:
    """`n` distinct problems of `split` as ``{"question", "answer"}`` rows."""
    rng = random.Random(f"long-sums-{split}-{seed}")
    rows: dict[str, dict] = {}
    while len(rows) < n:
        terms = sample_terms(rng, split)
        rows.setdefault(format_question(terms), {"question": format_question(terms), "answer": str(sum(terms))})
    return list(rows.values())


def miscopy(terms: list[int], rng: random.Random) -> list[int]:
    """The terms with one digit of one term changed: a careless copy into a tool call."""
    index = rng.randrange(len(terms))
    digits = list(str(terms[index]))
    place = rng.randrange(len(digits))
    digits[place] = rng.choice([d for d in "0123456789" if d != digits[place] and (place or d != "0")])
    return [int("".join(digits)) if i == index else t for i, t in enumerate(terms)]
