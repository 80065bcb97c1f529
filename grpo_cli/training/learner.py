"""The learner: policy model, optional frozen reference, AdamW, schedule, and the update.

Log-probs are recomputed in fp32 at the sampling temperature (docs/algorithms.md §1.2). The
update runs μ epochs over shuffled mini-batches (docs/algorithms.md §2.4); each mini-batch is one optimizer step
whose loss normalisers are counted over the whole mini-batch before it is split into
micro-batches, so the accumulated gradient equals the full-batch gradient (docs/algorithms.md §1.4).
The learner runs whatever loss it is handed (MicroBatchLoss); what that loss needs and
measures is the objective's business (algorithms/rl_loss.py for RL, offline.py for pairs).

Under torchrun the policy and reference are sharded with FSDP2 (distributed.py); every rank
holds the global batch, computes the normalisers on it, and back-propagates its own share.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import torch

from grpo_cli.algorithms.stage_io import LossNormalisers, LossOutput
from grpo_cli.config import GrpoConfig
from grpo_cli.model_source import load_causal_lm
from grpo_cli.run_folder.layout import ADAPTER_DIR
from grpo_cli.training import distributed, lora
from grpo_cli.training.distributed import Ranks
from grpo_cli.training.logprobs import sequence_logprobs
from grpo_cli.types import Sequences, TrainBatch


class MicroBatchLoss(Protocol):
    """An objective's loss as the learner runs it (algorithms.rl_loss.RLLoss for RL):
    normalisers counted over a mini-batch, then per micro-batch its share of the loss and of
    each metric, from ℓ [b, C] with gradient and the entropy [b, C]. Metrics named in
    max_keys are reduced by max, every other one adds up."""

    max_keys: frozenset[str]

    def normalisers(self, batch: TrainBatch) -> LossNormalisers: ...

    def __call__(self, micro: TrainBatch, logprobs: torch.Tensor, entropy: torch.Tensor,
                 norm: LossNormalisers) -> LossOutput: ...


# trainer.schedule: the learning-rate multiplier after warm-up, from progress in [0, 1+].
SCHEDULES = {
    "constant": lambda progress: 1.0,
    "linear": lambda progress: max(0.0, 1.0 - progress),
    "cosine": lambda progress: 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress))),
}


def schedule_factor(step: int, warmup: int, total: int, kind: str) -> float:
    """Learning-rate multiplier after `step` optimizer steps: linear warm-up, then the schedule."""
    if warmup > 0 and step < warmup:
        return (step + 1) / warmup
    return SCHEDULES[kind]((step - warmup) / max(1, total - warmup))


def length_runs(lengths: torch.Tensor, budget: int) -> list[slice]:
    """Cut rows sorted longest first ([n] lengths) into consecutive runs whose rows x first
    (longest) length stays within `budget` (a longer row runs alone): the fewest runs the
    budget allows, and of the cuts into that many, the one with the fewest padded positions
    (the sum of rows x longest). Cutting greedily, as full as the budget allows, gives the same
    count but can leave a wide spread of lengths in one run: on the embedded default's batches
    at 3,072 tokens (three runs) 14% of the positions were padding that way, 10% this way.

    Dynamic programming over the run count m: best[j] is the least padding of the first j rows
    in m runs, from best of m - 1 runs plus the last run, of `size` rows ending at j; each m is
    one min over an [n + 1, width] matrix, width the most rows the budget lets one run hold
    (so memory grows with the rows, not their square). Sizes are tried longest first, so ties
    go to the cut whose last run starts earliest."""
    n = len(lengths)
    if n == 0:
        return []
    width = min(n, max(1, budget // max(1, int(lengths.min()))))
    size = torch.arange(width, 0, -1)[None, :]
    first = torch.arange(n + 1)[:, None] - size  # [n + 1, width]: the last run's first row
    padded = (size * lengths[first.clamp(min=0)]).double()
    run = torch.where((first >= 0) & ((padded <= budget) | (size == 1)), padded, math.inf)
    best = torch.full((n + 1,), math.inf, dtype=torch.float64)
    best[0] = 0.0
    starts = []  # per run count: where the last run of the best cut of the first j rows begins
    while math.isinf(best[n]):
        best, pick = (best[first.clamp(min=0)] + run).min(1)
        starts.append(first.gather(1, pick[:, None]).squeeze(1))
    cuts = [n]
    for start in reversed(starts):
        cuts.append(int(start[cuts[-1]]))
    cuts.reverse()
    return [slice(a, b) for a, b in zip(cuts, cuts[1:])]


def disable_dropout(model):
    """Dropout off everywhere: ℓ, ℓ_old and the sampler's log-probs must come from one function
    (TRL and verl do the same for RL)."""
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
        if isinstance(getattr(module, "attention_dropout", None), float):
            module.attention_dropout = 0.0
    return model


@dataclass
class Export:
    """What a checkpoint holds of the policy: Hugging Face weights that from_pretrained loads
    (LoRA merged in) and, with LoRA, the adapters a resumed run continues from."""

    model: object  # the transformers model: its config, and its weights when `weights` is None
    weights: dict | None = None  # whole weights under the base model's names
    adapter_model: object | None = None  # the PEFT model
    adapter_weights: dict | None = None  # its whole state dict (save_pretrained keeps the adapters)

    def write(self, folder: Path) -> None:
        if self.weights is not None:
            self.weights = {k: v for k, v in self.weights.items() if k not in tied_duplicates(self.model)}
        self.model.save_pretrained(folder, safe_serialization=True, state_dict=self.weights)
        if self.adapter_model is not None:
            self.adapter_model.save_pretrained(folder / ADAPTER_DIR, state_dict=self.adapter_weights)


def tied_duplicates(model) -> set[str]:
    """Names under which an already-named parameter appears again (tied embeddings): a
    gathered state dict holds a copy under each, save_pretrained of the model itself one."""
    seen, duplicates = set(), set()
    for name, parameter in model.named_parameters(remove_duplicate=False):
        if id(parameter) in seen:
            duplicates.add(name)
        seen.add(id(parameter))
    return duplicates


class Learner:
    """The public face: `policy_logprobs` / `reference_logprobs` (without gradient), `update`
    (μ epochs of optimizer steps of a MicroBatchLoss on a TrainBatch), and for objectives with their own loss `forward_logprobs`,
    `reference_model`, `backward` and `apply_gradients`; `weights` / `export` for the sampler
    and checkpoints; `state_dict` / `load_state_dict` to resume."""

    def __init__(self, cfg: GrpoConfig, device: torch.device, dtype: torch.dtype, total_optimizer_steps: int,
                 policy_path: str | None = None, ranks: Ranks = Ranks(), needs_reference: bool = False):
        """The policy loads from `policy_path` (a checkpoint on resume); the reference, when the
        objective needs one, always from the configured base model. With LoRA the base always
        loads from the configured model, the adapters from the checkpoint, and the reference
        is the policy with its adapters off."""
        self.cfg = cfg
        self.device = device
        self.ranks = ranks
        self.uses_lora = cfg.model.lora.rank > 0
        self.mixed = cfg.model.fp32_master and dtype == torch.bfloat16
        base = self._load(cfg.model.name_or_path if self.uses_lora else policy_path or cfg.model.name_or_path,
                          torch.float32 if self.mixed else dtype)
        if cfg.model.gradient_checkpointing:
            base.gradient_checkpointing_enable()
            base.enable_input_require_grads()  # frozen embeddings must still pass gradients on to LoRA
        self.model = disable_dropout(lora.attach(base, cfg.model.lora, policy_path) if self.uses_lora else base)
        self.lora_scalings = lora.scalings(self.model) if self.uses_lora else {}
        self.model.train()  # for gradient checkpointing; dropout is off
        self.reference = None
        if needs_reference and not self.uses_lora:
            self.reference = self._load(cfg.model.name_or_path, dtype).eval().requires_grad_(False)
        if ranks.active:
            distributed.shard(self.model)
            if self.reference is not None:
                distributed.shard(self.reference)
        t = cfg.trainer
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=t.lr, betas=(t.adam_beta1, t.adam_beta2),
                                           weight_decay=t.weight_decay)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda s: schedule_factor(s, t.warmup_steps, total_optimizer_steps, t.schedule))
        self.temperature = cfg.sampler.temperature
        # Recomputed layers would append to the shared prompt's KV cache a second time.
        self.share_prompts = cfg.trainer.share_prompts and not cfg.model.gradient_checkpointing

    def precision(self):
        """bf16 compute over fp32 master weights, or the weights' own dtype."""
        return torch.autocast(self.device.type, dtype=torch.bfloat16) if self.mixed else contextlib.nullcontext()

    def _load(self, path: str, dtype: torch.dtype):
        return load_causal_lm(path, dtype, self.device, self.cfg.model.trust_remote_code)

    @contextlib.contextmanager
    def reference_model(self):
        """The frozen reference to run a forward pass through: its own copy, or with LoRA the
        policy with its adapters off."""
        if self.reference is not None:
            yield self.reference
        else:
            with self.model.disable_adapter():
                yield self.model

    def drop_reference(self) -> None:
        """Free the reference once an objective has what it needs from it (cached log-probs)."""
        self.reference = None

    @torch.no_grad()
    def reset_reference(self, alpha: float) -> None:
        """π_ref ← α·π_θ + (1-α)·π_ref (α = 1: the hard copy of iterative GRPO)."""
        for ref, policy in zip(self.reference.parameters(), self.model.parameters()):
            ref.mul_(1.0 - alpha).add_(policy.detach(), alpha=alpha)

    def weights(self) -> dict[str, torch.Tensor]:
        """What the sampler needs after an update: the whole model's parameters and buffers
        under the base model's names (LoRA merged in)."""
        state = distributed.full_state_dict(self.model, self.ranks)
        return lora.merge(state, self.lora_scalings) if self.uses_lora else state

    def export(self) -> "Export":
        """The policy as a checkpoint writes it. Gathering shards is collective: every rank
        calls this, rank 0 writes."""
        if not (self.ranks.active or self.uses_lora):
            return Export(self.model)
        state = distributed.full_state_dict(self.model, self.ranks)
        if not self.uses_lora:
            return Export(self.model, weights=state)
        return Export(self.model.get_base_model(), weights=lora.merge(state, self.lora_scalings),
                      adapter_model=self.model, adapter_weights=state)

    def micro_batches(self, batch: Sequences):
        """(row index, micro-batch on the learner's device): consecutive slices of
        trainer.micro_batch_size sequences, or, with trainer.micro_batch_tokens, rows sorted by
        length and cut by `length_runs`, each trimmed of the padding it does not need. Either
        way every row lands in exactly one micro-batch, and the loss normalisers come from the
        whole mini-batch, so the gradient is the same."""
        t = self.cfg.trainer
        if t.micro_batch_tokens <= 0:
            for start in range(0, len(batch), t.micro_batch_size):
                index = torch.arange(start, min(start + t.micro_batch_size, len(batch)))
                yield index, batch.select(index).to(self.device)
            return
        lengths = batch.attention_mask.sum(-1)
        order = torch.argsort(lengths, descending=True, stable=True)
        for rows in length_runs(lengths[order], t.micro_batch_tokens):
            yield self._packed(batch, order[rows].tolist())

    def _rank_micro_batches(self, batch: Sequences) -> list[tuple[torch.Tensor, Sequences]]:
        """This rank's share of `batch` as (row index in `batch`, micro-batch). Under FSDP the
        ranks' forward passes pair up in collectives, so a rank with fewer micro-batches than
        another adds ones that carry no loss."""
        rows = torch.tensor(list(self.ranks.share(len(batch))), dtype=torch.long)
        micros = [(rows[index], micro) for index, micro in self.micro_batches(batch.select(rows))]
        missing = self.ranks.max_int(len(micros)) - len(micros)
        if missing > 0:
            micros += [(rows[:0], batch.select(torch.tensor([0])).muted().to(self.device))] * missing
        return micros

    def _packed(self, batch: Sequences, rows: list[int]):
        index = torch.tensor(rows)
        return index, batch.select(index).trimmed().to(self.device)

    def forward_logprobs(self, model, micro: Sequences, temperature: float, with_entropy: bool = False):
        """ℓ of the completion tokens of a micro-batch already on the device ([b, C], and the
        entropy [b, C] or None), in the learner's precision; with gradients when enabled."""
        with self.precision():
            return sequence_logprobs(model, micro, temperature, with_entropy=with_entropy,
                                     chunk=self.cfg.trainer.logprob_chunk, share_prompts=self.share_prompts)

    @torch.no_grad()
    def _logprobs_of(self, model, batch: Sequences) -> torch.Tensor:
        out = torch.zeros(batch.loss_mask.shape)
        for index, micro in self._rank_micro_batches(batch):
            logprobs = self.forward_logprobs(model, micro, self.temperature)[0]
            out[index, :logprobs.shape[1]] = logprobs[:len(index)].cpu()  # an idle micro-batch writes nothing
        return self.ranks.sum(out) * batch.loss_mask

    def policy_logprobs(self, batch: Sequences) -> torch.Tensor:
        """ℓ of the current policy, [N, C] (0 off the loss mask), without gradient."""
        return self._logprobs_of(self.model, batch)

    def reference_logprobs(self, batch: Sequences) -> torch.Tensor:
        """ℓ_ref of the frozen reference, [N, C] (0 off the loss mask)."""
        with self.reference_model() as reference:
            return self._logprobs_of(reference, batch)

    def update(self, batch: TrainBatch, seed: int, loss: MicroBatchLoss) -> dict[str, float]:
        """μ epochs of optimizer steps over mini-batches; returns metrics averaged over steps."""
        a = self.cfg.algorithm
        generator = torch.Generator().manual_seed(seed)
        per_step: list[dict[str, float]] = []
        for _ in range(a.epochs):
            order = torch.randperm(len(batch), generator=generator)
            # Exactly the steps the schedule counts, also for a row count that does not divide;
            # an empty mini-batch (fewer rows than mini-batches) only advances the schedule.
            for index in order.tensor_split(a.mini_batches):
                metrics = self.optimizer_step(batch.select(index), loss)
                if len(index):
                    per_step.append(metrics)
        merged = {k: sum(m.get(k, 0.0) for m in per_step) / len(per_step) for k in per_step[0]}
        for key in loss.max_keys & merged.keys():
            merged[key] = max(m[key] for m in per_step)
        return merged

    def backward(self, loss: torch.Tensor) -> None:
        """Add a micro-batch's share of the loss to .grad. FSDP averages gradients over ranks;
        each rank's loss is its share of a sum."""
        (loss * self.ranks.world).backward()

    def accumulate_gradients(self, batch: TrainBatch, loss: MicroBatchLoss, norm: LossNormalisers) -> dict[str, float]:
        """Backward over micro-batches; leaves the mini-batch gradient in .grad."""
        metrics: dict[str, float] = {}
        for _, micro in self._rank_micro_batches(batch):
            logprobs, entropy = self.forward_logprobs(self.model, micro, self.temperature, with_entropy=True)
            out = loss(micro, logprobs, entropy, norm)
            self.backward(out.loss)
            for key, value in out.metrics.items():
                metrics[key] = max(metrics.get(key, 0.0), value) if key in loss.max_keys else metrics.get(key, 0.0) + value
        return self.ranks.reduce_metrics(metrics, loss.max_keys)

    def zero_grad(self) -> None:
        self.optimizer.zero_grad(set_to_none=True)

    def apply_gradients(self, loss_finite: bool = True, any_tokens: bool = True) -> dict[str, float]:
        """Clip the accumulated gradient, step (unless it or the loss is not finite, or nothing
        carried a loss), clear it and advance the schedule; update/nonfinite, grad_norm, lr."""
        grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.trainer.max_grad_norm)
        grad_norm = grad_norm.full_tensor() if hasattr(grad_norm, "full_tensor") else grad_norm  # sharded: a DTensor
        # A NaN or inf would poison the weights and Adam's moments for good: skip the update.
        finite = bool(torch.isfinite(grad_norm)) and loss_finite
        if any_tokens and finite:
            self.optimizer.step()
        self.zero_grad()
        self.scheduler.step()
        return {"update/nonfinite": 0.0 if finite else 1.0, "grad_norm": float(grad_norm),
                "lr": self.scheduler.get_last_lr()[0]}

    def optimizer_step(self, batch: TrainBatch, loss: MicroBatchLoss) -> dict[str, float]:
        """One optimizer step of `loss` on a mini-batch."""
        self.zero_grad()
        norm = loss.normalisers(batch)
        metrics = self.accumulate_gradients(batch, loss, norm)
        finite = all(math.isfinite(v) for v in metrics.values())
        return {**metrics, **self.apply_gradients(finite, any_tokens=norm.num_tokens > 0)}

    def state_dict(self) -> dict:
        """Optimizer and schedule; the reference too once resets have moved it off the base."""
        state = {"optimizer": distributed.optimizer_state(self.model, self.optimizer, self.ranks),
                 "scheduler": self.scheduler.state_dict()}
        if self.reference is not None and self.cfg.algorithm.ref_reset_every > 0:
            state["reference"] = {k: v.cpu() for k, v in distributed.full_state_dict(self.reference, self.ranks).items()}
        return state

    def load_state_dict(self, state: dict) -> None:
        distributed.load_optimizer_state(self.model, self.optimizer, state["optimizer"], self.ranks)
        self.scheduler.load_state_dict(state["scheduler"])
        if "reference" in state and self.reference is not None:
            distributed.load_full_state_dict(self.reference, state["reference"], self.ranks)

