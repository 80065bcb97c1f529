"""`grpo` command line: train, eval and score.

The configuration is composed before torch is imported, so `--help` and `--cfg job` are
instant and a bad key fails in a second. A user error prints one line and exits with 2;
`--debug` (or HYDRA_FULL_ERROR=1) shows the traceback instead.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

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

configuration (Hydra): groups algorithm=, model=, reward=, sampler=, data=, trainer=;
any key with dotted paths (trainer.steps=50 sampler.n=16); +recipe=NAME for a whole
experiment from recipes/ (or a folder in $GRPO_RECIPE_PATH).

options:
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


def _expand_aliases(command: str, overrides: list[str]) -> list[str]:
    aliases = ALIASES.get(command, {})
    expanded = []
    for item in overrides:
        key, sep, value = item.partition("=")
        expanded.append(f"{aliases[key]}={value}" if sep and key in aliases else item)
    return expanded


def _split_flags(args: list[str]) -> tuple[list[str], dict]:
    flags = {"cfg": None, "resolve": False, "debug": os.environ.get("HYDRA_FULL_ERROR") == "1", "help": False}
    overrides: list[str] = []
    it = iter(args)
    for arg in it:
        if arg in ("-h", "--help"):
            flags["help"] = True
        elif arg in ("--cfg", "-c"):
            flags["cfg"] = next(it, "job")
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
    import yaml

    checkpoint = next((o.split("=", 1)[1] for o in overrides if o.startswith("eval.checkpoint=")), None)
    run_overrides = Path(checkpoint or "", "..", "..", "overrides.yaml") if checkpoint else None
    if run_overrides is None or not run_overrides.is_file():
        return overrides
    given = {o.split("=", 1)[0].lstrip("+~") for o in overrides}
    inherited = [o for o in yaml.safe_load(run_overrides.read_text()) or []
                 if o.split("=", 1)[0].lstrip("+~") not in given | {"output_dir", "resume", "overwrite"}]
    return inherited + overrides


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help"):
        print(USAGE)
        return 0
    command, rest = args[0], args[1:]
    if command not in COMMANDS:
        print(f"error: unknown command {command!r}; use one of: {', '.join(COMMANDS)}", file=sys.stderr)
        return 2
    overrides, flags = _split_flags(rest)
    if flags["help"]:
        print(USAGE)
        return 0
    from grpo_cli.config import UserError
    from grpo_cli.shutdown import RunStopped

    try:
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


def _run(command: str, overrides: list[str], flags: dict) -> int:
    from grpo_cli.compose import compose, to_object, to_yaml
    from grpo_cli.config import validate

    overrides = _expand_aliases(command, overrides)
    if command == "eval":
        overrides = _eval_overrides(overrides)
    node = compose(overrides)
    if flags["cfg"]:
        print(to_yaml(node, resolve=flags["resolve"]), end="")
        return 0
    cfg = validate(to_object(node))
    from grpo_cli.runtime import quiet_libraries  # imports torch: after the instant paths

    quiet_libraries()
    return COMMANDS[command](cfg, to_yaml(cfg, resolve=True), overrides)


def train_command(cfg, config_yaml: str, overrides: list[str]) -> int:
    from grpo_cli import loop, offline
    from grpo_cli.metrics import console, results_table

    train = {"rl": loop.train, "preference": offline.train}[cfg.algorithm.objective]
    summary = train(cfg, config_yaml, overrides)
    Path(summary["run_dir"], "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    rows = {label: _headline(summary[key]) for label, key in (("base", "base"), ("trained", "final")) if summary[key]}
    if rows:
        console.print(results_table(f"held-out accuracy ({summary['steps']} steps)", rows))
    console.print(f"run folder: {summary['run_dir']}")
    if summary["checkpoint"]:
        console.print(f"checkpoint: {summary['checkpoint']}")
        console.print(f"evaluate it: grpo eval checkpoint={summary['checkpoint']}")
    return 0


def _headline(result: dict) -> dict:
    """The table's columns: task accuracy, or per-group preference accuracy."""
    keys = ("accuracy", "pass_at_k", "k", "n", "mean_length", "worst_group_accuracy", "mean_group_accuracy")
    groups = {name: v["preference_accuracy"] for name, v in result.get("groups", {}).items()}
    return {**{k: result[k] for k in keys if k in result}, **groups}


def eval_command(cfg, config_yaml: str, overrides: list[str]) -> int:
    from grpo_cli.evaluate import evaluate
    from grpo_cli.metrics import console, results_table
    from grpo_cli.runtime import run_evaluation

    if cfg.algorithm.objective == "preference" or cfg.data.group_key is not None:  # preference pairs
        from grpo_cli.offline import evaluate_pairs

        figures, weights = evaluate_pairs(cfg)
    else:
        result, weights = run_evaluation(cfg, evaluate)
        figures = result.to_dict()
    console.print(results_table(f"eval: {weights}\non {cfg.data.eval_path}", {Path(weights).name: _headline(figures)}))
    if cfg.eval.output:
        record = {**figures, "model": weights, "data": cfg.data.eval_path}
        Path(cfg.eval.output).parent.mkdir(parents=True, exist_ok=True)
        Path(cfg.eval.output).write_text(json.dumps(record, indent=2) + "\n")
        console.print(f"wrote {cfg.eval.output}")
    return 0


def score_command(cfg, config_yaml: str, overrides: list[str]) -> int:
    from grpo_cli.config import UserError
    from grpo_cli.metrics import console, results_table
    from grpo_cli.runtime import load_tokenizer
    from grpo_cli.score import score_file, write_rows

    if not cfg.score.completions:
        raise UserError("grpo score needs completions=FILE.jsonl (rows with prompt, completion and the answer column)")
    output = cfg.score.output or str(Path(cfg.score.completions).with_suffix("")) + ".scored.jsonl"
    tokenizer = load_tokenizer(cfg.model.name_or_path, cfg.model.trust_remote_code)  # token counts for length rewards
    rows, summaries = score_file(cfg, tokenizer)
    write_rows(output, rows)
    table = {name: summary.row() for name, summary in summaries.items()}
    totals = [row["reward"] for row in rows if row["reward"] is not None]
    table["reward (weighted)"] = {"mean": sum(totals) / len(totals) if totals else float("nan"),
                                  "none": 1 - len(totals) / len(rows), "errors": "", "slowest calls (s)": "",
                                  "first error": ""}
    console.print(results_table(f"rewards on {len(rows)} completions from {cfg.score.completions}", table))
    console.print(f"wrote {output}")
    return 0


def validate_command(cfg, config_yaml: str, overrides: list[str]) -> int:
    from grpo_cli.metrics import console
    from grpo_cli.runtime import dry_run

    for line in dry_run(cfg, config_yaml):
        console.print(line)
    console.print("ok: grpo train with these overrides would start")
    return 0


COMMANDS = {"train": train_command, "eval": eval_command, "score": score_command, "validate": validate_command}


if __name__ == "__main__":
    sys.exit(main())
