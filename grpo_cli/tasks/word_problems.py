"""Generated one- and two-step arithmetic word problems, for real chat models on a CPU.

A problem is a short story ("Mia has 7 shells and gets 5 more. How many shells does Mia have
now?") whose answer is a whole number. Six kinds, in equal shares: addition, subtraction,
multiplication (bags of items), division (sharing equally), and two two-step kinds (gain then
lose; a friend who has more). Numbers stay small (2 to 17, factors 2 to 5): a 135M-parameter
model such as SmolLM2-135M-Instruct gets about one in five right at temperature 0.6, so
sampled groups usually hold both right and wrong answers and RL has something to learn from.

The split is by the arithmetic, not by the wording: a problem is held out when a stable hash
of its expression ("7+5", "12//3") falls in the test bucket, so no held-out sum, difference,
product or quotient is ever seen in training, whatever story it is told in. `python -m grpo_cli.tasks.word_problems` writes the
shipped files (grpo_cli/assets/word_problems/).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
from pathlib import Path

NAMES = ("Tom", "Anna", "Ben", "Maria", "Sam", "Lily", "Omar", "Mia", "Leo", "Zoe", "Ravi", "Emma", "Noah", "Sara",
         "Ivan", "Chloe")
ITEMS = ("apples", "pencils", "stickers", "marbles", "books", "cookies", "stamps", "cards", "shells", "coins",
         "balloons", "eggs")
LOW, HIGH = 2, 12  # the range of counts
FACTOR_LOW, FACTOR_HIGH = 2, 5  # bags and friends
TEST_BUCKETS = 8
SPLITS = ("train", "test")


def _add(n, it, a, b, c):
    return f"{n} has {a} {it} and gets {b} more. How many {it} does {n} have now?", f"{a}+{b}", a + b


def _subtract(n, it, a, b, c):
    return f"{n} has {a + b} {it} and gives {b} of them away. How many {it} does {n} have left?", f"{a + b}-{b}", a


def _multiply(n, it, a, b, c):
    return f"{n} buys {c} bags with {a} {it} in each bag. How many {it} does {n} buy?", f"{c}*{a}", c * a


def _divide(n, it, a, b, c):
    return f"{n} shares {c * a} {it} equally among {c} friends. How many {it} does each friend get?", f"{c * a}//{c}", a


def _gain_then_lose(n, it, a, b, c):
    return (f"{n} has {a + c} {it} and gets {b} more, then gives {c} away. How many {it} does {n} have now?",
            f"{a + c}+{b}-{c}", a + b)


def _friend_has_more(n, it, a, b, c):
    return (f"{n} has {a} {it}. {n}'s friend has {b} more {it} than {n}. How many {it} does the friend have?",
            f"{a}+{b}", a + b)


# kind -> story(name, items, a, b, c) -> (question, its arithmetic written out, answer)
KINDS = {"add": _add, "subtract": _subtract, "multiply": _multiply, "divide": _divide,
         "gain_then_lose": _gain_then_lose, "friend_has_more": _friend_has_more}


def split_of(expression: str) -> str:
    """The split of a problem's arithmetic, e.g. "7+5" whatever the story (sha256, not
    hash(): Python salts string hashes)."""
    digest = hashlib.sha256(expression.encode()).digest()
    return "test" if int.from_bytes(digest[:8], "big") % TEST_BUCKETS == 0 else "train"


def make_rows(split: str, n: int, seed: int = 0) -> list[dict]:
    """`n` distinct questions of `split` as {"question", "answer", "kind"} rows, the kinds in turn."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    rng = random.Random(f"word-problems-{split}-{seed}")
    kinds = list(KINDS)
    rows: list[dict] = []
    seen: set[str] = set()
    for _ in range(1000 * n):
        if len(rows) == n:
            return rows
        kind = kinds[len(rows) % len(kinds)]
        numbers = (rng.randint(LOW, HIGH), rng.randint(LOW, HIGH), rng.randint(FACTOR_LOW, FACTOR_HIGH))
        question, expression, answer = KINDS[kind](rng.choice(NAMES), rng.choice(ITEMS), *numbers)
        if split_of(expression) == split and question not in seen:
            seen.add(question)
            rows.append({"question": question, "answer": str(answer), "kind": kind})
    raise ValueError(f"could not draw {n} distinct {split} problems (got {len(rows)})")


def write_split(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent.parent / "assets" / "word_problems")
    parser.add_argument("--train", type=int, default=6000)
    parser.add_argument("--test", type=int, default=600)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    for split, count in (("train", args.train), ("test", args.test)):
        write_split(args.out / f"{split}.jsonl", make_rows(split, count, args.seed))
        print(f"wrote {count} {split} problems to {args.out / f'{split}.jsonl'}")


if __name__ == "__main__":
    main()
