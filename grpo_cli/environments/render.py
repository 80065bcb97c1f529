"""Environment turns as token ids, appended after the model's own sampled ids.

The model's tokens are never decoded and re-encoded into the trained sequence. An
environment's turn is the text the chat template adds when the turn is appended (rendered with
and without it, the difference), tokenized on its own: the same tokens a chat with that
history would feed the model next, ending with the generation prompt of the model's next turn.
That needs a template under which appending a turn leaves the earlier text as it was;
`check_appendable` refuses, at start-up, one that rewrites earlier turns (templates that drop
earlier reasoning, for example). What a template writes after the end-of-turn token the model
stopped on (Qwen's newline after `<|im_end|>`) belongs to the environment's turn: the model
never drew it, and a chat would feed it.
"""

from __future__ import annotations

from grpo_cli.errors import UserError

PROBE = [{"role": "user", "content": "1+1"}, {"role": "assistant", "content": "Answer: 3"},
         {"role": "user", "content": "Not quite. Try again."}]


def turn_ids(tokenizer, history: list[dict], turn: list[dict], tools: list[dict] | None = None) -> list[int]:
    """Token ids the template adds for `turn` after `history` (the model's turn last), up to
    and including the next assistant turn's generation prompt."""
    before = tokenizer.apply_chat_template(history, tools=tools or None, tokenize=False)
    after = tokenizer.apply_chat_template(history + turn, tools=tools or None, tokenize=False,
                                          add_generation_prompt=True)
    if not after.startswith(before):
        raise UserError(_REWRITES)
    return tokenizer(_after_stop(tokenizer, before) + after[len(before):], add_special_tokens=False)["input_ids"]


def _after_stop(tokenizer, rendered: str) -> str:
    """The whitespace the template writes after the model's end-of-turn token ("" for most)."""
    stop = tokenizer.eos_token
    tail = rendered[rendered.rfind(stop) + len(stop):] if stop and stop in rendered else ""
    return tail if tail.isspace() else ""


def check_appendable(tokenizer) -> None:
    """Appending a turn keeps the earlier text: found on a probe conversation before training."""
    if not getattr(tokenizer, "chat_template", None):
        raise UserError("multi-turn episodes need the tokenizer's chat template; this tokenizer has none")
    try:
        turn_ids(tokenizer, PROBE[:2], PROBE[2:])
    except UserError:
        raise
    except Exception as error:  # a template raises for roles it does not know, in its own words
        raise UserError(f"the chat template cannot render an environment turn: {error}; give the environment's "
                        f"messages a role the template knows (user, or tool where it supports tools)") from error


_REWRITES = ("the chat template rewrites earlier turns when a turn is appended, so the model's own tokens "
             "cannot be kept; use a template that only appends (or a model whose template does)")
