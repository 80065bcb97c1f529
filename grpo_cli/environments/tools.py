"""Tools the model calls in its turns: plain Python functions, offered through the chat template.

A tool is a function with type hints and a docstring with an `Args:` section; transformers'
`get_json_schema` turns it into the JSON schema the chat template's own `tools=` renders. The
model's calls are read from its turn by transformers' `parse_response` with a response template:
environment.response_template (a JSON file) if set, else the tokenizer's own
`response_template`, else the one transformers keeps for the model type (Qwen 2 / 2.5 / 3 and
others). There is no regex per model here; this module is the only one that touches
transformers' parsing internals.

Each call runs in the environment workers under environment.tool_timeout. A call that cannot be
parsed, names an unknown tool, raises, hangs, or returns more than environment.tool_max_chars
answers with one short error line instead, and the metrics count it. TRL and verl truncate a long
tool output; we refuse it, so a runaway tool costs one short turn, not the episode's token budget.
"""

from __future__ import annotations

import functools
import json
import os
from dataclasses import dataclass

from transformers import PretrainedConfig
from transformers.utils import get_json_schema

from grpo_cli.errors import UserError
from grpo_cli.rewards.catalog import is_user_path, load_user_function
from grpo_cli.rewards.workers import describe

OK, ERROR, TIMEOUT = "ok", "error", "timeout"


def add(terms: list[int]) -> int:
    """Add integers exactly.

    Args:
        terms: the integers to add
    """
    return sum(terms)


BUILTIN_TOOLS = {"add": add}


@dataclass(frozen=True)
class ToolCall:
    """One call read from a model turn. name: as the model wrote it; tool: the environment.tools
    entry that runs it; error: set when the call cannot run (the model reads it instead)."""

    name: str
    arguments: dict
    tool: str = ""
    error: str = ""


@functools.lru_cache(maxsize=None)
def tool_function(name: str):
    """A tool by name: a built-in (`add`) or a user's `file.py:function` / `module:function`."""
    if is_user_path(name):
        return load_user_function(name)
    if name not in BUILTIN_TOOLS:
        raise ValueError(f"no built-in tool {name!r} (built-ins: {', '.join(BUILTIN_TOOLS)}); "
                         f"name your own as file.py:function")
    return BUILTIN_TOOLS[name]


def tool_schemas(names: list[str]) -> list[dict]:
    """The JSON schemas the chat template renders, one per tool; UserError for a function that
    has no type hints or docstring to build one from."""
    schemas = []
    for name in names:
        try:
            schemas.append(get_json_schema(tool_function(name)))
        except ValueError as error:
            raise UserError(f"environment.tools: {name}: {error}") from error
        except Exception as error:  # transformers' schema errors: missing hints or Args: entries
            raise UserError(f"environment.tools: {name}: {describe(error)}; give it type hints and a docstring "
                            f"with an Args: line per parameter") from error
    return schemas


def call_tool(name: str, arguments: dict, max_chars: int) -> tuple[str, str]:
    """Run one call (in a worker) -> (what the model reads, OK or ERROR). name: its
    environment.tools entry."""
    short = name.rpartition(":")[2]
    try:
        result = tool_function(name)(**arguments)
    except SystemExit as exit_:
        return f"error: {short} called sys.exit({exit_.code})", ERROR
    except Exception as error:  # user code fails in its own ways; the model reads why
        return f"error: {describe(error)}", ERROR
    text = result if isinstance(result, str) else json.dumps(result, default=str)
    if len(text) > max_chars:
        return f"error: {short} returned {len(text):,} characters, over environment.tool_max_chars={max_chars}", ERROR
    return text, OK


def tool_message(call: ToolCall, text: str) -> dict:
    return {"role": "tool", "name": call.name, "content": text}


@dataclass(frozen=True)
class Toolbox:
    """The tools of a run and how to read calls from the model's turns."""

    entries: dict[str, str]  # the name the model calls -> its environment.tools entry
    schemas: list[dict]
    response_template: dict
    tokenizer: object

    def read(self, text: str) -> tuple[dict, list[ToolCall]]:
        """A model turn -> its assistant message (with `tool_calls` when it made any) and the calls.
        A turn whose calls cannot be parsed gives one ToolCall carrying the error."""
        try:
            parsed = self.tokenizer.parse_response(text, self.response_template, prefix="", tools=self.schemas)
        except Exception as error:  # the model writes anything; the parser refuses it in many ways
            reason = (str(error).strip().splitlines() or [type(error).__name__])[0]
            return {"role": "assistant", "content": text}, [ToolCall("", {}, error=f"error: unreadable tool call: {reason}")]
        calls = [self._call(entry) for entry in parsed.get("tool_calls") or []]
        message = {"role": "assistant", "content": parsed.get("content") or ""}
        if calls:  # as the template expects them, whatever the model left out
            message["tool_calls"] = [{"type": "function", "function": {"name": c.name, "arguments": c.arguments}}
                                     for c in calls]
        return message, calls

    def _call(self, entry: dict) -> ToolCall:
        function = entry.get("function", entry) if isinstance(entry, dict) else entry
        if not isinstance(function, dict):
            return ToolCall("", {}, error="error: a tool call must be a JSON object with a name and arguments")
        name, arguments = function.get("name"), function.get("arguments", {})
        if name not in self.entries:
            return ToolCall(str(name), {}, error=f"error: no tool named {name!r}; the tools are {', '.join(self.entries)}")
        if not isinstance(arguments, dict):
            return ToolCall(name, {}, error=f"error: the arguments of {name} must be a JSON object")
        return ToolCall(name, arguments, self.entries[name])


def toolbox(names: list[str], tokenizer, model_type: str | None, template_path: str | None) -> Toolbox | None:
    """The run's tools, or None without any; UserError when calls could not be read. model_type:
    for transformers' fallback templates (None: that of the folder the tokenizer came from)."""
    if not names:
        return None
    schemas = tool_schemas(names)
    entries = {schema["function"]["name"]: name for schema, name in zip(schemas, names)}
    if len(entries) < len(names):
        raise UserError(f"environment.tools={names} names two functions the model would call by the same name; "
                        f"keep one of each")
    return Toolbox(entries, schemas, _response_template(tokenizer, model_type, template_path), tokenizer)


def _response_template(tokenizer, model_type: str | None, path: str | None) -> dict:
    if path:
        if not os.path.isfile(path):
            raise UserError(f"environment.response_template={path} does not exist; give a JSON response template file")
        try:
            with open(path, encoding="utf-8") as handle:
                return json.load(handle)
        except (OSError, ValueError) as error:
            raise UserError(f"environment.response_template={path} is not a JSON file: {error}") from error
    own = getattr(tokenizer, "response_template", None)
    if own:
        return own
    # Importing the serving module costs seconds, so only runs with tools pay it.
    from transformers.cli.serving.utils import _RESPONSE_TEMPLATE_FALLBACKS

    model_type = _model_type(tokenizer) if model_type is None else model_type
    found = next((template for types, template in _RESPONSE_TEMPLATE_FALLBACKS.items() if model_type in types), None)
    if found is None:
        raise UserError(f"tools need the model's tool calls read from its output: the tokenizer has no "
                        f"response_template and transformers has none for model type {model_type!r}; set "
                        f"environment.response_template=FILE.json (transformers' response-template format)")
    return found


def _model_type(tokenizer) -> str:
    """The model type of the folder the tokenizer came from ("" when it has no config)."""
    try:
        return PretrainedConfig.get_config_dict(tokenizer.name_or_path)[0].get("model_type", "")
    except (OSError, ValueError):
        return ""
