"""Build the shipped tiny model `grpo_cli/assets/tiny-arith/` and the arithmetic data set.

The tiny model lets the CLI, its tests and its tutorials run real GRPO on a CPU in minutes.
It is a ~0.9M-parameter Llama with a character-level tokenizer, trained from scratch by
supervised learning on worked solutions of `grpo_cli.tasks.arithmetic` problems whose
steps are deliberately wrong with probability `--error-rate`. The model therefore knows
the procedure (greedy decoding is almost always right) but samples mistakes at a
calibrated rate (temperature-1 accuracy well below greedy), which is the gap RL closes.

Everything is deterministic: fixed seeds, fixed thread count and deterministic kernels,
so two runs with the same options write byte-identical weights.

    python scripts/make_tiny_model.py            # full build, a few minutes on 2 cores
    python scripts/make_tiny_model.py --steps 100 --out /tmp/tiny --data-out /tmp/data
"""

from __future__ import annotations

import argparse
import json
import math
import random
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import torch
from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

REPO = Path(__file__).resolve().parent.parent
ASSETS = REPO / "grpo_cli" / "assets"
sys.path.insert(0, str(REPO))

from grpo_cli.rewards.builtin import extract_final_answer, parse_number, same_number  # noqa: E402
from grpo_cli.tasks import arithmetic  # noqa: E402

PAD, BOS, EOS, UNK = "<pad>", "<s>", "</s>", "<unk>"
ROLE_TOKENS = {"system": "<|system|>", "user": "<|user|>", "assistant": "<|assistant|>"}
CHARS = "0123456789+-=*/,:.;!?()'\" \nabcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
# Rendered prompt: <s><|system|>...\n<|user|>3+5+2+7\n<|assistant|>
# Assistant turn:  <|assistant|>3+5=8\n...\nAnswer: 17</s>
CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "{% if message['role'] == 'assistant' %}"
    "<|assistant|>{{ message['content'] }}{{ eos_token }}"
    "{% elif message['role'] in ['system', 'user'] %}"
    "<|{{ message['role'] }}|>{{ message['content'] }}\n"
    "{% else %}"
    "{{ raise_exception('unsupported role: ' + message['role']) }}"
    "{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)
SYSTEM_PROMPTS = ("Add the numbers.", "Add step by step.")
SYSTEM_RATE = 0.1  # a few system prompts in SFT so an optional system message is not alien
MAX_NEW_TOKENS = 64
BUCKET_BATCHES = 8


def parse_args(argv: list[str] | None = None, **defaults) -> argparse.Namespace:
    """The options; `defaults` replaces some defaults (make_tiny_tools_model.py builds another model)."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, default=ASSETS / "tiny-arith", help="model folder to write")
    parser.add_argument(
        "--data-out", type=Path, default=ASSETS / "arithmetic", help="folder for train.jsonl and test.jsonl"
    )
    parser.add_argument("--train-rows", type=int, default=4000, help="rows in train.jsonl")
    parser.add_argument(
        "--test-rows", type=int, default=200, help="rows in test.jsonl (also the evaluation prompts)"
    )
    parser.add_argument(
        "--seed", type=int, default=0, help="seed for init, SFT data, data files and evaluation"
    )
    parser.add_argument("--steps", type=int, default=1200, help="SFT optimizer steps")
    parser.add_argument("--batch-size", type=int, default=64, help="SFT sequences per step")
    parser.add_argument("--layers", type=int, default=4, help="transformer layers")
    parser.add_argument("--lr", type=float, default=3e-3, help="peak AdamW learning rate (cosine decay)")
    parser.add_argument(
        "--error-rate", type=float, default=0.3, help="probability that an SFT solution step is wrong"
    )
    parser.add_argument(
        "--verbose-rate", type=float, default=0.5, help="probability of extra, harmless working"
    )
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads (fixed for determinism)")
    parser.add_argument(
        "--eval-samples", type=int, default=4, help="samples per test prompt at temperature 1"
    )
    parser.add_argument("--no-eval", action="store_true", help="skip the calibration measurement")
    parser.set_defaults(**defaults)
    return parser.parse_args(argv)


def build_tokenizer(chars: str = CHARS, roles: tuple[str, ...] = tuple(ROLE_TOKENS.values())) -> PreTrainedTokenizerFast:
    """One token per character plus the special tokens; a character model keeps every
    digit of a partial sum its own decision, which is where the calibrated noise lives."""
    specials = [PAD, BOS, EOS, UNK, *roles]
    vocab = {token: index for index, token in enumerate(specials + list(chars))}
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token=UNK))
    core.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")
    core.decoder = decoders.Fuse()
    core.add_special_tokens(specials)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=core,
        bos_token=BOS,
        eos_token=EOS,
        pad_token=PAD,
        unk_token=UNK,
        additional_special_tokens=list(roles),
        padding_side="left",
        model_max_length=256,
        model_input_names=["input_ids", "attention_mask"],
    )
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


def build_model(tokenizer: PreTrainedTokenizerFast, seed: int, layers: int = 4) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=128,
        intermediate_size=384,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=4,
        max_position_embeddings=256,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    return LlamaForCausalLM(config)


def render_prompt(tokenizer: PreTrainedTokenizerFast, question: str, system: str | None = None) -> str:
    messages = [{"role": "system", "content": system}] if system else []
    messages.append({"role": "user", "content": question})
    return tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)


def labelled(tokenizer, prompt: str, completion: str) -> tuple[list[int], list[int]]:
    """Token ids and labels of a rendered prompt and its completion; the loss covers only the
    completion (solution and EOS), never the prompt."""
    prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    completion_ids = tokenizer(completion, add_special_tokens=False)["input_ids"]
    return prompt_ids + completion_ids, [-100] * len(prompt_ids) + completion_ids


def sft_example(tokenizer, rng: random.Random, args: argparse.Namespace) -> tuple[list[int], list[int]]:
    """One chat-formatted worked solution of an arithmetic problem."""
    terms = arithmetic.sample_split_terms(rng, "train")
    system = rng.choice(SYSTEM_PROMPTS) if rng.random() < SYSTEM_RATE else None
    prompt = render_prompt(tokenizer, arithmetic.format_question(terms), system)
    completion = arithmetic.solution_text(terms, rng, args.error_rate, args.verbose_rate) + EOS
    return labelled(tokenizer, prompt, completion)


def bucketed_batches(make_example, tokenizer, args: argparse.Namespace, rng: random.Random,
                     bucket_batches: int = BUCKET_BATCHES) -> Iterator[dict[str, torch.Tensor]]:
    """Endless right-padded batches of fresh `make_example(tokenizer, rng, args)` examples (the
    problem spaces are large, so no epochs). Examples are drawn `BUCKET_BATCHES` batches at a
    time and grouped by length, which nearly halves the padding a 2-core CPU would otherwise
    spend its time on; `bucket_batches=1` keeps each batch a random mix of lengths."""
    while True:
        pool = [make_example(tokenizer, rng, args) for _ in range(args.batch_size * bucket_batches)]
        pool.sort(key=lambda example: len(example[0]))
        chunks = [pool[i : i + args.batch_size] for i in range(0, len(pool), args.batch_size)]
        rng.shuffle(chunks)
        yield from (collate(chunk, tokenizer.pad_token_id) for chunk in chunks)


def sft_batches(tokenizer, args: argparse.Namespace) -> Iterator[dict[str, torch.Tensor]]:
    """This model's SFT mix: worked arithmetic solutions."""
    return bucketed_batches(sft_example, tokenizer, args, random.Random(f"sft-{args.seed}"))


def collate(examples: list[tuple[list[int], list[int]]], pad_id: int) -> dict[str, torch.Tensor]:
    width = max(len(ids) for ids, _ in examples)
    input_ids = torch.full((len(examples), width), pad_id)
    labels = torch.full((len(examples), width), -100)
    attention_mask = torch.zeros((len(examples), width), dtype=torch.long)
    for row, (ids, targets) in enumerate(examples):
        input_ids[row, : len(ids)] = torch.tensor(ids)
        labels[row, : len(ids)] = torch.tensor(targets)
        attention_mask[row, : len(ids)] = 1
    return {"input_ids": input_ids, "labels": labels, "attention_mask": attention_mask}


def learning_rate(step: int, args: argparse.Namespace) -> float:
    """Linear warm-up then cosine decay to a tenth of the peak."""
    warmup = max(1, args.steps // 20)
    if step < warmup:
        return args.lr * (step + 1) / warmup
    progress = (step - warmup) / max(1, args.steps - warmup)
    return args.lr * (0.1 + 0.45 * (1 + math.cos(math.pi * progress)))


def train(model: LlamaForCausalLM, tokenizer, args: argparse.Namespace, batches=None) -> None:
    """AdamW on `batches` (default: this model's SFT mix) for args.steps steps."""
    batches = batches or sft_batches(tokenizer, args)
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.01, betas=(0.9, 0.98))
    model.train()
    window: list[float] = []
    started = time.time()
    for step in range(args.steps):
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(step, args)
        loss = model(**next(batches)).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        window.append(loss.item())
        if (step + 1) % 100 == 0 or step + 1 == args.steps:
            mean_loss = sum(window) / len(window)
            print(f"step {step + 1:5d}  loss {mean_loss:.4f}  {time.time() - started:5.0f} s", flush=True)
            window = []
    model.eval()


@torch.no_grad()
def generate(model, tokenizer, prompts: list[str], do_sample: bool) -> list[list[int]]:
    """Completion token ids (up to and including the first EOS) for left-padded prompts."""
    batch = tokenizer(prompts, add_special_tokens=False, padding=True, return_tensors="pt")
    # top_k=0 and top_p=1 sample from the full distribution, as the RL sampler does.
    sampling = {"temperature": 1.0, "top_p": 1.0, "top_k": 0} if do_sample else {}
    output = model.generate(
        **batch,
        max_new_tokens=MAX_NEW_TOKENS,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        do_sample=do_sample,
        **sampling,
    )
    completions = []
    for row in output[:, batch["input_ids"].shape[1] :].tolist():
        end = row.index(tokenizer.eos_token_id) + 1 if tokenizer.eos_token_id in row else len(row)
        completions.append(row[:end])
    return completions


def evaluate(model, tokenizer, rows: list[dict], samples: int, seed: int) -> dict[str, float]:
    """The calibration numbers the RL tutorials rely on: greedy accuracy, sampled accuracy
    at temperature 1 (`samples` per prompt), how often completions end cleanly, and the
    completion length with its spread inside each prompt's group."""
    prompts = [render_prompt(tokenizer, row["question"]) for row in rows]
    greedy = generate(model, tokenizer, prompts, do_sample=False)
    torch.manual_seed(seed)
    sampled = []
    for start in range(0, len(prompts), 50):
        group_prompts = [p for p in prompts[start : start + 50] for _ in range(samples)]
        sampled += generate(model, tokenizer, group_prompts, do_sample=True)
    answers = [row["answer"] for row in rows for _ in range(samples)]
    texts = tokenizer.batch_decode(sampled, skip_special_tokens=True)
    lengths = torch.tensor([len(ids) for ids in sampled], dtype=torch.float)
    clean = [
        ids[-1] == tokenizer.eos_token_id and _ends_with_answer(text)
        for ids, text in zip(sampled, texts, strict=True)
    ]
    greedy_texts = tokenizer.batch_decode(greedy, skip_special_tokens=True)
    return {
        "greedy_accuracy": _accuracy(greedy_texts, [row["answer"] for row in rows]),
        "sampled_accuracy": _accuracy(texts, answers),
        "clean_ending_rate": sum(clean) / len(clean),
        "mean_length": lengths.mean().item(),
        "within_group_length_std": lengths.view(-1, samples).std(dim=1, unbiased=False).mean().item(),
        **_accuracy_by_terms(rows, texts, answers, samples),
    }


def is_correct(text: str, answer: str) -> bool:
    """Whether a completion's final answer equals `answer`, exactly as the reward scores it."""
    return same_number(extract_final_answer(text), parse_number(answer))


def _accuracy(texts: list[str], answers: list[str]) -> float:
    return sum(is_correct(t, a) for t, a in zip(texts, answers, strict=True)) / len(texts)


def _ends_with_answer(text: str) -> bool:
    last = text.rstrip("\n").split("\n")[-1]
    return last.startswith("Answer: ") and extract_final_answer(last) is not None


def _accuracy_by_terms(rows, texts, answers, samples) -> dict[str, float]:
    by_terms: dict[int, list[bool]] = {}
    for index, (text, answer) in enumerate(zip(texts, answers, strict=True)):
        terms = len(arithmetic.parse_question(rows[index // samples]["question"]))
        by_terms.setdefault(terms, []).append(is_correct(text, answer))
    return {f"sampled_accuracy_{k}_terms": sum(v) / len(v) for k, v in sorted(by_terms.items())}


def save(model, tokenizer, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    tokenizer.save_pretrained(out)
    model.generation_config = GenerationConfig(
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        max_new_tokens=MAX_NEW_TOKENS,
    )
    model.save_pretrained(out)
    _make_tokenizer_config_portable(out / "tokenizer_config.json")
    for path in out.iterdir():
        path.chmod(0o644)  # the weights are written owner-only; a wheel would keep that


def _make_tokenizer_config_portable(path: Path) -> None:
    """transformers 5 records its own backend class and a list of extra special tokens,
    which transformers 4.x (still allowed by pyproject) cannot load; the 4.x spelling
    loads in both. Llama takes no token_type_ids, which 4.x would otherwise return."""
    config = json.loads(path.read_text(encoding="utf-8"))
    config["tokenizer_class"] = "PreTrainedTokenizerFast"
    config["model_input_names"] = ["input_ids", "attention_mask"]  # 4.x adds token_type_ids
    if isinstance(config.get("extra_special_tokens"), list):
        config["additional_special_tokens"] = config.pop("extra_special_tokens")
    path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def write_data(out: Path, train_rows: int, test_rows: int, seed: int, make_rows=arithmetic.make_rows) -> None:
    """train.jsonl and test.jsonl in `out` from a task's make_rows(split, n, seed)."""
    out.mkdir(parents=True, exist_ok=True)
    for split, n in (("train", train_rows), ("test", test_rows)):
        with open(out / f"{split}.jsonl", "w", encoding="utf-8") as handle:
            handle.writelines(json.dumps(row) + "\n" for row in make_rows(split, n, seed))


def check_saved(out: Path, question: str) -> str:
    """Reload the folder through the Auto classes, as the CLI will, and check that greedy
    generation of a test question stops at EOS."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(out)
    model = AutoModelForCausalLM.from_pretrained(out).eval()
    if (tokenizer.pad_token, tokenizer.bos_token, tokenizer.eos_token) != (PAD, BOS, EOS):
        raise RuntimeError(f"special tokens did not survive the round trip through {out}")
    completion = generate(model, tokenizer, [render_prompt(tokenizer, question)], do_sample=False)[0]
    if completion[-1] != tokenizer.eos_token_id:
        raise RuntimeError(f"greedy completion did not stop at {EOS}: {tokenizer.decode(completion)!r}")
    return tokenizer.decode(completion)


def folder_size(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    started = time.time()
    torch.set_num_threads(args.threads)
    torch.use_deterministic_algorithms(True)
    tokenizer = build_tokenizer()
    model = build_model(tokenizer, args.seed, args.layers)
    params = sum(p.numel() for p in model.parameters())
    print(f"vocab {len(tokenizer)}  parameters {params:,}", flush=True)
    train(model, tokenizer, args)
    save(model, tokenizer, args.out)
    write_data(args.data_out, args.train_rows, args.test_rows, args.seed)
    test_lines = (args.data_out / "test.jsonl").read_text(encoding="utf-8").splitlines()
    test_rows = [json.loads(line) for line in test_lines]
    print("reloaded greedy sample:", repr(check_saved(args.out, test_rows[0]["question"])))
    if not args.no_eval:
        evaluated = time.time()
        for name, value in evaluate(model, tokenizer, test_rows, args.eval_samples, args.seed).items():
            print(f"{name:28s} {value:.4f}")
        print(f"evaluation took {time.time() - evaluated:.0f} s")
    print(f"model folder {folder_size(args.out) / 1e6:.2f} MB  parameters {params:,}")
    print(f"runtime {time.time() - started:.0f} s")


if __name__ == "__main__":
    main()
