"""Build the embedded preference data set: `grpo_cli/assets/arithmetic_pairs/{train,test}.jsonl`.

Pairs of worked solutions to the embedded arithmetic task, in three groups of very different
sizes, each with its own preference:

| group | problems | train share | chosen | rejected |
|---|---|---|---|---|
| medium | 4 terms | 80% | the concise correct solution | the same with a slipped partial sum |
| short | 2-3 terms | 15% | the concise correct solution | the same with a `Terms:` line first |
| long | 5 terms | 5% | the correct solution with a `Terms:` line first | the concise one |

The small `long` group is the hard one: its preference runs against the `short` group's, and
its prompts differ from the majority's only by one more term. Plain DPO, which weights
every pair alike, mostly learns the majority's signal; a group-robust method has to move the
weight onto `long` to serve it. The held-out split has the same number of pairs per group, drawn
from the task's held-out problems. Every row also carries the task's `answer`.

    python scripts/make_preference_data.py [--train 2000] [--test 80] [--seed 0]
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

from grpo_cli.config import ASSETS_DIR
from grpo_cli.tasks import arithmetic

SHARES = {"medium": 0.80, "short": 0.15, "long": 0.05}
TERMS = {"medium": (4,), "short": (2, 3), "long": (5,)}


def concise(terms: list[int]) -> str:
    return arithmetic.solution_text(terms, random.Random(0))


def verbose(terms: list[int]) -> str:
    return "Terms: " + ",".join(str(t) for t in terms) + "\n" + concise(terms)


def slipped(terms: list[int], rng: random.Random) -> str:
    """The concise solution with one partial sum written wrong; later steps carry it on."""
    step = rng.randrange(1, len(terms))
    lines, total = [], terms[0]
    for index, term in enumerate(terms[1:], start=1):
        written = total + term + (rng.choice((-1, 1, -10, 10)) if index == step else 0)
        written = written if written >= 1 else total + term + 1
        lines.append(f"{total}+{term}={written}")
        total = written
    return "\n".join(lines + [f"Answer: {total}"])


def pair(group: str, terms: list[int], rng: random.Random) -> dict:
    chosen, rejected = {
        "medium": (concise(terms), slipped(terms, rng)),
        "short": (concise(terms), verbose(terms)),
        "long": (verbose(terms), concise(terms)),
    }[group]
    question = arithmetic.format_question(terms)
    return {"question": question, "chosen": chosen, "rejected": rejected, "group": group, "answer": str(sum(terms))}


def problems(group: str, split: str, count: int, rng: random.Random) -> list[list[int]]:
    """`count` distinct problems of `split` with the group's number of terms."""
    seen, out = set(), []
    for _ in range(1_000_000):
        if len(out) == count:
            return out
        terms = [rng.randint(arithmetic.MIN_TERM, arithmetic.MAX_TERM) for _ in range(rng.choice(TERMS[group]))]
        question = arithmetic.format_question(terms)
        if arithmetic.split_of(question) == split and question not in seen:
            seen.add(question)
            out.append(terms)
    raise ValueError(f"only {len(out)} distinct {split} problems for group {group}")


def rows(split: str, counts: dict[str, int], seed: int) -> list[dict]:
    rng = random.Random(f"pairs-{split}-{seed}")
    out = [pair(group, terms, rng) for group, count in counts.items() for terms in problems(group, split, count, rng)]
    rng.shuffle(out)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train", type=int, default=2000, help="training pairs, split by SHARES")
    parser.add_argument("--test", type=int, default=60, help="held-out pairs per group")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=ASSETS_DIR / "arithmetic_pairs")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    splits = {"train": {g: round(share * args.train) for g, share in SHARES.items()},
              "test": {g: args.test for g in SHARES}}
    for split, counts in splits.items():
        written = rows(split, counts, args.seed)
        (args.out / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in written))
        print(f"{args.out / split}.jsonl: {len(written)} pairs {counts}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
