"""Prompt data sets: local files or hub ids, a prompt template, the chat template.

A local .jsonl file is read line by line (so errors name the line); .json, .parquet and .csv
go through `datasets`' file builders; anything else is taken as a hub id for
`datasets.load_dataset` (with `subset` as its configuration). Each row's user message is the
`template` with `{column}` fields filled from the row, or, when the `prompt_key` column holds
a chat message list (DAPO-Math-17k), those messages; with `chat_template` it is wrapped in the
tokenizer's chat template (and the optional system prompt). The reference answer is read from
`answer_key` (dotted for nested fields), optionally cut out by `answer_pattern`, and handed to
the rewards as the `answer` column. Prompts longer than `max_prompt_tokens` are dropped and
counted, and so are repeated prompts with `dedupe`. Preference pairs (`load_pairs`) render
their prompt the same way and add the chosen and rejected responses and a group. The order of prompts for step s is a function of
(seed, s) alone, so a resumed run sees the same prompts as an uninterrupted one.
"""

from __future__ import annotations

import json
import os
import re
import string
from dataclasses import dataclass, field

import datasets
import jinja2
import torch

from grpo_cli.config import DataConfig
from grpo_cli.errors import UserError, one_line
from grpo_cli.types import PromptBatch

FILE_BUILDERS = {".jsonl": "json", ".json": "json", ".parquet": "parquet", ".csv": "csv"}


def read_jsonl(path: str) -> list[dict]:
    """JSON lines read directly, so a malformed line is reported by its number. UTF-8, with or
    without a byte-order mark."""
    rows = []
    with open(path, "rb") as handle:
        for number, raw in enumerate(handle, start=1):
            try:
                line = raw.decode("utf-8-sig" if number == 1 else "utf-8")
            except UnicodeDecodeError as error:
                raise UserError(f"{path}: line {number} is not UTF-8 (byte 0x{raw[error.start]:02x} at column "
                                f"{error.start + 1}); convert the file, e.g. iconv -f latin1 -t utf-8") from error
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as error:
                raise UserError(f"{path}: line {number} is not valid JSON ({error.msg}); fix or remove it") from error
            if not isinstance(row, dict):
                raise UserError(f"{path}: line {number} is not a JSON object")
            rows.append(row)
    return rows


def load_rows(path: str, split: str, subset: str | None = None) -> list[dict]:
    """Every row of a local file or a hub data set split, as dicts."""

    extension = os.path.splitext(path)[1].lower()
    if extension in FILE_BUILDERS and not os.path.isfile(path):
        raise UserError(f"data file {path} does not exist; check data.path / data.eval_path")
    if extension == ".jsonl":
        rows = read_jsonl(path)
    elif extension in FILE_BUILDERS:
        try:
            rows = datasets.load_dataset(FILE_BUILDERS[extension], data_files={"rows": path}, split="rows").to_list()
        except Exception as error:  # datasets wraps parser errors in several types
            raise UserError(f"cannot read data file {path}: {one_line(error)}") from error
    else:
        try:
            rows = datasets.load_dataset(path, subset, split=split).to_list()
        except Exception as error:  # hub, network and builder errors
            raise UserError(f"cannot load data set {path!r} split {split!r}: {one_line(error)} "
                            f"(a local file needs one of {', '.join(FILE_BUILDERS)})") from error
    if not rows:
        raise UserError(f"data {path} has no rows; point data.path (or data.eval_path) at a file with prompts")
    return rows


def template_fields(template: str) -> list[str]:
    return [name for _, name, _, _ in string.Formatter().parse(template) if name]


def template_problem(template: str) -> str | None:
    """What str.format would fail on in any row: unbalanced braces, `{}`, an unknown `!x`."""
    try:
        parts = list(string.Formatter().parse(template))
    except ValueError as error:
        return str(error)
    if any(name == "" for _, name, _, _ in parts):
        return "an empty {} names no column"
    bad = next((conversion for _, _, _, conversion in parts if conversion not in (None, "r", "s", "a")), None)
    return None if bad is None else f"unknown conversion !{bad}"


def lookup(row: dict, key: str):
    """row[key], following dots into nested objects; None when any part is missing."""
    value = row
    for part in key.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    return value


def is_messages(value) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(m, dict) and "content" in m for m in value)


ROLES = ("system", "user", "assistant", "tool")


def check_roles(messages: list[dict], where: str) -> None:
    """Chat messages a chat template can render: each with a known role."""
    for i, message in enumerate(messages):
        if message.get("role") not in ROLES:
            raise UserError(f"{where}: message {i} has role {message.get('role')!r}; give each message a role "
                            f"among {', '.join(ROLES)}")


def absent(row: dict, key: str) -> str:
    """Why row[key] (dotted) gave nothing: a null value, or no such column."""
    parent, _, leaf = key.rpartition(".")
    holder = lookup(row, parent) if parent else row
    if isinstance(holder, dict) and leaf in holder:
        return f"has {key!r}: null"
    return f"has no column {key!r} (columns: {', '.join(row)})"


def with_reference(row: dict, data_cfg: DataConfig, where: str) -> dict:
    """The row plus its reference under `answer` (the original, if replaced, as `answer_raw`)."""
    value = lookup(row, data_cfg.answer_key)
    if value is None:
        raise UserError(f"{where} {absent(row, data_cfg.answer_key)}; fix data.answer_key or the file")
    if data_cfg.answer_pattern:
        found = re.findall(data_cfg.answer_pattern, str(value))
        if not found:
            raise UserError(f"{where}: answer {str(value)[-60:]!r} has no match for data.answer_pattern="
                            f"{data_cfg.answer_pattern!r}; fix the pattern or the row")
        value = found[-1].strip()
    out = dict(row)
    if "answer" in row and row["answer"] != value:
        out["answer_raw"] = row["answer"]
    out["answer"] = value
    return out


class PromptRenderer:
    """Row -> prompt text -> token ids, as configured by the `data` group."""

    def __init__(self, data_cfg: DataConfig, tokenizer, tools: list[dict] | None = None):
        self.cfg = data_cfg
        self.tokenizer = tokenizer
        self.tools = tools or None  # JSON schemas the chat template offers the model
        if data_cfg.chat_template and not getattr(tokenizer, "chat_template", None):
            raise UserError("the tokenizer has no chat template; set data.chat_template=false")

    def messages(self, row: dict) -> list[dict]:
        given = lookup(row, self.cfg.prompt_key)
        return list(given) if is_messages(given) else [{"role": "user", "content": self.cfg.template.format_map(row)}]

    def text(self, messages: list[dict], where: str = "a prompt") -> str:
        """The prompt as the model reads it; `where` names the row for the error when the model's
        chat template refuses the messages (a role it does not know, say)."""
        messages = list(messages)
        if not self.cfg.chat_template:
            return "\n\n".join(m["content"] for m in messages)
        if self.cfg.system_prompt and messages[0].get("role") != "system":
            messages.insert(0, {"role": "system", "content": self.cfg.system_prompt})
        try:
            return self.tokenizer.apply_chat_template(messages, tools=self.tools, add_generation_prompt=True,
                                                      tokenize=False)
        except jinja2.TemplateError as error:
            raise UserError(f"{where}: the model's chat template refuses these messages ({one_line(error)}); "
                            f"change the row's messages or set data.chat_template=false") from error

    def ids(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=not self.cfg.chat_template)["input_ids"]


@dataclass
class PromptSet:
    """Rendered prompts of one split, in file order."""

    prompt_ids: list[list[int]]
    prompts: list[str]
    examples: list[dict]
    dropped_too_long: int
    dropped_duplicates: int = 0
    messages: list[list[dict]] = field(default_factory=list)
    longest_dropped: int = 0  # tokens of the longest prompt dropped as too long
    _index: dict | None = field(default=None, init=False, repr=False, compare=False)  # prompt ids -> row

    def __len__(self) -> int:
        return len(self.examples)

    def question(self, prompt_ids: list[int]) -> str | None:
        """What the user asked in the prompt with these ids: its last user message (the
        prompt's text without a chat template); None for ids that are not one of these prompts."""
        if self._index is None:
            self._index = {tuple(ids): i for i, ids in enumerate(self.prompt_ids)}
        i = self._index.get(tuple(prompt_ids))
        if i is None:
            return None
        said = [m["content"] for m in self.messages[i] if m.get("role") == "user"] if self.messages else []
        return said[-1] if said and isinstance(said[-1], str) else self.prompts[i]

    def take(self, index: list[int]) -> PromptBatch:
        return PromptBatch(prompt_ids=[self.prompt_ids[i] for i in index],
                           prompts=[self.prompts[i] for i in index],
                           examples=[self.examples[i] for i in index],
                           messages=[self.messages[i] for i in index] if self.messages else [])


def load_prompts(path: str, split: str, data_cfg: DataConfig, tokenizer, limit: int = 0,
                 tools: list[dict] | None = None) -> PromptSet:
    """Read, check the columns the template and rewards need, render (offering `tools`, JSON
    schemas, through the chat template) and tokenize."""
    rows = load_rows(path, split, data_cfg.subset)
    fields = template_fields(data_cfg.template)
    checked = []
    for line, row in enumerate(rows, start=1):
        where = f"{path}: row {line}"
        if is_messages(lookup(row, data_cfg.prompt_key)):
            check_roles(lookup(row, data_cfg.prompt_key), where)
        else:
            missing = sorted(key for key in fields if row.get(key) is None)
            if missing:
                raise UserError(f"{where} {absent(row, missing[0])}; fix data.template / data.prompt_key or the file")
            not_text = sorted(key for key in fields if isinstance(row.get(key), (list, dict)))
            if not_text:
                raise UserError(f"{where}: column {not_text[0]!r} holds a {type(row[not_text[0]]).__name__}, not text; "
                                f"give text, or chat messages [{{role, content}}, ...] under data.prompt_key")
        checked.append(with_reference(row, data_cfg, where))
    renderer = PromptRenderer(data_cfg, tokenizer, tools)
    kept, seen = PromptSet([], [], [], 0), set()
    for line, row in enumerate(checked[:limit] if limit else checked, start=1):
        messages = renderer.messages(row)
        text = renderer.text(messages, f"{path}: row {line}")
        if data_cfg.dedupe and text in seen:
            kept.dropped_duplicates += 1
            continue
        seen.add(text)
        ids = renderer.ids(text)
        if len(ids) > data_cfg.max_prompt_tokens:
            kept.dropped_too_long += 1
            kept.longest_dropped = max(kept.longest_dropped, len(ids))
            continue
        kept.prompt_ids.append(ids)
        kept.prompts.append(text)
        kept.examples.append(row)
        kept.messages.append(messages)
    if not kept.examples:
        raise UserError(f"{path}: all {kept.dropped_too_long} prompts are longer than data.max_prompt_tokens="
                        f"{data_cfg.max_prompt_tokens} (the longest has {kept.longest_dropped} tokens); raise "
                        f"data.max_prompt_tokens")
    return kept


@dataclass
class PairSet:
    """Preference pairs of one split, P pairs in file order.

    prompt_ids / chosen_ids / rejected_ids: P token-id lists (responses end with EOS).
    prompts: P rendered prompt texts; messages: the chat messages they were rendered from.
    groups: [P] long, indices into group_names (shared by a run's splits)."""

    prompt_ids: list[list[int]]
    prompts: list[str]
    messages: list[list[dict]]
    chosen_ids: list[list[int]]
    rejected_ids: list[list[int]]
    groups: torch.Tensor
    group_names: list[str]
    examples: list[dict]
    dropped_too_long: int = 0
    dropped_ties: int = 0

    def __len__(self) -> int:
        return len(self.examples)

    def sizes(self) -> list[int]:
        """N_g: pairs per group."""
        return torch.bincount(self.groups, minlength=len(self.group_names)).tolist()


def pair_group(row: dict, data_cfg: DataConfig, where: str) -> str:
    if data_cfg.group_key is None:
        return "all"
    value = lookup(row, data_cfg.group_key)
    if value is None:
        raise UserError(f"{where} {absent(row, data_cfg.group_key)}; "
                        f"fix data.group_key or the file")
    return str(value)


def response_text(row: dict, key: str, where: str) -> str:
    value = lookup(row, key)
    if not isinstance(value, str) or not value:
        raise UserError(f"{where}: column {key!r} is missing or not a non-empty string (columns: {', '.join(row)}); "
                        f"fix data.chosen_key / data.rejected_key or the file")
    return value


def load_pairs(path: str, split: str, data_cfg: DataConfig, tokenizer, group_names: list[str] | None = None) -> PairSet:
    """Rows of prompt, chosen, rejected (and group) -> token ids. `group_names` fixes the groups
    (the training split's, for the held-out one); otherwise they are the sorted names found.
    Pairs whose two responses are equal say nothing and are dropped and counted."""
    rows = load_rows(path, split, data_cfg.subset)
    renderer = PromptRenderer(data_cfg, tokenizer)
    parsed = []
    for line, row in enumerate(rows, start=1):
        where = f"{path}: row {line}"
        missing = sorted(key for key in template_fields(data_cfg.template) if row.get(key) is None)
        if missing:
            raise UserError(f"{where} {absent(row, missing[0])}; fix data.template or the file")
        parsed.append((row, pair_group(row, data_cfg, where), response_text(row, data_cfg.chosen_key, where),
                       response_text(row, data_cfg.rejected_key, where)))
    names = group_names or sorted({group for _, group, _, _ in parsed})
    unknown = sorted({group for _, group, _, _ in parsed} - set(names))
    if unknown:
        raise UserError(f"{path}: group {unknown[0]!r} is not among the training groups {names}")
    out = PairSet([], [], [], [], [], torch.zeros(0, dtype=torch.long), names, [])
    groups = []
    respond = lambda text: tokenizer(text, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]  # noqa: E731
    for line, (row, group, chosen, rejected) in enumerate(parsed, start=1):
        if chosen == rejected:
            out.dropped_ties += 1
            continue
        messages = renderer.messages(row)
        text = renderer.text(messages, f"{path}: row {line}")
        prompt = renderer.ids(text)
        if len(prompt) > data_cfg.max_prompt_tokens:
            out.dropped_too_long += 1
            continue
        out.prompt_ids.append(prompt)
        out.prompts.append(text)
        out.messages.append(messages)
        out.chosen_ids.append(respond(chosen))
        out.rejected_ids.append(respond(rejected))
        out.examples.append(row)
        groups.append(names.index(group))
    if not out.examples:
        raise UserError(f"{path}: no usable preference pair (ties: {out.dropped_ties}, prompts too long: {out.dropped_too_long})")
    out.groups = torch.tensor(groups, dtype=torch.long)
    return out
