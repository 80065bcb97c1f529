"""Build the shipped tiny model `grpo_cli/assets/tiny-verbose/` and the missing-term data set.

tiny-arith's character Llama and training loop (make_tiny_model.py), supervised on answers to
grpo_cli.tasks.missing_term problems: a guess with probability `--error-rate` (0.5), else the
subtraction worked out, followed with probability `--verbose-rate` (0.75) by a check and a
sentence that change nothing. Batches are random mixes of lengths (not bucketed), so the
per-token loss weighs each kind of answer's first token alike and the model keeps the mix.
The model behind +recipe=embedded_verbose, where GRPO lengthens answers.

    python scripts/make_tiny_verbose_model.py      # full build, about eight minutes on 2 cores

It writes every problem there is: 731 train and 79 held-out rows.
"""

from __future__ import annotations

import json
import random
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "scripts"))
sys.path.insert(0, str(REPO))

import make_tiny_model as base  # noqa: E402
from grpo_cli.rewards.builtin import extract_final_answer  # noqa: E402
from grpo_cli.tasks import missing_term  # noqa: E402

MAX_NEW_TOKENS = 128


def parse_args(argv=None):
    """make_tiny_model.py's options; --error-rate is the share of guessed answers, --verbose-rate
    the share of worked ones written out at length."""
    return base.parse_args(argv, out=base.ASSETS / "tiny-verbose", data_out=base.ASSETS / "missing_term", train_rows=731,
                           test_rows=79, error_rate=0.5, verbose_rate=0.75)


def example(tokenizer, rng: random.Random, args) -> tuple[list[int], list[int]]:
    """One worked solution of a missing-term problem."""
    missing, known = missing_term.sample_split_problem(rng, "train")
    question = missing_term.format_question(missing, known)
    completion = missing_term.solution_text(question, rng, args.error_rate, args.verbose_rate) + base.EOS
    return base.labelled(tokenizer, base.render_prompt(tokenizer, question), completion)


@torch.no_grad()
def calibration(model, tokenizer, rows: list[dict], samples: int = 4) -> dict[str, float]:
    """Sampled accuracy at temperature 1, mean length, and the mean length of right and wrong answers."""
    prompts = [base.render_prompt(tokenizer, row["question"]) for row in rows for _ in range(samples)]
    torch.manual_seed(0)
    batch = tokenizer(prompts, add_special_tokens=False, padding=True, return_tensors="pt")
    output = model.generate(**batch, max_new_tokens=MAX_NEW_TOKENS, do_sample=True, temperature=1.0, top_k=0,
                            top_p=1.0, pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id)
    right, wrong = [], []
    for row, ids in zip([r for r in rows for _ in range(samples)], output[:, batch["input_ids"].shape[1]:].tolist()):
        ids = ids[: ids.index(tokenizer.eos_token_id) + 1] if tokenizer.eos_token_id in ids else ids
        answer = extract_final_answer(tokenizer.decode(ids, skip_special_tokens=True))
        (right if answer == float(row["answer"]) else wrong).append(len(ids))
    lengths = right + wrong
    return {"sampled_accuracy": len(right) / len(lengths), "mean_length": sum(lengths) / len(lengths),
            "right_mean_length": sum(right) / max(len(right), 1), "wrong_mean_length": sum(wrong) / max(len(wrong), 1)}


def main(argv=None) -> None:
    args = parse_args(argv)
    started = time.time()
    torch.set_num_threads(args.threads)
    torch.use_deterministic_algorithms(True)
    tokenizer = base.build_tokenizer()
    model = base.build_model(tokenizer, args.seed, args.layers)
    params = sum(p.numel() for p in model.parameters())
    print(f"vocab {len(tokenizer)}  parameters {params:,}", flush=True)
    base.train(model, tokenizer, args, base.bucketed_batches(example, tokenizer, args,
                                                             random.Random(f"sft-missing-term-{args.seed}"), bucket_batches=1))
    base.save(model, tokenizer, args.out)
    base.write_data(args.data_out, args.train_rows, args.test_rows, args.seed, missing_term.make_rows)
    test = [json.loads(line) for line in (args.data_out / "test.jsonl").read_text().splitlines()]
    print("reloaded greedy sample:", repr(base.check_saved(args.out, test[0]["question"])))
    for name, value in calibration(model, tokenizer, test).items():
        print(f"{name:20s} {value:.4f}")
    print(f"model folder {base.folder_size(args.out) / 1e6:.2f} MB  parameters {params:,}")
    print(f"runtime {time.time() - started:.0f} s")


if __name__ == "__main__":
    main()
