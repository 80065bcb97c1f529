"""Tool calls: offered through the chat template's own `tools=`, read back by transformers'
response templates (the tiny tools model's own, and Qwen 2.5's public chat template committed as
tests/fixtures/qwen2_5_chat_template.jinja with transformers' template for its model type), run in
the workers; a raising, a hanging and a huge-output tool each cost one turn, never the run."""

import json
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from tokenizers import AddedToken

from grpo_cli.config import ASSETS_DIR, DataConfig
from grpo_cli.data import PromptRenderer, load_prompts
from grpo_cli.environments import episode_spec, probe_tools, run_episodes
from grpo_cli.environments.render import turn_ids
from grpo_cli.environments.tools import ToolCall, call_tool, toolbox
from grpo_cli.errors import UserError
from grpo_cli.sampler import SamplingParams, engine
from grpo_cli.training.evaluate import EvalSamples
from grpo_cli.training.rl import tool_metrics
from grpo_cli.training.runtime import load_tokenizer

from conftest import seeds

TINY_TOOLS = str(ASSETS_DIR / "tiny-tools")
QWEN_TEMPLATE = Path(__file__).parent / "fixtures" / "qwen2_5_chat_template.jinja"
QUESTION = [{"role": "user", "content": "347+589+120"}]
CALL = {"role": "assistant", "content": "",
        "tool_calls": [{"type": "function", "function": {"name": "add", "arguments": {"terms": [347, 589, 120]}}}]}
RESULT = [{"role": "tool", "name": "add", "content": "1056"}]
PARAMS = SamplingParams(n=4, temperature=1.0, top_p=1.0, top_k=0, max_new_tokens=80)

USER_TOOLS = {
    "raising": "def add(terms: list[int]) -> int:\n    '''Add.\n\n    Args:\n        terms: numbers\n    '''\n"
               "    raise RuntimeError('the adder is broken')\n",
    "hanging": "import time\n\ndef add(terms: list[int]) -> int:\n    '''Add.\n\n    Args:\n        terms: numbers\n"
               "    '''\n    time.sleep(60)\n",
    "huge": "def add(terms: list[int]) -> str:\n    '''Add.\n\n    Args:\n        terms: numbers\n    '''\n"
            "    return 'x' * 5_000_000\n",
}


@pytest.fixture(scope="module")
def tools_tokenizer():
    return load_tokenizer(TINY_TOOLS)


@pytest.fixture(scope="module")
def qwen_tokenizer():
    """A tokenizer that writes every character of Qwen's turns (the tiny tools model's), with
    Qwen 2.5's own chat template, its turn tokens and its end-of-turn token as EOS."""
    tokenizer = load_tokenizer(TINY_TOOLS)
    tokenizer.add_tokens([AddedToken("<|im_start|>", special=True), AddedToken("<|im_end|>", special=True)],
                         special_tokens=True)
    tokenizer.eos_token = "<|im_end|>"
    tokenizer.chat_template = QWEN_TEMPLATE.read_text(encoding="utf-8")
    tokenizer.response_template = None  # so transformers' own template for qwen2 is the one used
    return tokenizer


def test_qwen_template_offers_the_tools_and_its_calls_read_back(qwen_tokenizer):
    tools = toolbox(["add"], qwen_tokenizer, "qwen2", None)
    assert tools.response_template["start_anchor"] == "<|im_start|>assistant\n"  # transformers' qwen2 template
    prompt = PromptRenderer(DataConfig(), qwen_tokenizer, tools.schemas).text(QUESTION)
    assert '<tools>\n{"type": "function", "function": {"name": "add", "description": "Add integers exactly."' in prompt
    assert prompt.endswith("<|im_start|>user\n347+589+120<|im_end|>\n<|im_start|>assistant\n")
    message, calls = tools.read('<tool_call>\n{"name": "add", "arguments": {"terms": [347, 589, 120]}}\n</tool_call>')
    assert calls == [ToolCall("add", {"terms": [347, 589, 120]}, "add")] and message["tool_calls"] == CALL["tool_calls"]
    assert tools.read("Answer: 1056") == ({"role": "assistant", "content": "Answer: 1056"}, [])
    _, broken = tools.read('<tool_call>\n{"name": "add", "arguments": {"terms": [347, 589}}\n</tool_call>')
    assert len(broken) == 1 and broken[0].error.startswith("error: unreadable tool call: json parser could not parse")
    _, unknown = tools.read('<tool_call>\n{"name": "mul", "arguments": {"x": 2}}\n</tool_call>')
    assert unknown == [ToolCall("mul", {}, error="error: no tool named 'mul'; the tools are add")]


def test_a_tool_turn_follows_the_models_end_of_turn_exactly_as_a_chat_would(qwen_tokenizer):
    """The model's tokens stop at <|im_end|>; the newline Qwen's template writes after it belongs
    to the tool's turn, so prompt + model turn + tool turn is the template's own rendering."""
    schemas = toolbox(["add"], qwen_tokenizer, "qwen2", None).schemas
    ids = turn_ids(qwen_tokenizer, QUESTION + [CALL], RESULT, schemas)
    said = qwen_tokenizer.decode(ids)
    assert said == "\n<|im_start|>user\n<tool_response>\n1056\n</tool_response><|im_end|>\n<|im_start|>assistant\n"
    render = lambda messages, **kw: qwen_tokenizer.apply_chat_template(messages, tools=schemas, tokenize=False, **kw)  # noqa: E731
    model_turn = render(QUESTION + [CALL])[len(render(QUESTION, add_generation_prompt=True)):].removesuffix("\n")
    assert model_turn.endswith("</tool_call><|im_end|>")
    chat = render(QUESTION + [CALL] + RESULT, add_generation_prompt=True)
    assert render(QUESTION, add_generation_prompt=True) + model_turn + said == chat


def test_the_tiny_tools_model_reads_its_own_calls(tools_tokenizer):
    tools = toolbox(["add"], tools_tokenizer, "llama", None)
    assert tools.response_template == tools_tokenizer.response_template  # the tokenizer's own
    prompt = PromptRenderer(DataConfig(), tools_tokenizer, tools.schemas).text(QUESTION)
    assert prompt == "<s><|system|>tools: add\n<|user|>347+589+120\n<|assistant|>"
    said = tools_tokenizer.decode(turn_ids(tools_tokenizer, QUESTION + [CALL], RESULT, tools.schemas))
    assert said == "<|tool|>1056\n<|assistant|>"
    _, calls = tools.read('<tool_call>{"name": "add", "arguments": {"terms": [347, 589, 120]}}</tool_call>')
    assert calls == [ToolCall("add", {"terms": [347, 589, 120]}, "add")]
    assert tools.read('<tool_call>[347, 589]</tool_call>')[1] == [
        ToolCall("", {}, error="error: a tool call must be a JSON object with a name and arguments")]
    message, calls = tools.read('<tool_call>{"name": "add"}</tool_call>')  # a call the model left half written
    assert calls == [ToolCall("add", {}, "add")] and message["tool_calls"][0]["function"]["arguments"] == {}
    assert tools_tokenizer.decode(turn_ids(tools_tokenizer, QUESTION + [message], RESULT, tools.schemas)) == (
        "<|tool|>1056\n<|assistant|>")


def test_validate_reads_each_tools_call_back_from_the_chat_template(make_cfg, qwen_tokenizer, tools_tokenizer,
                                                                    tmp_path):
    cfg = make_cfg("+recipe=embedded_tools", "environment.workers=0")
    with episode_spec(cfg.environment, tools_tokenizer) as spec:
        assert probe_tools(spec) == "add"
    qwen, other = tmp_path / "qwen2.json", tmp_path / "other.json"
    qwen.write_text(json.dumps(toolbox(["add"], qwen_tokenizer, "qwen2", None).response_template))
    fields = {"tool_calls": {"open": "[CALL]", "close": "[/CALL]", "repeats": True, "content": "json",
                             "transform": {"type": "function", "function": "{content}"}}, "content": {"content": "text"}}
    other.write_text(json.dumps({"start_anchor": "<|im_start|>assistant\n", "fields": fields}))
    with episode_spec(replace(cfg.environment, response_template=str(qwen)), qwen_tokenizer) as spec:
        assert probe_tools(spec) == "add"
    with episode_spec(replace(cfg.environment, response_template=str(other)), qwen_tokenizer) as spec:
        with pytest.raises(UserError, match="the chat template writes a call to add as .* and the response template "
                                            "reads \\[\\]; set environment.response_template"):
            probe_tools(spec)


def test_a_tool_result_is_its_text_or_one_short_error():
    assert call_tool("add", {"terms": [347, 589, 120]}, 1000) == ("1056", "ok")
    assert call_tool("add", {"terms": [1, "2"]}, 1000) == (
        "error: TypeError: unsupported operand type(s) for +: 'int' and 'str'", "error")
    assert call_tool("add", {"numbers": [1]}, 1000)[0].startswith("error: TypeError: add() got an unexpected keyword")
    assert call_tool("add", {"terms": list(range(1000))}, 5) == (
        "error: add returned 6 characters, over environment.tool_max_chars=5", "error")


def test_tool_metrics_count_calls_and_their_failures():
    stats = torch.tensor([[1, 0, 0], [2, 1, 1], [0, 0, 0], [1, 1, 0]])
    assert tool_metrics(stats) == {"tool/calls_per_episode": 1.0, "tool/call_rate": 0.75, "tool/ok_rate": 0.25,
                                   "tool/errors": 2.0, "tool/timeouts": 1.0}


@pytest.fixture(scope="module")
def tools_sampler(tools_tokenizer):
    return engine("hf")(model_path=TINY_TOOLS, tokenizer=tools_tokenizer, device=torch.device("cpu"),
                        dtype=torch.float32, batch_size=64)


def episodes_with(cfg, tokenizer, sampler, rows: int = 6):
    prompts = load_prompts(cfg.data.eval_path, cfg.data.eval_split, cfg.data, tokenizer, limit=rows,
                           tools=toolbox(list(cfg.environment.tools), tokenizer, "llama", None).schemas)
    with episode_spec(cfg.environment, tokenizer) as spec:
        return run_episodes(sampler, prompts.take(list(range(rows))), PARAMS, seeds(20, rows), spec)


def test_the_add_tool_answers_each_call_and_its_tokens_are_never_trained(make_cfg, tools_tokenizer, tools_sampler):
    out = episodes_with(make_cfg("+recipe=embedded_tools"), tools_tokenizer, tools_sampler)
    called = out.tool_stats[:, 0] > 0
    assert called.any() and (~called).any()  # the base model calls the tool some of the time, not always
    for ids, model, env, stats, turns in zip(out.completion_ids, out.completion_mask, out.env_mask, out.tool_stats,
                                            out.turns):
        said = tools_tokenizer.decode(ids[env.bool()])
        assert not (model.bool() & env.bool()).any()
        if stats[0] == 0:
            assert said == "" and turns == 1  # an answer without a call ends the episode
        elif stats[1] == 0:
            model_text = tools_tokenizer.decode(ids[model.bool()])
            terms = [int(t) for t in model_text.split('"terms": [')[1].split("]")[0].split(", ")]
            assert said.startswith(f"<|tool|>{sum(terms)}\n<|assistant|>") and turns >= 2


@pytest.mark.parametrize("kind", ["raising", "hanging", "huge"])
def test_a_broken_tool_costs_its_turn_not_the_run(kind, make_cfg, tools_tokenizer, tools_sampler, tmp_path):
    (tmp_path / f"{kind}.py").write_text(USER_TOOLS[kind])
    cfg = make_cfg("+recipe=embedded_tools", f"environment.tools=[{tmp_path}/{kind}.py:add]",
                   "environment.tool_timeout=1")
    out = episodes_with(cfg, tools_tokenizer, tools_sampler, rows=4)
    called = out.tool_stats[:, 0] > 0
    assert called.any()
    failures = out.tool_stats[:, 2] if kind == "hanging" else out.tool_stats[:, 1]
    assert torch.equal(failures, out.tool_stats[:, 0])  # every call failed, each counted once
    expected = {"raising": "error: RuntimeError: the adder is broken", "hanging": "error: add timed out after 1s",
                "huge": "error: add returned 5,000,000 characters, over environment.tool_max_chars=1000"}[kind]
    for ids, env, turns, stats in zip(out.completion_ids, out.env_mask, out.turns, out.tool_stats):
        if stats[0] > 0:  # the model read the short error and took its next turn
            assert tools_tokenizer.decode(ids[env.bool()]).startswith(f"<|tool|>{expected}\n<|assistant|>")
            assert turns >= 2
    assert not out.env_failed.any()


def test_eval_reports_tool_use_only_for_runs_with_tools():
    samples = EvalSamples(correct=[1, 0], rewards=[1.0, 0.0, 0.0, 0.0], lengths=[5] * 4, truncated=[False] * 4,
                          tool_stats=[[1, 0, 0], [0, 0, 0], [2, 1, 0], [1, 0, 1]])
    result = samples.summary(2)
    assert (result.tool_call_rate, result.tool_ok_rate) == (0.75, 0.5)  # 4 calls: 1 failed, 1 timed out
    merged = EvalSamples.merge([samples, EvalSamples([1], [1.0, 1.0], [3, 3], [False, False])])
    assert merged.tool_stats == samples.tool_stats and merged.correct == [1, 0, 1]
    plain = EvalSamples([1], [1.0, 1.0], [3, 3], [False, False]).summary(2).to_dict()
    assert "tool_call_rate" not in plain and "tool_ok_rate" not in plain
