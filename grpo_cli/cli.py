"""`grpo` command line: train, eval and score.

The configuration is composed before torch is imported, so `--help` and `--cfg job` are
instant and a bad key fails in a second. A user error prints one line and exits with 2;
`--debug` (or HYDRA_FULL_ERROR=1) shows the traceback instead.
"""

from __future__ import annotations

import os
import sys
from importlib import import_module
from pathlib import Path

from grpo_cli.errors import RunStopped, UserError
from grpo_cli.run_folder.layout import OVERRIDES_FILE
from grpo_cli.run_folder.overrides import inherited, read_overrides

USAGE = """usage: grpo <command> [KEY=VALUE ...] [--cfg job] [--resolve] [--debug]

commands:
  train   fine-tune with the configured algorithm (no arguments: the embedded tiny model
          on the CPU, arithmetic task, a few minutes)
  eval    score a model on held-out prompts: accuracy (mean@k) and pass@k
          grpo eval [checkpoint=PATH] [output=FILE.json] [eval.k=8] [data=...]
  validate  check a training config, its model, data and rewards without training
            grpo validate [the same overrides as train]
  score   run the configured rewards on your own completions and summarise them
          grpo score completions=FILE.jsonl [output=OUT.jsonl] [reward=...] [data.answer_key=...]
  plot    curves from run folders, overlaid: grpo plot RUN [RUN ...] [--metrics a,b] [--out FILE.png]
  runs    one line per run folder under DIR: grpo runs [DIR]

configuration (Hydra): groups algorithm=, model=, reward=, sampler=, data=, trainer=;
any key with dotted paths (trainer.steps=50 sampler.n=16); +recipe=NAME for a whole
experiment from recipes/ (or a folder in $GRPO_RECIPE_PATH).

options:
  -m          grpo train -m a=1,2 b=x,y: one run per point of the grid, in turn, under one
              sweep folder (output_dir, default multirun/DATE_TIME), then a table and sweep.png
  --cfg job   print the composed configuration and exit (--resolve to resolve it)
  --debug     show full tracebacks
  -h, --help  this message

examples:
  grpo train
  grpo train algorithm=grpo trainer.steps=40 output_dir=runs/short
  grpo train +recipe=dapo_math sampler.n=16
  grpo eval checkpoint=runs/short/checkpoints/step_40 output=eval.json
  grpo score completions=samples.jsonl output=scored.jsonl reward=math
"""

# `grpo eval checkpoint=... output=...` and `grpo score completions=... output=...` are short
# for that command's keys.
ALIASES = {"eval": {"checkpoint": "eval.checkpoint", "output": "eval.output"},
           "score": {"completions": "score.completions", "output": "score.output"}}


# Each command's module, imported once the configuration is composed (they import torch).
COMMANDS = {name: f"grpo_cli.commands.{name}" for name in ("train", "eval", "validate", "score")}
# Commands that read run folders, not a configuration: each module's main(args) parses its own.
FOLDER_COMMANDS = {name: f"grpo_cli.commands.{name}" for name in ("plot", "runs")}


def _expand_aliases(command: str, overrides: list[str]) -> list[str]:
    aliases = ALIASES.get(command, {})
    expanded = []
    for item in overrides:
        key, sep, value = item.partition("=")
        expanded.append(f"{aliases[key]}={value}" if sep and key in aliases else item)
    return expanded


def _split_flags(args: list[str]) -> tuple[list[str], dict]:
    flags = {"multirun": False, "cfg": None, "resolve": False, "debug": os.environ.get("HYDRA_FULL_ERROR") == "1", "help": False}
    overrides: list[str] = []
    it = iter(args)
    for arg in it:
        if arg in ("-h", "--help"):
            flags["help"] = True
        elif arg in ("--cfg", "-c"):
            flags["cfg"] = next(it, "job")
        elif arg in ("-m", "--multirun"):
            flags["multirun"] = True
        elif arg == "--resolve":
            flags["resolve"] = True
        elif arg == "--debug":
            flags["debug"] = True
        elif arg.startswith("--"):
            raise SystemExit(f"error: unknown option {arg}; see grpo --help")
        else:
            overrides.append(arg)
    return overrides, flags


def _eval_overrides(overrides: list[str]) -> list[str]:
    """Put the trained run's own overrides first so that a checkpoint is scored on the data
    and rewards it was trained with."""
    checkpoint = next((o.split("=", 1)[1] for o in overrides if o.startswith("eval.checkpoint=")), None)
    if checkpoint is None:
        return overrides
    run_dir = Path(checkpoint).resolve().parent.parent
    try:
        return inherited(read_overrides(run_dir), overrides) + overrides
    except ValueError as error:
        raise UserError(f"the run folder of checkpoint={checkpoint}: {error}; repair {run_dir / OVERRIDES_FILE} "
                        f"(a YAML list of the run's KEY=VALUE overrides) or delete it and pass them yourself") from None


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help"):
        print(USAGE)
        return 0
    command, rest = args[0], args[1:]
    if command in FOLDER_COMMANDS:
        return _run_folder_command(command, rest)
    if command not in COMMANDS:
        print(f"error: unknown command {command!r}; use one of: {', '.join([*COMMANDS, *FOLDER_COMMANDS])}",
              file=sys.stderr)
        return 2
    overrides, flags = _split_flags(rest)
    if flags["help"]:
        print(USAGE)
        return 0
    try:
        if flags["multirun"]:
            if command != "train":
                raise UserError(f"-m (a sweep) is for grpo train, not grpo {command}")
            return import_module("grpo_cli.sweep").main(overrides)
        return _run(command, overrides, flags)
    except UserError as error:
        if flags["debug"]:
            raise
        print(f"error: {error}", file=sys.stderr)
        return 2
    except RunStopped as stopped:
        print(str(stopped), file=sys.stderr)
        return stopped.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


def _run_folder_command(command: str, args: list[str]) -> int:
    debug = "--debug" in args or os.environ.get("HYDRA_FULL_ERROR") == "1"
    try:
        return import_module(FOLDER_COMMANDS[command]).main([a for a in args if a != "--debug"])
    except UserError as error:
        if debug:
            raise
        print(f"error: {error}", file=sys.stderr)
        return 2


def _run(command: str, overrides: list[str], flags: dict) -> int:
    # Imported here, not at the top: Hydra takes half a second, and `grpo --help` must not wait.
    from grpo_cli.compose import compose, to_object, to_yaml

    overrides = _expand_aliases(command, overrides)
    if command == "eval":
        overrides = _eval_overrides(overrides)
    node = compose(overrides)
    if flags["cfg"]:
        print(to_yaml(node, resolve=flags["resolve"]), end="")
        return 0
    # torch and the models' libraries load from here on, after the instant `--cfg job` above
    from grpo_cli.model_source import prepare
    from grpo_cli.training.runtime import keep_freed_memory, quiet_libraries
    from grpo_cli.validation import validate

    cfg = validate(to_object(node))
    config_yaml = to_yaml(cfg, resolve=True)  # the run's record names the model as the user gave it
    quiet_libraries()
    keep_freed_memory()
    return import_module(COMMANDS[command]).run(prepare(cfg), config_yaml, overrides)


if __name__ == "__main__":
    sys.exit(main())
