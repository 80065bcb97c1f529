"""Synthetic task: find the missing first term of a sum, such as ``?+4+3=15``.

The task behind +recipe=embedded_verbose, where GRPO lengthens answers. The tiny-verbose model
(scripts/make_tiny_verbose_model.py) was supervised on three kinds of answer:

    Answer: 6            a guess (half of them), right about one time in nine

    15-4=11              the subtraction worked out, right but for the model's slips, then
    11-3=8               (three times in four) a check and a sentence that change nothing
    Check: 8+4+3=15
    So the missing term is 8.
    Answer: 8

The reward is for the answer only. RL quickly replaces guessing by working, and the working
the model usually writes is the long kind: the extra lines come after the answer is settled,
so the reward cannot tell them apart and GRPO keeps them as they come (README, "Length: GRPO
against GFPO"). GFPO (arXiv 2508.09726) learns only from the shortest answers of each group, so
the same switch to working comes with the short kind. The growth GRPO shows here is part useful
(working instead of guessing, 10 -> 24 tokens) and part padding (24 -> 65).

There are 9 x (9 + 81) problems (one or two known terms, every term 1..9); a problem belongs to
the test split iff a stable hash of its text is 0 mod 10, as in tasks/arithmetic.py.
"""

from __future__ import annotations

import random

from grpo_cli.tasks.arithmetic import SPLITS, split_of

MIN_KNOWN, MAX_KNOWN = 1, 2  # terms given besides the missing one
MIN_TERM, MAX_TERM = 1, 9


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


def solution_text(question: str, rng: random.Random, guess_rate: float, verbose_rate: float) -> str:
    """A guess with probability `guess_rate`; otherwise the subtraction worked out, then, with
    probability `verbose_rate`, a check and a sentence that change nothing, then the answer."""
    known, total = parse_question(question)
    if rng.random() < guess_rate:
        return f"Answer: {rng.randint(MIN_TERM, MAX_TERM)}"
    lines, running = [], total
    for term in known:
        lines.append(f"{running}-{term}={running - term}")
        running -= term
    if rng.random() < verbose_rate:
        lines += ["Check: " + "+".join(str(t) for t in [running, *known]) + f"={total}",
                  f"So the missing term is {running}."]
    return "\n".join([*lines, f"Answer: {running}"])
