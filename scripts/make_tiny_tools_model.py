"""Build the shipped tiny tools model `grpo_cli/assets/tiny-tools/` and the long-sums data set.

tiny-arith's character Llama (make_tiny_model.py, whose training loop it reuses) with six layers
instead of four (1.3M parameters: copying the first number of a question into a call needs the
depth), and a chat template that offers tools, renders tool calls Hermes
style (`<tool_call>{"name": ..., "arguments": ...}</tool_call>`) and tool results as a `tool`
turn, and a `response_template` that lets transformers' `parse_response` read the calls back.
It is supervised on a mix that makes issue 16's multi-turn demonstrations visible on a CPU:

* the embedded arithmetic task, worked step by step with calibrated slips (as tiny-arith);
* text feedback: a wrong attempt, the critique ``Not right. Try again: <question>`` and a second
  attempt (loss on the second only), so a retry is a turn the model has seen;
* long sums (grpo_cli.tasks.long_sums) with the `add` tool offered: a call some of the time
  (some miscopied, some malformed), the tool's result, then ``Answer: <result>``; otherwise a
  bare answer from its head, which the model mostly gets wrong;
* long sums with no tools offered: a bare answer.

    python scripts/make_tiny_tools_model.py           # full build, about twenty minutes on 2 cores
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path

import torch
from tokenizers import AddedToken

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "scripts"))
sys.path.insert(0, str(REPO))

import make_tiny_model as base  # noqa: E402
from grpo_cli.environments.tools import add  # noqa: E402
from grpo_cli.tasks import arithmetic, long_sums  # noqa: E402

CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% if tools %}<|system|>tools: {{ tools | map(attribute='function') | map(attribute='name') | join(', ') }}\n"
    "{% endif %}"
    "{% for message in messages %}"
    "{% if message['role'] == 'assistant' %}"
    "<|assistant|>{{ message['content'] }}"
    "{% for call in message.get('tool_calls') or [] %}{% set call = call.function or call %}"
    "<tool_call>{\"name\": \"{{ call.name }}\", \"arguments\": {{ call.arguments | tojson }}}</tool_call>"
    "{% endfor %}{{ eos_token }}"
    "{% elif message['role'] in ['system', 'user', 'tool'] %}"
    "<|{{ message['role'] }}|>{{ message['content'] }}\n"
    "{% else %}"
    "{{ raise_exception('unsupported role: ' + message['role']) }}"
    "{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)
RESPONSE_TEMPLATE = {
    "defaults": {"role": "assistant"},
    "start_anchor": "<|assistant|>",
    "fields": {
        "tool_calls": {"open": "<tool_call>", "close": "</tool_call>", "repeats": True, "content": "json",
                       "transform": {"type": "function", "function": "{content}"}},
        "content": {"content": "text"},
    },
}
CRITIQUE = "Not right. Try again: {question}"
TOOLS = [{"type": "function", "function": {"name": "add"}}]  # all the template reads of a schema
# Shares of the SFT mix, and how the long sums are answered.
MIX = {"arithmetic": 0.3, "feedback": 0.15, "tools": 0.45, "no_tools": 0.1}
CALL_RATE, MISCOPY_RATE, MALFORMED_RATE = 0.5, 0.15, 0.1


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    return base.parse_args(argv, out=base.ASSETS / "tiny-tools", data_out=base.ASSETS / "long_sums", steps=2500,
                           layers=6)


def build_tokenizer():
    """tiny-arith's characters plus JSON's brackets, a tool role and the call markers (plain
    added tokens, so a decoded completion keeps them for the parser)."""
    tokenizer = base.build_tokenizer(base.CHARS + "[]{}_<>|", (*base.ROLE_TOKENS.values(), "<|tool|>"))
    tokenizer.add_tokens([AddedToken("<tool_call>", special=False), AddedToken("</tool_call>", special=False)])
    tokenizer.chat_template = CHAT_TEMPLATE
    tokenizer.response_template = RESPONSE_TEMPLATE
    return tokenizer


def encode(tokenizer, messages: list[dict], trained: list[bool], tools: list[dict] | None):
    """Ids and labels of a conversation, loss on the assistant turns flagged in `trained`: each
    message's tokens are what the chat template adds for it, as the episode runner builds them."""
    ids, labels, done = [], [], ""
    for k, message in enumerate(messages):
        assistant = message["role"] == "assistant"
        text = tokenizer.apply_chat_template(messages[: k + 1], tools=tools, tokenize=False,
                                             add_generation_prompt=not assistant and k + 1 < len(messages))
        piece = tokenizer(text[len(done):], add_special_tokens=False)["input_ids"]
        ids += piece
        labels += piece if assistant and trained[k] else [-100] * len(piece)
        done = text
    return ids, labels


def example(tokenizer, rng: random.Random, args) -> tuple[list[int], list[int]]:
    kind = rng.choices(list(MIX), weights=list(MIX.values()))[0]
    if kind == "arithmetic":
        return base.sft_example(tokenizer, rng, args)
    if kind == "feedback":
        return feedback_example(tokenizer, rng, args)
    terms = long_sums.sample_terms(rng, "train")
    question = {"role": "user", "content": arithmetic.format_question(terms)}
    bare = {"role": "assistant", "content": f"Answer: {sum(terms)}"}
    if kind == "no_tools" or rng.random() >= CALL_RATE:
        return encode(tokenizer, [question, bare], [False, True], TOOLS if kind == "tools" else None)
    return encode(tokenizer, *tool_episode(question, terms, rng), TOOLS)


def tool_episode(question: dict, terms: list[int], rng: random.Random) -> tuple[list[dict], list[bool]]:
    """A call (maybe miscopied or malformed), the tool's answer, and the answer copied from it."""
    draw = rng.random()
    called = long_sums.miscopy(terms, rng) if draw < MISCOPY_RATE else terms
    call = {"role": "assistant", "content": "",
            "tool_calls": [{"type": "function", "function": {"name": "add", "arguments": {"terms": called}}}]}
    if draw > 1 - MALFORMED_RATE:  # a broken bracket: the parser refuses it and the episode fails
        text = json.dumps({"name": "add", "arguments": {"terms": called}}).replace("]", "", 1)
        return [question, {"role": "assistant", "content": f"<tool_call>{text}</tool_call>"}], [False, True]
    result = {"role": "tool", "content": json.dumps(add(called))}
    answer = {"role": "assistant", "content": f"Answer: {add(called)}"}
    return [question, call, result, answer], [False, True, False, True]


def feedback_example(tokenizer, rng: random.Random, args) -> tuple[list[int], list[int]]:
    """A wrong first attempt (no loss), the critique, and a fresh attempt (loss)."""
    terms = arithmetic.sample_split_terms(rng, "train")
    while len(terms) < 3:
        terms = arithmetic.sample_split_terms(rng, "train")
    question = arithmetic.format_question(terms)
    wrong = arithmetic.solution_text(terms, rng, error_rate=1.0)
    while base.is_correct(wrong, str(sum(terms))):  # two slips can cancel out
        wrong = arithmetic.solution_text(terms, rng, error_rate=1.0)
    retry = arithmetic.solution_text(terms, rng, args.error_rate, args.verbose_rate)
    messages = [{"role": "user", "content": question}, {"role": "assistant", "content": wrong},
                {"role": "user", "content": CRITIQUE.format(question=question)}, {"role": "assistant", "content": retry}]
    return encode(tokenizer, messages, [False, False, False, True], None)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    started = time.time()
    torch.set_num_threads(args.threads)
    torch.use_deterministic_algorithms(True)
    tokenizer = build_tokenizer()
    model = base.build_model(tokenizer, args.seed, args.layers)
    params = sum(p.numel() for p in model.parameters())
    print(f"vocab {len(tokenizer)}  parameters {params:,}", flush=True)
    base.train(model, tokenizer, args, base.bucketed_batches(example, tokenizer, args, random.Random(f"sft-tools-{args.seed}")))
    base.save(model, tokenizer, args.out)
    base.write_data(args.data_out, args.train_rows, args.test_rows, args.seed, long_sums.make_rows)
    print("reloaded greedy sample:", repr(base.check_saved(args.out, "3+5+2")))
    print(f"model folder {base.folder_size(args.out) / 1e6:.2f} MB  parameters {params:,}")
    print(f"runtime {time.time() - started:.0f} s")


if __name__ == "__main__":
    main()
