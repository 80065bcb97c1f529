"""Synthetic low-success task: find the missing first term of a sum, such as ``?+4+3=15``.

The task behind +recipe=embedded_verbose, built to let GRPO lengthen answers. A solution
tries a value, adds it up, says whether the total matches, may check again, and answers:

    Try 6
    6+4=10
    10+3=13
    13 is not 15
    Check: 6+4+3=13, is not 15
    Answer: 6

The tiny model supervised on such solutions (scripts/make_tiny_verbose_model.py) tries a value
uniformly at random, so it is right about one time in nine and has to learn subtraction from a
sparse reward: success stays low for a whole run. Checking is easy, though: by its verdict
line the model knows whether its answer is wrong. The `Check:` lines that follow are padding,
as many after a wrong try as after a right one in its training data. That is the setting of
Dr. GRPO's argument (arXiv 2503.20783): with each sequence's loss divided by its own length, a
long wrong answer is penalised less per token than a short one, so where most answers are
wrong and the model knows which, wrong answers should grow. Measured (scripts/compare_length.py,
README "Length: GRPO against GFPO"): they do not; with most of the gradient on wrong answers
the model loses some of its checking arithmetic, and its answers get shorter.

There are 9 x (9 + 81) problems (one or two known terms, every term 1..9); a problem belongs to
the test split iff a stable hash of its text is 0 mod 10, as in tasks/arithmetic.py.
"""

from __future__ import annotations

import random

from grpo_cli.tasks.arithmetic import SPLITS, split_of

MIN_KNOWN, MAX_KNOWN = 1, 2  # terms given besides the missing one
MIN_TERM, MAX_TERM = 1, 9
MAX_CHECKS = 3


def format_question(missing: int, known: list[int]) -> str:
    """``?+4+3=15`` for missing 8 and known [4, 3]."""
    return "?+" + "+".join(str(t) for t in known) + f"={missing + sum(known)}"


def parse_question(question: str) -> tuple[list[int], int]:
    """The known terms and the total of a question written by `format_question`."""
    left, total = question.split("=")
    return [int(t) for t in left.split("+")[1:]], int(total)


def sample_split_problem(rng: random.Random, split: str) -> tuple[int, list[int]]:
    """A random (missing, known) problem of `split` (rejection sampling on the split hash)."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    while True:
        known = [rng.randint(MIN_TERM, MAX_TERM) for _ in range(rng.randint(MIN_KNOWN, MAX_KNOWN))]
        missing = rng.randint(MIN_TERM, MAX_TERM)
        if split_of(format_question(missing, known)) == split:
            return missing, known


def make_rows(split: str, n: int, seed: int) -> list[dict]:
    """`n` distinct problems of `split` as ``{"question", "answer"}`` rows."""
    rng = random.Random(f"missing-term-{split}-{seed}")
    seen: set[str] = set()
    rows: list[dict] = []
    draws_left = 200 * n + 10_000
    while len(rows) < n:
        if draws_left == 0:
            raise ValueError(f"could not draw {n} distinct {split} problems (got {len(rows)})")
        draws_left -= 1
        missing, known = sample_split_problem(rng, split)
        question = format_question(missing, known)
        if question not in seen:
            seen.add(question)
            rows.append({"question": question, "answer": str(missing)})
    return rows


def solution_text(question: str, rng: random.Random, check_rate: float) -> str:
    """Try a value at random, add it up, compare, check again while a coin of `check_rate` says
    so (at most MAX_CHECKS times, whatever the verdict), answer the value tried."""
    known, total = parse_question(question)
    guess = rng.randint(MIN_TERM, MAX_TERM)
    lines = [f"Try {guess}"]
    running = guess
    for term in known:
        lines.append(f"{running}+{term}={running + term}")
        running += term
    lines.append(f"{running} is {total}" if running == total else f"{running} is not {total}")
    check = "Check: " + "+".join(str(t) for t in [guess, *known]) + f"={running}, " + lines[-1].split(" ", 1)[1]
    checks = 0
    while checks < MAX_CHECKS and rng.random() < check_rate:
        lines.append(check)
        checks += 1
    lines.append(f"Answer: {guess}")
    return "\n".join(lines)
