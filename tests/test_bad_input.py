"""The catalogue of bad input: every case ends with its exit status, one line naming the problem
and the fix, no traceback, and every file and folder that existed before exactly as it was (a
run that fails to start makes no folder either).

The world the cases run against holds a finished run under a path with a space and a
non-ASCII letter (so every path below goes through Hydra as a user types it), damaged copies of
it, a DPO run, a folder held by a live run's lock, and a broken recipe on $GRPO_RECIPE_PATH
(which must break only the command that asks for it).
"""

import contextlib
import io
import os
import shlex
import shutil
from pathlib import Path

import gguf
import numpy as np
import pytest

from grpo_cli.cli import main
from grpo_cli.errors import UserError
from grpo_cli.run_folder.layout import LOCK_FILE
from grpo_cli.run_folder.lock import RunLock

SHORT = ["trainer.steps=2", "trainer.eval_every=0", "eval.num_prompts=4", "eval.k=2", "trainer.prompts_per_step=4"]
RUN = "my runs/café"

FILES = {
    "empty.jsonl": "",
    "malformed.jsonl": '{"question": "1+1", "answer": "2"}\n{"question": \n',
    "noanswer.jsonl": '{"question": "1+1"}\n',
    "nullanswer.jsonl": '{"question": "1+1", "answer": null}\n',
    "listprompt.jsonl": '{"question": ["1+2", "3+4"], "answer": "3"}\n',
    "norole.jsonl": '{"messages": [{"content": "1+1"}], "answer": "2"}\n',
    "toolrole.jsonl": '{"messages": [{"role": "user", "content": "1+1"}], "answer": "2"}\n'
                      '{"messages": [{"role": "user", "content": "1+2"}, {"role": "tool", "content": "3"}], "answer": "3"}\n',
    "long.jsonl": '{"question": "1+1", "answer": "2"}\n{"question": "%s", "answer": "2"}\n' % ("1+" * 120 + "1"),
    "rows.jsonl": '{"prompt": "1+1", "completion": "Answer: 2", "answer": "2"}\n',
    "recipes/broken.yaml": "trainer: [1, 2\n",
    "undocumented.py": "def add(terms):\n    return sum(terms)\n",
    "raising.py": "import os\nKEY = os.environ['GRPO_TEST_NO_SUCH_KEY']\n\ndef reward(completions, **kwargs):\n    return [1.0] * len(completions)\n",
    "other/config.yaml": "algorithm:\n  name: someone_else\n",
    "other/metrics.jsonl": '{"step": 0}\n',
}
LATIN1 = {"latin1.jsonl": b'{"question": "caf\xe9 1+1", "answer": "2"}\n',
          "latin1_rows.jsonl": b'{"prompt": "caf\xe9", "completion": "Answer: 2", "answer": "2"}\n'}


def write_gguf(path: Path, architecture: str) -> None:
    """A small GGUF file of the given architecture (its tensor is all the file holds)."""
    writer = gguf.GGUFWriter(str(path), architecture)
    writer.add_block_count(1)
    writer.add_tensor("token_embd.weight", np.ones((64, 64), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def snapshot(root: Path) -> dict:
    """Every file and folder under root with its size and modification time."""
    return {str(p.relative_to(root)): (p.is_dir(), p.stat().st_size, p.stat().st_mtime_ns) for p in root.rglob("*")}


def cut(path: Path, keep: float = 0.5) -> None:
    os.truncate(path, int(path.stat().st_size * keep))


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("world")
    for name, text in FILES.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    for name, raw in LATIN1.items():
        (root / name).write_bytes(raw)
    write_gguf(root / "rwkv.gguf", "rwkv6")
    write_gguf(root / "cut.gguf", "llama")
    cut(root / "cut.gguf", keep=0.9)
    (root / "results").mkdir()
    printed = io.StringIO()
    with contextlib.redirect_stderr(printed):
        assert main(["train", f"output_dir={root / RUN}", *SHORT, "trainer.save_every=1"]) == 0
        assert main(["train", "+recipe=dpo", f"output_dir={root / 'dpo'}", "trainer.steps=1", "trainer.eval_every=0",
                     "eval.num_prompts=4"]) == 0
    for name in ("cut_weights", "cut_state", "bad_overrides"):
        shutil.copytree(root / RUN, root / name)
    (root / "bad_overrides/overrides.yaml").write_text("[trainer.steps=2\n")
    cut(root / "cut_weights/checkpoints/step_2/model.safetensors")
    cut(root / "cut_state/checkpoints/step_2/trainer_state.pt", keep=0.01)
    shutil.copytree(root / RUN / "checkpoints/step_2", root / "no_tokenizer")
    for file in (root / "no_tokenizer").glob("tokenizer*"):
        file.unlink()
    with RunLock(root / "busy"):
        yield root, printed.getvalue()


def train(*args):
    return ["train", "output_dir={root}/new", *args]


CASES = [
    # configuration values and keys
    (train("trainer.stepz=3"), 2, "stepz"),
    (train("trainer.lr=-1"), 2, "trainer.lr"),
    (train("sampler.n=1"), 2, "sampler.n=1"),
    (train("sampler.n=100000"), 2, "completions per step"),
    (train("algorithm.clip_eps_low=1.5"), 2, "clip_eps_low"),
    (train("algorithm.clip_eps_low=0"), 2, "clip_eps_low"),
    (train("algorithm=gfpo", "algorithm.gfpo.k=9"), 2, "gfpo.k=9"),
    (train("algorithm.reward_aggregation=nope"), 2, "algorithm.reward_aggregation='nope' is not known; valid: decoupled"),
    (train("algorithm=grpo_process", "reward=arithmetic_process", "algorithm.reward_aggregation=decoupled"), 2,
     "algorithm.advantage=process learns from step rewards: use reward_aggregation=sum"),
    (train("algorithm=rloo", "algorithm.reward_aggregation=decoupled"), 2, "set algorithm.kl_in=loss (or kl_coef=0)"),
    (train("reward.functions=[{name:final_answer},{name:format,gate:final}]"), 2,
     "reward.functions[1].gate='final' names no other reward function; use one of: final_answer"),
    (train("algorithm=nope"), 2, "available: cispo, dapo"),
    (train("reward=nope"), 2, "available: arithmetic"),
    (train("sampler=nope"), 2, "available: hf, vllm"),
    (train("+recipe=nope"), 2, "available: dapo_math, dapo_math_1gpu, dpo, dr_grpo_math, embedded, embedded_feedback, embedded_tools, embedded_verbose, gr_dpo"),
    (train("+recipe=broken"), 2, "recipe broken ({root}/recipes/broken.yaml) is not valid YAML"),
    (train("eval.top_p=-1"), 2, "eval.top_p=-1.0 must lie in (0, 1]"),
    (train("eval.num_prompts=-1"), 2, "eval.num_prompts=-1 must be >= 0"),
    (train("eval.max_new_tokens=-5"), 2, "eval.max_new_tokens=-5 must be >= 1"),
    (train("seed=99999999999999999"), 2, "must lie in [0, 2^31)"),
    (train("data.template='Q: {question'"), 2, "is not a template (expected '}' before end of string)"),
    (train("data.template='{}'"), 2, "an empty {} names no column"),
    (train("reward.functions=[{name:'no_such_module_xyz:f'}]"), 2, "cannot import 'no_such_module_xyz'"),
    (train("reward.functions=[{name:'{root}/raising.py:reward'}]"), 2,
     "importing {root}/raising.py raised KeyError at {root}/raising.py:2: 'GRPO_TEST_NO_SUCH_KEY'; fix the module"),
    (train("model.name_or_path=/no/such/model"), 2, "model path /no/such/model does not exist"),
    # GGUF model files (model_source.py): nothing is converted, nothing written in $GRPO_CACHE
    (train("model.name_or_path={root}/missing.gguf"), 2, "model.name_or_path={root}/missing.gguf does not exist; give a "
                                                        ".gguf file, or a folder or hub id with model.gguf_file=NAME"),
    (train("model.name_or_path={root}", "model.gguf_file=missing.gguf"), 2,
     "model.gguf_file=missing.gguf is not in {root}"),
    (train("model.name_or_path={root}/cut.gguf"), 2, "{root}/cut.gguf is not a readable GGUF file ("),
    (train("model.name_or_path={root}/rwkv.gguf"), 2, "cannot load {root}/rwkv.gguf as a causal language model: GGUF "
                                                     "model with architecture rwkv6 is not supported yet."),
    (train("model.name_or_path='${grpo_package_file:no_such_package_xyz,m.gguf,pip install no-such-package-xyz}'"), 2,
     "this model ships in the no_such_package_xyz package, which is not installed: pip install no-such-package-xyz"),
    (train("environment.name=nope"), 2, "environment.name='nope' is not an environment: use one of feedback"),
    (train("environment.max_turns=0"), 2, "environment.max_turns=0 must be >= 1"),
    (train("environment=feedback", "environment.turn_discount=0"), 2, "environment.turn_discount=0.0 must lie in (0, 1]"),
    (train("environment=feedback", "environment.timeout=0"), 2, "environment.timeout=0.0 must be > 0 seconds"),
    (train("environment=feedback", "environment.name={root}/missing.py:Env"), 2, "file {root}/missing.py does not exist"),
    (train("environment=feedback", "+environment.kwargs.nope=1"), 2, "unexpected keyword argument 'nope'"),
    (train("environment=tools", "environment.tools=[nope]"), 2,
     "environment.tools: nope: no built-in tool 'nope' (built-ins: add); name your own as file.py:function"),
    (train("environment.tools=[add]"), 2, "need a turn to answer the tools' results in: set environment.max_turns >= 2"),
    (train("environment=tools", "environment.tool_timeout=0"), 2, "environment.tool_timeout=0.0 must be > 0 seconds"),
    (train("environment=tools", "environment.response_template={root}/missing.json"), 2,
     "environment.response_template={root}/missing.json does not exist"),
    (train("environment=tools", "environment.tools=[{root}/undocumented.py:add]"), 2,
     "environment.tools: {root}/undocumented.py:add: DocstringParsingException: Cannot generate JSON schema for add "
     "because it has no docstring!; give it type hints and a docstring with an Args: line per parameter"),
    (train("environment=tools"), 2, "the tokenizer has no response_template and transformers has none for model type "
                                    "'llama'; set environment.response_template=FILE.json"),
    # data files
    (train("data.path={root}/missing.jsonl"), 2, "does not exist; check data.path"),
    (train("data.path={root}/empty.jsonl"), 2, "has no rows"),
    (train("data.path={root}/malformed.jsonl"), 2, "line 2 is not valid JSON"),
    (train("data.path={root}/latin1.jsonl"), 2, "line 1 is not UTF-8 (byte 0xe9 at column 18); convert the file"),
    (train("data.path={root}/noanswer.jsonl"), 2, "row 1 has no column 'answer'"),
    (train("data.path={root}/nullanswer.jsonl"), 2, "row 1 has 'answer': null; fix data.answer_key or the file"),
    (train("data.path={root}/listprompt.jsonl"), 2, "column 'question' holds a list, not text"),
    (train("data.path={root}/norole.jsonl", "data.prompt_key=messages"), 2, "message 0 has role None"),
    (train("data.path={root}/toolrole.jsonl", "data.prompt_key=messages"), 2,
     "{root}/toolrole.jsonl: row 2: the model's chat template refuses these messages (unsupported role: tool); change "
     "the row's messages or set data.chat_template=false"),
    (train("data.path={root}/long.jsonl", "data.max_prompt_tokens=400"), 2,
     "1 of 2 prompts plus the 64-token generation budget exceed the model's 256 positions; set data.max_prompt_tokens=192"),
    # the run folder
    (["train", "output_dir="], 2, "output_dir is empty"),
    (["train", "output_dir={root}/empty.jsonl"], 2, "is a file, not a folder"),
    (["train", "output_dir={root}/other"], 2, "holds another run's config; pass resume=auto"),
    (["train", "output_dir={run}/checkpoints/step_2/inner", *SHORT], 2, "lies inside the run folder {run}"),
    (["train", "output_dir={root}/busy"], 2, "output_dir={root}/busy is in use by another grpo train (pid {pid} on"),
    (train("resume=auto"), 2, "has no complete checkpoint"),
    # resuming
    (["train", "output_dir={run}", "resume=auto", *SHORT], 0, "nothing to do: "),
    (["train", "output_dir={run}", "resume=auto", *SHORT, "trainer.steps=3", "sampler.n=4"], 2,
     "resume would change what the run trains: sampler.n (8 -> 4)"),
    (["train", "output_dir={run}", "resume=auto", *SHORT, "trainer.steps=3", "algorithm=dapo"], 2,
     "algorithm.name (grpo -> dapo)"),
    (["train", "output_dir={run}", "resume=auto", *SHORT, "trainer.steps=3", "model.lora.rank=8"], 2,
     "holds full weights (no LoRA adapters) but this run sets model.lora.rank > 0"),
    (train("resume={root}/dpo/checkpoints/step_1", *SHORT, "trainer.steps=3"), 2,
     "was saved by a dpo run (algorithm.objective=preference); this run is grpo (rl)"),
    (["train", "output_dir={root}/cut_weights", "resume=auto", *SHORT, "trainer.steps=3"], 2,
     "step_2 is damaged (model.safetensors: Error while deserializing header: incomplete metadata, file not fully "
     "covered); the newest intact one before it is {root}/cut_weights/checkpoints/step_1: "
     "resume={root}/cut_weights/checkpoints/step_1"),
    (["train", "output_dir={root}/cut_state", "resume=auto", *SHORT, "trainer.steps=3"], 2,
     "step_2 is damaged (trainer_state.pt cannot be read: "),
    # eval and score
    (["eval", "checkpoint={root}/cut_weights/checkpoints/step_2"], 2,
     "the newest intact one before it is {root}/cut_weights/checkpoints/step_1: checkpoint="),
    (["eval", "checkpoint={root}/bad_overrides/checkpoints/step_2"], 2,
     "the run folder of checkpoint={root}/bad_overrides/checkpoints/step_2: overrides.yaml cannot be read: while "
     "parsing a flow sequence"),
    (["eval", "checkpoint={root}/no_tokenizer"], 2, "has no tokenizer files (tokenizer_config.json missing)"),
    (["eval", "eval.num_prompts=2", "output={root}/results"], 2, "output={root}/results is a folder; give a file name"),
    (["score", "completions={root}/rows.jsonl", "output={root}/results"], 2, "output={root}/results is a folder"),
    (["score", "completions={root}/latin1_rows.jsonl", "output={root}/scored.jsonl"], 2, "line 1 is not UTF-8"),
]


def place(text: str, names: dict) -> str:
    for name, value in names.items():
        text = text.replace(name, value)
    return text


@pytest.mark.parametrize("args, status, fragment", CASES, ids=[" ".join(c[0][1:]) or c[0][0] for c in CASES])
def test_bad_input_is_one_line_and_changes_nothing(world, capsys, monkeypatch, args, status, fragment):
    root, _ = world
    monkeypatch.setenv("GRPO_RECIPE_PATH", str(root / "recipes"))
    monkeypatch.setenv("GRPO_CACHE", str(root / "cache"))
    names = {"{root}": str(root), "{run}": str(root / RUN), "{pid}": str(os.getpid())}
    before = snapshot(root)
    assert main([place(arg, names) for arg in args]) == status
    err = capsys.readouterr().err
    assert place(fragment, names) in err, err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    assert status != 2 or err.startswith("error: ")
    assert snapshot(root) == before


def test_a_broken_recipe_breaks_only_the_command_that_asks_for_it(world, capsys, monkeypatch):
    root, _ = world
    monkeypatch.setenv("GRPO_RECIPE_PATH", str(root / "recipes"))
    assert main(["train", "--cfg", "job"]) == 0
    assert main(["train", "+recipe=embedded", "--cfg", "job"]) == 0
    assert "recipe: embedded" in capsys.readouterr().out


def test_the_printed_eval_command_pastes_back(world, capsys):
    """The run folder holds a space and a non-ASCII letter; the command `grpo train` printed
    runs as printed."""
    root, printed = world
    line = next(line for line in printed.splitlines() if line.startswith("evaluate it: "))
    argv = shlex.split(line.removeprefix("evaluate it: "))
    assert argv[:2] == ["grpo", "eval"] and argv[2] == f"checkpoint={root / RUN}/checkpoints/step_2"
    assert main([*argv[1:], "eval.num_prompts=2", "eval.k=1"]) == 0


def test_a_live_run_holds_its_folder_and_a_crashed_one_is_taken_over(tmp_path, capsys):
    folder = tmp_path / "runs" / "a"
    with RunLock(folder):
        holder = (folder / LOCK_FILE).read_text()
        assert f'"pid": {os.getpid()}' in holder
        with pytest.raises(UserError, match=f"is in use by another grpo train \\(pid {os.getpid()} on"):
            RunLock(folder).__enter__()
    assert not (tmp_path / "runs").exists()  # it made both folders and nothing was written in them
    folder.mkdir(parents=True)
    (folder / LOCK_FILE).write_text('{"pid": 99999999, "host": "elsewhere", "since": "yesterday"}')  # killed holder
    with RunLock(folder):
        assert f'"pid": {os.getpid()}' in (folder / LOCK_FILE).read_text()
    assert "taking over" in (err := capsys.readouterr().err) and "(pid 99999999 on elsewhere, since yesterday)" in err
    assert not (folder / LOCK_FILE).exists() and folder.is_dir()  # the folder was there before: it stays


def test_a_reward_with_no_finite_value_in_a_step_is_said_in_our_words(tmp_path, capsys):
    user = tmp_path / "nan_reward.py"
    user.write_text("def nan(prompts, completions, **kwargs):\n    return [float('nan')] * len(completions)\n")
    args = [f"output_dir={tmp_path / 'run'}", "trainer.steps=1", "trainer.eval_every=0", "data.eval_path=null",
            "trainer.prompts_per_step=2", "sampler.n=2", f"reward.functions=[{{name:'{user}:nan'}}]"]
    assert main(["train", *args]) == 0
    err = capsys.readouterr().err
    assert "step 1: no reward function gave a finite value for any of the 4 completions (NaN, inf or None everywhere)" in err
    assert "Traceback" not in err and "UserWarning" not in err
