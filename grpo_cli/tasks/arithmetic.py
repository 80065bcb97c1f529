"""Synthetic verifiable task: add a short list of single-digit numbers.

A question is a sum such as ``3+5+2+7`` and the reference answer is its value (``17``).
The task exists so that the shipped tiny model and the tests have a reward that is exact,
cheap and needs no network or external data.

The worked solutions the tiny model is supervised on are built to make RL visible on a
CPU in minutes:

* One running partial sum per line, last line exactly ``Answer: <int>``. Every step is a
  small, local decision, so a small character-level model can learn the procedure.
* With probability ``error_rate`` a step writes a wrong partial sum and later steps carry
  on correctly from the wrong value. A model trained on such targets keeps the right
  argmax (greedy decoding is nearly always right) but puts calibrated probability on
  mistakes, so sampling at temperature 1 is often wrong. RL has something to sharpen.
* With probability ``verbose_rate`` a solution carries extra working that never changes
  correctness, so completion length varies within a group of samples independently of
  the reward. Length-sensitive objectives (Dr. GRPO, DAPO's token-level loss, length
  penalties) behave differently from plain GRPO only when that variance exists.

Train and test problems are disjoint by construction: a problem belongs to the test
split iff a stable hash of its text is 0 mod 10, whatever the seed or row count.
"""

from __future__ import annotations

import hashlib
import random

MIN_TERMS, MAX_TERMS = 2, 5
MIN_TERM, MAX_TERM = 1, 9
TEST_BUCKETS = 10
SPLITS = ("train", "test")

# Off-by-one slips in the units digit are the common mistake; tens-digit slips are rarer.
_ERROR_DELTAS = (-1, 1, -1, 1, -10, 10)


def format_question(terms: list[int]) -> str:
    """The question text for `terms`, e.g. ``3+5+2+7``."""
    return "+".join(str(t) for t in terms)


def parse_question(question: str) -> list[int]:
    """The terms of a question written by `format_question`."""
    return [int(t) for t in question.split("+")]


def split_of(question: str) -> str:
    """Which split a problem belongs to. A cryptographic hash, not `hash()`, because
    Python salts string hashes per process and the split must never move."""
    digest = hashlib.sha256(question.encode("utf-8")).digest()
    return "test" if int.from_bytes(digest[:8], "big") % TEST_BUCKETS == 0 else "train"


def sample_terms(rng: random.Random) -> list[int]:
    """A random problem: the number of terms is uniform first, so short problems are as
    common as long ones even though there are far fewer distinct short problems."""
    count = rng.randint(MIN_TERMS, MAX_TERMS)
    return [rng.randint(MIN_TERM, MAX_TERM) for _ in range(count)]


def sample_split_terms(rng: random.Random, split: str) -> list[int]:
    """A random problem from `split` (rejection sampling on `split_of`)."""
    _check_split(split)
    while True:
        terms = sample_terms(rng)
        if split_of(format_question(terms)) == split:
            return terms


def make_rows(split: str, n: int, seed: int) -> list[dict]:
    """`n` distinct problems of `split` as ``{"question", "answer"}`` rows.

    Rows are distinct so that test accuracy is not weighted towards repeated problems.
    Once the few distinct short problems of a split are used up, later rows are longer
    problems, so the length mix of a large `n` drifts towards 4 and 5 terms.
    """
    _check_split(split)
    rng = random.Random(f"arithmetic-{split}-{seed}")
    seen: set[str] = set()
    rows: list[dict] = []
    draws_left = 200 * n + 10_000  # a bound, so an impossible `n` fails instead of hanging
    while len(rows) < n:
        if draws_left == 0:
            raise ValueError(f"could not draw {n} distinct {split} problems (got {len(rows)})")
        draws_left -= 1
        terms = sample_split_terms(rng, split)
        question = format_question(terms)
        if question not in seen:
            seen.add(question)
            rows.append({"question": question, "answer": str(sum(terms))})
    return rows


def solution_text(
    terms: list[int], rng: random.Random, error_rate: float = 0.0, verbose_rate: float = 0.0
) -> str:
    """A worked solution: running partial sums, one line per step, then ``Answer: <int>``.

    Each step is written wrong with probability `error_rate` and later steps add onto the
    written (possibly wrong) value, exactly like a careless human would, so the final
    answer is wrong whenever the slips do not cancel out.
    """
    lines = []
    # One extra line at most: a 5-term solution must still fit in 64 characters.
    style = rng.choice(("terms", "total")) if rng.random() < verbose_rate else ""
    if style == "terms":
        lines.append("Terms: " + ",".join(str(t) for t in terms))
    total = terms[0]
    for term in terms[1:]:
        written = total + term
        if rng.random() < error_rate:
            written = _slip(written, rng)
        lines.append(f"{total}+{term}={written}")
        total = written
    if style == "total":
        lines.append(f"Total: {total}")
    lines.append(f"Answer: {total}")
    return "\n".join(lines)


def _slip(value: int, rng: random.Random) -> int:
    """A plausible wrong partial sum near `value` (never below 1, so no minus signs)."""
    deltas = [d for d in _ERROR_DELTAS if value + d >= 1]
    return value + rng.choice(deltas)


def _check_split(split: str) -> None:
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
