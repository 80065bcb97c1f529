"""`grpo score`: the configured rewards on a user's own completions, before any GPU hour.

Reads JSON lines with `prompt`, `completion` and the data's answer column (`data.answer_key`,
cut by `data.answer_pattern` as in training), runs the rewards exactly as training does
(worker processes, time limit, None for no opinion), writes every row back with `reward`
(the weighted total, or null) and each function's value under its own name, and prints a
summary: mean, share of None, errors with the first message, and the slowest calls.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

from grpo_cli.config import DataConfig, GrpoConfig
from grpo_cli.data import lookup, read_jsonl, with_reference
from grpo_cli.errors import UserError
from grpo_cli.metrics import console, results_table
from grpo_cli.rewards.scoring import RewardSet, reward_columns
from grpo_cli.run_folder.admission import require_writable_file
from grpo_cli.training.runtime import load_tokenizer

CHUNK = 512  # rows per scoring pass: bounds memory, keeps the progress line moving


@dataclass
class FunctionSummary:
    values: list[float | None] = field(default_factory=list)
    errors: int = 0
    first_error: str | None = None
    call_seconds: list[float] = field(default_factory=list)

    def row(self) -> dict:
        known = [v for v in self.values if v is not None]
        slowest = sorted(self.call_seconds, reverse=True)[:3]
        return {"mean": sum(known) / len(known) if known else float("nan"),
                "none": 1 - len(known) / max(1, len(self.values)), "errors": self.errors,
                "slowest calls (s)": ", ".join(f"{s:.2f}" for s in slowest), "first error": self.first_error or ""}


def read_completions(path: str, data_cfg: DataConfig) -> list[dict]:
    """Rows with a prompt and a completion; the reference under `answer` where the row has one."""
    if not os.path.isfile(path):
        raise UserError(f"completions file {path} does not exist; pass completions=FILE.jsonl")
    rows = read_jsonl(path)
    if not rows:
        raise UserError(f"{path} has no rows")
    out = []
    for line, row in enumerate(rows, start=1):
        for key in ("prompt", "completion"):
            if not isinstance(row.get(key), str):
                raise UserError(f"{path}: row {line} has no text column {key!r} (columns: {', '.join(row)}); "
                                f"every row needs prompt and completion")
        has_reference = lookup(row, data_cfg.answer_key) is not None
        out.append(with_reference(row, data_cfg, f"{path}: row {line}") if has_reference else dict(row))
    return out


def score_file(cfg: GrpoConfig, tokenizer) -> tuple[list[dict], dict[str, FunctionSummary]]:
    """Score every row; returns the rows with their rewards and a summary per function."""
    rows = read_completions(cfg.score.completions, cfg.data)
    summaries: dict[str, FunctionSummary] = {}
    with RewardSet(cfg.reward, tokenizer) as rewards:
        for start in range(0, len(rows), CHUNK):
            chunk = rows[start:start + CHUNK]
            data = [{k: v for k, v in r.items() if k not in ("prompt", "completion")} for r in chunk]
            ids = [tokenizer(r["completion"], add_special_tokens=False)["input_ids"] for r in chunk]
            scores = rewards.score_texts([r["prompt"] for r in chunk], [r["completion"] for r in chunk],
                                         reward_columns(data, ids))
            for name in rewards.names:
                summary = summaries.setdefault(name, FunctionSummary())
                report = rewards.reports[name]
                summary.values.extend(report.values)
                summary.errors += report.errors
                summary.first_error = summary.first_error or report.first_error
                summary.call_seconds.extend(report.call_seconds)
            for row, total in zip(chunk, scores.total.tolist()):
                row["reward"] = None if math.isnan(total) else total
        for name, summary in summaries.items():
            for row, value in zip(rows, summary.values):
                row[name] = value
    return rows, summaries


def write_rows(path: str, rows: list[dict]) -> None:
    """Atomically: a partial file never replaces a previous one."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    partial = f"{path}.partial"
    with open(partial, "w", encoding="utf-8") as handle:
        for row in rows:
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")
    os.replace(partial, path)


def run(cfg: GrpoConfig, config_yaml: str, overrides: list[str]) -> int:
    """`grpo score completions=FILE.jsonl [output=OUT.jsonl]`."""
    if not cfg.score.completions:
        raise UserError("grpo score needs completions=FILE.jsonl (rows with prompt, completion and the answer column)")
    output = cfg.score.output or str(Path(cfg.score.completions).with_suffix("")) + ".scored.jsonl"
    require_writable_file(Path(output), "output")
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
