"""The offline preference run: DPO, IPO, GR-DPO and GR-IPO on pairs (preference.py).

The objectives are docs/algorithms.md §9. One step reads top to bottom: take a mini-batch of
pairs, compute each pair's loss and from them the weights (the new α for the group-robust
methods), back-propagate the weighted sum, step, log. With more than one micro-batch the
weights come from a gradient-free first pass, since α must be updated from the whole
mini-batch before the policy step (docs/algorithms.md §9.4). The reference log-probs are
computed once, before the first step, and cached (docs/algorithms.md §9.1); π_ref is the
model training starts from, the paper's SFT model (the shipped tiny model already is one for
its task). α is trainer state: logged every step, checkpointed and restored. One process only; driver.py runs the steps.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import ClassVar

import torch

from grpo_cli.algorithms.preference import (
    WEIGHTINGS,
    GroupState,
    PairLogprobs,
    pair_losses,
    ranked_above,
)
from grpo_cli.config import GrpoConfig
from grpo_cli.data import PairSet, load_pairs
from grpo_cli.errors import UserError
from grpo_cli.metrics import StepResult
from grpo_cli.training.clock import step_indices
from grpo_cli.training.distributed import Ranks
from grpo_cli.training.learner import Learner
from grpo_cli.training.runtime import DTYPES, load_tokenizer, pick_device
from grpo_cli.types import Sequences, left_pad


@dataclass
class PairEvaluation:
    """Preference accuracy (h > MARGIN_TIE: chosen above rejected relative to the reference) per group,
    the worst group's and their mean; `groups` maps a name to its figures."""

    groups: dict
    worst_group_accuracy: float
    mean_group_accuracy: float

    def to_dict(self) -> dict:
        return asdict(self)

    def record(self) -> dict[str, float]:
        out = {"eval/worst_group_accuracy": self.worst_group_accuracy, "eval/mean_group_accuracy": self.mean_group_accuracy}
        out.update({f"eval/{name}/preference_accuracy": v["preference_accuracy"] for name, v in self.groups.items()})
        return out


@dataclass
class PreferenceJob:
    """The driver's job for the preference objective. ref_train / ref_held_out: [P, 2] cached
    reference sums (chosen, rejected)."""

    cfg: GrpoConfig
    tokenizer: object
    train: PairSet
    held_out: PairSet | None
    learner: Learner
    ref_train: torch.Tensor
    ref_held_out: torch.Tensor | None
    state: GroupState
    ranks: Ranks
    # At step 0 the policy is the reference: every margin is 0, so there is nothing to measure.
    evaluates_base: ClassVar[bool] = False

    def step(self, step: int, samples: int = 0) -> StepResult:
        """samples: completion samples are an RL notion; a pair step has none."""
        return StepResult(preference_step(self, step))

    def evaluate(self, step: int) -> PairEvaluation | None:
        """The held-out pairs' group figures for the current policy."""
        if self.held_out is None:
            return None
        sums = sums_of(self.learner, self.learner.model, self.held_out, list(range(len(self.held_out))),
                       self.tokenizer.pad_token_id)
        return group_figures(sums, self.ref_held_out, self.held_out)

    def state_dict(self) -> dict:
        return {"alpha": self.state.alpha, "groups": self.train.group_names}

    def load_state_dict(self, state: dict) -> None:
        if state.get("groups") != self.train.group_names:
            raise UserError(f"the checkpoint was trained on groups {state.get('groups')}, this data has "
                            f"{self.train.group_names}; resume with the data it was trained on, or drop resume")
        self.state.alpha = state["alpha"]

    def close(self) -> None:
        """Nothing runs beside the learner."""


def pair_batch(pairs: PairSet, index: list[int], pad_id: int) -> Sequences:
    """Rows 0..b-1 the chosen responses, b..2b-1 the rejected: prompt left-padded, response
    right-padded, loss_mask on the response tokens ([2b, P + R] and [2b, R])."""
    prompt_ids, prompt_mask = left_pad([pairs.prompt_ids[i] for i in index] * 2, pad_id)
    responses = [pairs.chosen_ids[i] for i in index] + [pairs.rejected_ids[i] for i in index]
    width = max(len(r) for r in responses)
    response_ids = torch.full((len(responses), width), pad_id, dtype=torch.long)
    for row, ids in enumerate(responses):
        response_ids[row, :len(ids)] = torch.tensor(ids)
    response_mask = (torch.arange(width)[None, :] < torch.tensor([len(r) for r in responses])[:, None]).long()
    return Sequences(input_ids=torch.cat([prompt_ids, response_ids], 1), attention_mask=torch.cat([prompt_mask, response_mask], 1),
                     loss_mask=response_mask.float(), sampler_logprobs=torch.zeros(response_mask.shape))


def response_sums(learner: Learner, model, micro: Sequences) -> torch.Tensor:
    """Σ over response tokens of log π (T = 1) of a micro-batch on the device, [rows]; with
    gradients when the model has them on."""
    return (learner.forward_logprobs(model, micro, 1.0)[0] * micro.loss_mask).sum(-1)


@torch.no_grad()
def sums_of(learner: Learner, model, pairs: PairSet, index: list[int], pad_id: int) -> torch.Tensor:
    """[len(index), 2] (chosen, rejected) sums of the pairs `index` under `model`, in blocks of
    trainer.micro_batch_size rows, each through the learner's micro-batches."""
    block = max(1, learner.cfg.trainer.micro_batch_size // 2)
    out = []
    for start in range(0, len(index), block):
        batch = pair_batch(pairs, index[start:start + block], pad_id)
        out.append(micro_batch_sums(learner, model, list(learner.micro_batches(batch)), len(batch)).view(2, -1).T)
    return torch.cat(out)


@torch.no_grad()
def micro_batch_sums(learner: Learner, model, micros: list, rows: int) -> torch.Tensor:
    """[rows] response sums of a batch given as the learner's (row index, micro-batch) pairs."""
    sums = torch.zeros(rows)
    for index, micro in micros:
        sums[index] = response_sums(learner, model, micro).float().cpu()
    return sums


def as_pairs(sums: torch.Tensor, ref: torch.Tensor, groups: torch.Tensor) -> PairLogprobs:
    chosen, rejected = sums.view(2, -1)
    return PairLogprobs(chosen=chosen, rejected=rejected, ref_chosen=ref[:, 0].to(sums), ref_rejected=ref[:, 1].to(sums),
                        groups=groups.to(sums.device))


def preference_step(run: PreferenceJob, step: int) -> dict[str, float]:
    """One mini-batch of trainer.prompts_per_step pairs: weights, policy step, metrics.

    When the mini-batch is one micro-batch, one pass gives the losses and their gradient. Else
    a gradient-free pass gives every pair's loss, α (from the whole mini-batch, docs/algorithms.md §9.4) and
    ∂loss/∂sum of each response; each micro-batch then back-propagates its sums times those
    coefficients, which is the same gradient however the rows were split."""
    cfg, p, learner = run.cfg, run.cfg.algorithm.preference, run.learner
    index = step_indices(len(run.train), cfg.trainer.prompts_per_step, step, cfg.seed)
    groups, ref = run.train.groups[index], run.ref_train[index]
    batch = pair_batch(run.train, index, run.tokenizer.pad_token_id)
    micros = list(learner.micro_batches(batch))
    learner.zero_grad()
    if len(micros) == 1:
        rows, micro = micros[0]  # rows[i]: the batch row of the micro-batch's row i (packing sorts them)
        pairs = as_pairs(response_sums(learner, learner.model, micro)[torch.argsort(rows.to(learner.device))], ref, groups)
        losses = pair_losses(pairs, p.pair_loss, p.beta)
        weights, alpha = WEIGHTINGS[p.group_weighting](losses.detach(), pairs.groups, run.state, p.eta_alpha)
        learner.backward((weights.to(losses) * losses).sum())
        return finish_step(run, losses.detach().float().cpu(), pairs.margins().detach().float().cpu(), groups, alpha)
    sums = micro_batch_sums(learner, learner.model, micros, len(batch)).requires_grad_(True)
    pairs = as_pairs(sums, ref, groups)
    losses = pair_losses(pairs, p.pair_loss, p.beta)
    weights, alpha = WEIGHTINGS[p.group_weighting](losses.detach(), pairs.groups, run.state, p.eta_alpha)
    coefficients = torch.autograd.grad((weights.to(losses) * losses).sum(), sums)[0]
    for rows, micro in micros:
        learner.backward((coefficients[rows].to(learner.device) * response_sums(learner, learner.model, micro)).sum())
    return finish_step(run, losses.detach(), pairs.margins().detach(), groups, alpha)


def finish_step(run: PreferenceJob, per_pair, margins, groups, alpha) -> dict[str, float]:
    """Step (unless non-finite), keep α, and the metrics of the step."""
    update = run.learner.apply_gradients(loss_finite=bool(torch.isfinite(per_pair).all()))
    if update["update/nonfinite"] == 0.0:
        run.state.alpha = alpha.detach().double().cpu()
    metrics = {"loss/total": float(per_pair.mean()), "grad_norm": update["grad_norm"],
               "lr": update["lr"], "update/nonfinite": update["update/nonfinite"],
               "rewards/margin": run.cfg.algorithm.preference.beta * float(margins.mean()),
               "rewards/accuracy": float(ranked_above(margins).float().mean())}
    for g, name in enumerate(run.train.group_names):
        metrics[f"alpha/{name}"] = float(run.state.alpha[g])
        mine = groups == g
        if mine.any():
            metrics[f"group/{name}/loss"] = float(per_pair[mine].mean())
            metrics[f"group/{name}/accuracy"] = float(ranked_above(margins[mine]).float().mean())
    return metrics


def group_figures(sums: torch.Tensor, ref: torch.Tensor, pairs: PairSet) -> PairEvaluation:
    """Preference accuracy per group of `pairs`; sums, ref: [P, 2]."""
    correct = ranked_above((sums[:, 0] - ref[:, 0]) - (sums[:, 1] - ref[:, 1]))
    groups = {name: {"preference_accuracy": float(correct[pairs.groups == g].float().mean()),
                     "pairs": int((pairs.groups == g).sum())}
              for g, name in enumerate(pairs.group_names) if (pairs.groups == g).any()}
    accuracies = [v["preference_accuracy"] for v in groups.values()]
    return PairEvaluation(groups, worst_group_accuracy=min(accuracies), mean_group_accuracy=sum(accuracies) / len(accuracies))


def build(cfg: GrpoConfig, policy_path: str, ranks: Ranks | None = None) -> PreferenceJob:
    """Tokenizer, pairs, learner, and the reference sums computed once from the base model."""
    device, dtype = pick_device(cfg.device), DTYPES[cfg.model.dtype]
    torch.manual_seed(cfg.seed)
    tokenizer = load_tokenizer(policy_path, cfg.model.trust_remote_code)
    train_pairs = load_pairs(cfg.data.path, cfg.data.split, cfg.data, tokenizer)
    held_out = None if cfg.data.eval_path is None else load_pairs(
        cfg.data.eval_path, cfg.data.eval_split, cfg.data, tokenizer, group_names=train_pairs.group_names)
    learner = Learner(cfg, device, dtype, cfg.trainer.steps, policy_path=policy_path, needs_reference=True)
    with learner.reference_model() as reference:
        cached = [None if pairs is None else sums_of(learner, reference, pairs, list(range(len(pairs))),
                                                     tokenizer.pad_token_id)
                  for pairs in (train_pairs, held_out)]
    learner.drop_reference()  # cached: the reference model is not needed again
    return PreferenceJob(cfg, tokenizer, train_pairs, held_out, learner, cached[0], cached[1],
                         GroupState.uniform(train_pairs.sizes()), ranks or Ranks())
