"""Build the shipped tiny model `grpo_cli/assets/tiny-verbose/` and the missing-term data set.

tiny-arith's character Llama and training loop (make_tiny_model.py), supervised on worked
solutions of grpo_cli.tasks.missing_term: try a value at random, add it up, say whether the
total matches, check again (`--check-rate`, independent of the verdict), answer. The model is
right about one time in nine, knows by its verdict line when it is wrong, and can pad with
`Check:` lines: the setting where GRPO lengthens answers (+recipe=embedded_verbose).

    python scripts/make_tiny_verbose_model.py      # full build, about five minutes on 2 cores

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

ASSETS = REPO / "grpo_cli" / "assets"
MAX_NEW_TOKENS = 128


def parse_args(argv=None):
    parser = base.argparse.ArgumentParser(description=__doc__,
                                          formatter_class=base.argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=ASSETS / "tiny-verbose", help="model folder to write")
    parser.add_argument("--data-out", type=Path, default=ASSETS / "missing_term", help="folder for the jsonl files")
    parser.add_argument("--train-rows", type=int, default=731, help="rows in train.jsonl (every train problem)")
    parser.add_argument("--test-rows", type=int, default=79, help="rows in test.jsonl (every held-out problem)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--steps", type=int, default=1200, help="SFT optimizer steps")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--check-rate", type=float, default=0.5, help="probability of each further Check: line")
    parser.add_argument("--threads", type=int, default=2)
    return parser.parse_args(argv)


def example(tokenizer, rng: random.Random, args) -> tuple[list[int], list[int]]:
    """Token ids and labels of one solution; the loss covers the assistant turn only."""
    missing, known = missing_term.sample_split_problem(rng, "train")
    question = missing_term.format_question(missing, known)
    prompt = base.render_prompt(tokenizer, question)
    completion = missing_term.solution_text(question, rng, args.check_rate) + base.EOS
    prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    completion_ids = tokenizer(completion, add_special_tokens=False)["input_ids"]
    return prompt_ids + completion_ids, [-100] * len(prompt_ids) + completion_ids


def batches(tokenizer, args):
    """Endless length-bucketed batches (as make_tiny_model.sft_batches)."""
    rng = random.Random(f"sft-missing-term-{args.seed}")
    while True:
        pool = sorted((example(tokenizer, rng, args) for _ in range(args.batch_size * base.BUCKET_BATCHES)),
                      key=lambda pair: len(pair[0]))
        chunks = [pool[i: i + args.batch_size] for i in range(0, len(pool), args.batch_size)]
        rng.shuffle(chunks)
        yield from (base.collate(chunk, tokenizer.pad_token_id) for chunk in chunks)


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
    base.train(model, tokenizer, args, batches(tokenizer, args))
    base.save(model, tokenizer, args.out)
    args.data_out.mkdir(parents=True, exist_ok=True)
    for split, n in (("train", args.train_rows), ("test", args.test_rows)):
        with open(args.data_out / f"{split}.jsonl", "w", encoding="utf-8") as handle:
            handle.writelines(json.dumps(row) + "\n" for row in missing_term.make_rows(split, n, args.seed))
    test = [json.loads(line) for line in (args.data_out / "test.jsonl").read_text().splitlines()]
    print("reloaded greedy sample:", repr(base.check_saved(args.out, test[0]["question"])))
    for name, value in calibration(model, tokenizer, test).items():
        print(f"{name:20s} {value:.4f}")
    print(f"model folder {base.folder_size(args.out) / 1e6:.2f} MB  parameters {params:,}")
    print(f"runtime {time.time() - started:.0f} s")


if __name__ == "__main__":
    main()
