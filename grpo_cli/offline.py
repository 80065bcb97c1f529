"""The offline preference run: DPO, IPO, GR-DPO and GR-IPO on pairs (preference.py, §6).

One step reads top to bottom: take a mini-batch of pairs, compute each pair's loss and from
them the weights (the new α for the group-robust methods), back-propagate the weighted sum,
step, log. With more than one micro-batch the weights come from a gradient-free first pass,
since α must be updated from the whole mini-batch before the policy step (§6.4). The
reference log-probs are computed once, before the first step, and cached (§6.1); π_ref is the
model training starts from, the paper's SFT model (the shipped tiny model already is one for
its task). α is trainer state: logged every step, checkpointed and restored. One process only.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM

from grpo_cli import checkpoint
from grpo_cli.config import UserError
from grpo_cli.data import PairSet, load_pairs, lookup, step_indices
from grpo_cli.learner import Learner
from grpo_cli.logprobs import sequence_logprobs
from grpo_cli.preference import WEIGHTINGS, GroupState, PairLogprobs, pair_losses
from grpo_cli.sampler.base import left_pad
from grpo_cli.types import TrainBatch


@dataclass
class PreferenceRun:
    """ref_train / ref_held_out: [P, 2] cached reference sums (chosen, rejected)."""

    cfg: object
    tokenizer: object
    train: PairSet
    held_out: PairSet | None
    learner: Learner
    ref_train: torch.Tensor
    ref_held_out: torch.Tensor | None
    state: GroupState


def pair_batch(pairs: PairSet, index: list[int], pad_id: int) -> TrainBatch:
    """Rows 0..b-1 the chosen responses, b..2b-1 the rejected: prompt left-padded, response
    right-padded, loss_mask on the response tokens ([2b, P + R] and [2b, R])."""
    prompt_ids, prompt_mask = left_pad([pairs.prompt_ids[i] for i in index] * 2, pad_id)
    responses = [pairs.chosen_ids[i] for i in index] + [pairs.rejected_ids[i] for i in index]
    width = max(len(r) for r in responses)
    response_ids = torch.full((len(responses), width), pad_id, dtype=torch.long)
    for row, ids in enumerate(responses):
        response_ids[row, :len(ids)] = torch.tensor(ids)
    response_mask = (torch.arange(width)[None, :] < torch.tensor([len(r) for r in responses])[:, None]).long()
    return TrainBatch(input_ids=torch.cat([prompt_ids, response_ids], 1), attention_mask=torch.cat([prompt_mask, response_mask], 1),
                      loss_mask=response_mask.float(), advantages=torch.zeros(response_mask.shape),
                      sampler_logprobs=torch.zeros(response_mask.shape))


def response_sums(model, batch: TrainBatch, device: torch.device, precision) -> torch.Tensor:
    """Σ over response tokens of log π (T = 1), [2b]; with gradients when the model has them on."""
    moved = TrainBatch(**{k: None if v is None else v.to(device) for k, v in vars(batch).items()})
    with precision:
        logprobs = sequence_logprobs(model, moved, 1.0)[0]
    return (logprobs * moved.loss_mask).sum(-1)


@torch.no_grad()
def sums_of(model, pairs: PairSet, index: list[int], pad_id: int, device, precision_fn, per_call: int) -> torch.Tensor:
    """[len(index), 2] (chosen, rejected) sums of the pairs `index`, per_call pairs at a time."""
    out = []
    for start in range(0, len(index), per_call):
        sums = response_sums(model, pair_batch(pairs, index[start:start + per_call], pad_id), device, precision_fn())
        out.append(sums.float().cpu().view(2, -1).T)
    return torch.cat(out)


def as_pairs(sums: torch.Tensor, ref: torch.Tensor, groups: torch.Tensor) -> PairLogprobs:
    chosen, rejected = sums.view(2, -1)
    return PairLogprobs(chosen=chosen, rejected=rejected, ref_chosen=ref[:, 0].to(sums), ref_rejected=ref[:, 1].to(sums),
                        groups=groups.to(sums.device))


def preference_step(run: PreferenceRun, step: int) -> dict[str, float]:
    """One mini-batch of trainer.prompts_per_step pairs: weights, policy step, metrics."""
    cfg, a, learner = run.cfg, run.cfg.algorithm, run.learner
    index = step_indices(len(run.train), cfg.trainer.prompts_per_step, step, cfg.seed)
    groups, ref = run.train.groups[index], run.ref_train[index]
    per_micro = max(1, cfg.trainer.micro_batch_size // 2)
    chunks = [list(range(s, min(s + per_micro, len(index)))) for s in range(0, len(index), per_micro)]
    pad = run.tokenizer.pad_token_id
    weights = None
    if len(chunks) > 1:  # α first, from the whole mini-batch
        detached = sums_of(learner.model, run.train, index, pad, learner.device, learner._precision, per_micro)
        losses = pair_losses(as_pairs(detached.T.reshape(-1), ref, groups), a.pair_loss, a.beta)
        weights, alpha = WEIGHTINGS[a.group_weighting](losses, groups, run.state, a.eta_alpha)
    learner.optimizer.zero_grad(set_to_none=True)
    per_pair, margins = torch.zeros(len(index)), torch.zeros(len(index))
    for chunk in chunks:
        sums = response_sums(learner.model, pair_batch(run.train, [index[i] for i in chunk], pad), learner.device,
                             learner._precision())
        pairs = as_pairs(sums, ref[chunk], groups[chunk])
        losses = pair_losses(pairs, a.pair_loss, a.beta)
        if weights is None:
            weights, alpha = WEIGHTINGS[a.group_weighting](losses.detach(), pairs.groups, run.state, a.eta_alpha)
        (weights[chunk].to(losses) * losses).sum().backward()
        per_pair[chunk], margins[chunk] = losses.detach().float().cpu(), pairs.margins().detach().float().cpu()
    return finish_step(run, per_pair, margins, groups, alpha)


def finish_step(run: PreferenceRun, per_pair, margins, groups, alpha) -> dict[str, float]:
    """Clip, step (unless non-finite), keep α, and the metrics of the step."""
    learner, a = run.learner, run.cfg.algorithm
    grad_norm = float(torch.nn.utils.clip_grad_norm_(learner.model.parameters(), run.cfg.trainer.max_grad_norm))
    finite = math.isfinite(grad_norm) and bool(torch.isfinite(per_pair).all())
    if finite:
        learner.optimizer.step()
        run.state.alpha = alpha.detach().double().cpu()
    learner.optimizer.zero_grad(set_to_none=True)
    learner.scheduler.step()
    metrics = {"loss": float(per_pair.mean()), "loss/total": float(per_pair.mean()), "grad_norm": grad_norm,
               "lr": learner.scheduler.get_last_lr()[0], "update/nonfinite": 0.0 if finite else 1.0,
               "rewards/margin": a.beta * float(margins.mean()), "rewards/accuracy": float((margins > 0).float().mean())}
    for g, name in enumerate(run.train.group_names):
        metrics[f"alpha/{name}"] = float(run.state.alpha[g])
        mine = groups == g
        if mine.any():
            metrics[f"group/{name}/loss"] = float(per_pair[mine].mean())
            metrics[f"group/{name}/accuracy"] = float((margins[mine] > 0).float().mean())
    return metrics


def group_figures(sums: torch.Tensor, ref: torch.Tensor, pairs: PairSet) -> dict:
    """Preference accuracy (h > 0: chosen above rejected relative to the reference) per group,
    the worst group's and their mean; sums, ref: [P, 2]."""
    correct = ((sums[:, 0] - ref[:, 0]) - (sums[:, 1] - ref[:, 1])) > 0
    groups = {name: {"preference_accuracy": float(correct[pairs.groups == g].float().mean()),
                     "pairs": int((pairs.groups == g).sum())}
              for g, name in enumerate(pairs.group_names) if (pairs.groups == g).any()}
    accuracies = [v["preference_accuracy"] for v in groups.values()]
    return {"groups": groups, "worst_group_accuracy": min(accuracies), "mean_group_accuracy": sum(accuracies) / len(accuracies)}


def group_accuracy(run: PreferenceRun) -> dict | None:
    """The held-out pairs' group_figures for the current policy."""
    if run.held_out is None:
        return None
    learner, pairs = run.learner, run.held_out
    sums = sums_of(learner.model, pairs, list(range(len(pairs))), run.tokenizer.pad_token_id, learner.device,
                   learner._precision, max(1, run.cfg.trainer.micro_batch_size // 2))
    return group_figures(sums, run.ref_held_out, pairs)


def eval_record(result: dict | None) -> dict[str, float]:
    if result is None:
        return {}
    out = {"eval/worst_group_accuracy": result["worst_group_accuracy"], "eval/mean_group_accuracy": result["mean_group_accuracy"]}
    out.update({f"eval/{name}/preference_accuracy": v["preference_accuracy"] for name, v in result["groups"].items()})
    return out


def build(cfg, policy_path: str) -> PreferenceRun:
    """Tokenizer, pairs, learner, and the reference sums computed once from the base model."""
    from grpo_cli.runtime import DTYPES, load_tokenizer, pick_device

    device, dtype = pick_device(cfg.device), DTYPES[cfg.model.dtype]
    torch.manual_seed(cfg.seed)
    tokenizer = load_tokenizer(policy_path, cfg.model.trust_remote_code)
    train_pairs = load_pairs(cfg.data.path, cfg.data.split, cfg.data, tokenizer)
    held_out = None if cfg.data.eval_path is None else load_pairs(
        cfg.data.eval_path, cfg.data.eval_split, cfg.data, tokenizer, group_names=train_pairs.group_names)
    learner = Learner(cfg, device, dtype, cfg.trainer.steps, policy_path=policy_path)
    reference = AutoModelForCausalLM.from_pretrained(cfg.model.name_or_path, dtype=dtype,
                                                     trust_remote_code=cfg.model.trust_remote_code).to(device).eval()
    per_call = max(1, cfg.trainer.micro_batch_size // 2)
    cached = [None if pairs is None else sums_of(reference, pairs, list(range(len(pairs))), tokenizer.pad_token_id,
                                                 device, learner._precision, per_call)
              for pairs in (train_pairs, held_out)]
    del reference
    return PreferenceRun(cfg, tokenizer, train_pairs, held_out, learner, cached[0], cached[1],
                         GroupState.uniform(train_pairs.sizes()))


def save(run: PreferenceRun, step: int) -> Path:
    state = {"learner": run.learner.state_dict(), "alpha": run.state.alpha, "groups": run.train.group_names}
    return checkpoint.save(run.cfg.output_dir, step, run.learner.export(), run.tokenizer, state,
                           keep_last=run.cfg.trainer.keep_last)


def restore(run: PreferenceRun, resume_from: Path) -> int:
    state = checkpoint.load_state(resume_from)
    if state.get("groups") != run.train.group_names:
        raise UserError(f"{resume_from} was trained on groups {state.get('groups')}, this data has {run.train.group_names}")
    run.learner.load_state_dict(state["learner"])
    run.state.alpha = state["alpha"]
    checkpoint.restore_rng(state["rng"])
    return state["step"]


def train(cfg, config_yaml: str, overrides: list[str]) -> dict:
    """The run: resume or start, step, evaluate the held-out groups, checkpoint, summarise."""
    import os

    from grpo_cli.loop import check_nonfinite, is_due
    from grpo_cli.metrics import MetricsFile, ProgressBar
    from grpo_cli.runtime import check_run_dir, pick_device, prepare_run_dir
    from grpo_cli.shutdown import RunStopped, StopRequest

    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise UserError(f"algorithm={cfg.algorithm.name} trains in one process; start it without torchrun")
    pick_device(cfg.device)
    resume_from = checkpoint.find_resume_point(cfg.output_dir, cfg.resume)
    check_run_dir(cfg, config_yaml)
    run = build(cfg, str(resume_from) if resume_from else cfg.model.name_or_path)
    run_dir = prepare_run_dir(cfg, config_yaml, overrides)
    start = restore(run, resume_from) if resume_from else 0
    final, saved, nonfinite = None, resume_from, 0
    with MetricsFile(run_dir / "metrics.jsonl", keep_through=start if resume_from else -1) as metrics, \
            ProgressBar(total=cfg.trainer.steps, start=start) as bar, StopRequest() as stop:
        for step in range(start + 1, cfg.trainer.steps + 1):
            record = {"step": step, **preference_step(run, step - 1)}
            if is_due(cfg.trainer.eval_every, step) or step == cfg.trainer.steps:
                final = group_accuracy(run)
                record.update(eval_record(final))
            metrics.write(record)
            bar.update(step, record)
            if is_due(cfg.trainer.save_every, step) or step == cfg.trainer.steps or stop.received is not None:
                saved = save(run, step)
            nonfinite = nonfinite + 1 if record["update/nonfinite"] > 0 else 0
            check_nonfinite(cfg, step, nonfinite, record, saved)
            if stop.received is not None:
                raise RunStopped(f"{stop.received.name}: stopped after step {step}; checkpoint: {saved}\n"
                                 f"resume with: grpo train output_dir={cfg.output_dir} resume=auto (and the same overrides)",
                                 exit_code=128 + int(stop.received))
    return {"run_dir": str(run_dir), "checkpoint": None if saved is None else str(saved), "base": None,
            "final": final, "steps": cfg.trainer.steps}


def evaluate_pairs(cfg) -> tuple[dict, str]:
    """`grpo eval` on preference pairs: each group's preference accuracy of the checkpoint
    relative to the reference (model.name_or_path) and, where every row carries an answer,
    each group's task accuracy over eval.k samples of its prompts."""
    from grpo_cli.checkpoint import is_checkpoint
    from grpo_cli.runtime import DTYPES, load_tokenizer, pick_device

    weights = cfg.eval.checkpoint or cfg.model.name_or_path
    if cfg.eval.checkpoint and not is_checkpoint(weights):
        raise UserError(f"checkpoint={weights} is not a checkpoint folder (needs config.json and *.safetensors)")
    if cfg.data.eval_path is None:
        raise UserError("no held-out pairs: set data.eval_path (or pick a data group that has one)")
    device, dtype = pick_device(cfg.device), DTYPES[cfg.model.dtype]
    tokenizer = load_tokenizer(weights, cfg.model.trust_remote_code)
    pairs = load_pairs(cfg.data.eval_path, cfg.data.eval_split, cfg.data, tokenizer)
    every = list(range(len(pairs)))
    sums = [sums_of(AutoModelForCausalLM.from_pretrained(path, dtype=dtype, trust_remote_code=cfg.model.trust_remote_code)
                    .to(device).eval(), pairs, every, tokenizer.pad_token_id, device, contextlib.nullcontext, 16)
            for path in (weights, cfg.model.name_or_path)]
    result = group_figures(sums[0], sums[1], pairs)
    if all(lookup(row, cfg.data.answer_key) is not None for row in pairs.examples):
        for name, accuracy in task_accuracy(cfg, weights, tokenizer, pairs, device).items():
            result["groups"][name]["task_accuracy"] = accuracy
    return result, weights


def task_accuracy(cfg, weights: str, tokenizer, pairs: PairSet, device) -> dict[str, float]:
    """Mean correctness of eval.k samples of every pair's prompt, per group."""
    from grpo_cli.data import PromptSet, with_reference
    from grpo_cli.evaluate import sample_and_score
    from grpo_cli.loop import derived_seed
    from grpo_cli.rewards.scoring import RewardSet
    from grpo_cli.runtime import make_sampler, sampling_params

    examples = [with_reference(row, cfg.data, cfg.data.eval_path) for row in pairs.examples]
    prompts = PromptSet(pairs.prompt_ids, pairs.prompts, examples, 0, messages=pairs.messages)
    _, params = sampling_params(cfg)
    sampler = make_sampler(cfg, weights, tokenizer, device)
    try:
        with RewardSet(replace(cfg.reward, process=None)) as rewards:
            samples = sample_and_score(sampler, prompts, rewards, params, seed=derived_seed(cfg.seed, 0, 2),
                                       rows=range(len(prompts)))
    finally:
        sampler.close()
    correct = torch.tensor(samples.correct, dtype=torch.float) / params.n
    return {name: float(correct[pairs.groups == g].mean())
            for g, name in enumerate(pairs.group_names) if (pairs.groups == g).any()}
