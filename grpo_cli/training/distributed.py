"""torchrun scaling: one learner rank per process, sharded with FSDP2, statistics over the
global batch.

The layout is verl's and OpenRLHF's colocated data parallelism: every rank generates and
scores its own contiguous share of the step's prompts with its own sampler. Where we differ:
the rollouts and scores are then all-gathered in full, so every rank holds the global batch and
runs the group filters, the dynamic-sampling count, the advantages (REINFORCE++'s batch
normalisation included) and the loss normalisers on it, identically, with the stage functions
unchanged. Token ids and rewards are small next to a model; verl's reduction of statistics
alone saves little and puts collectives inside every estimator. Each rank then
back-propagates its share of every mini-batch and FSDP2 reduces the gradients.

With one process (no torchrun) nothing here communicates and the model is not wrapped.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class Ranks:
    """This process's place among the learner ranks."""

    rank: int = 0
    world: int = 1

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world > 1

    def share(self, count: int) -> range:
        """This rank's contiguous slice of `count` items; in rank order they tile 0..count-1."""
        return range(self.rank * count // self.world, (self.rank + 1) * count // self.world)

    def gather(self, value) -> list:
        """Every rank's `value` (any picklable object), in rank order."""
        if not self.active:
            return [value]
        out = [None] * self.world
        dist.all_gather_object(out, value)
        return out

    def sum(self, tensor: torch.Tensor) -> torch.Tensor:
        """Element-wise sum over ranks, on the tensor's own device."""
        if not self.active:
            return tensor
        summed = tensor.to(collective_device())
        dist.all_reduce(summed, op=dist.ReduceOp.SUM)
        return summed.to(tensor.device)

    def max_int(self, value: int) -> int:
        if not self.active:
            return value
        out = torch.tensor([value], dtype=torch.long, device=collective_device())
        dist.all_reduce(out, op=dist.ReduceOp.MAX)
        return int(out)

    def any(self, flag: bool) -> bool:
        return self.max_int(int(flag)) > 0

    def reduce_metrics(self, metrics: dict[str, float], max_keys: set[str]) -> dict[str, float]:
        """Sums over ranks (each rank's metric is its share of a global mean), maxima for max_keys."""
        if not self.active:
            return metrics
        keys = sorted(metrics)
        values = torch.tensor([metrics[k] for k in keys], dtype=torch.float64, device=collective_device())
        high = torch.tensor([metrics[k] if k in max_keys else float("-inf") for k in keys],
                            dtype=torch.float64, device=collective_device())
        dist.all_reduce(values, op=dist.ReduceOp.SUM)
        dist.all_reduce(high, op=dist.ReduceOp.MAX)
        return {k: float(high[i] if k in max_keys else values[i]) for i, k in enumerate(keys)}

    def barrier(self) -> None:
        if self.active:
            dist.barrier()


def collective_device() -> torch.device:
    """NCCL moves CUDA tensors only; gloo CPU tensors."""
    return torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")


def init_ranks(device: str) -> Ranks:
    """Join the process group torchrun describes in the environment (WORLD_SIZE, RANK,
    LOCAL_RANK, MASTER_ADDR); without it, a single rank. NCCL on CUDA, gloo on the CPU."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return Ranks()
    if not dist.is_initialized():
        use_cuda = device != "cpu" and torch.cuda.is_available()
        if use_cuda:
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group("nccl" if use_cuda else "gloo")
    return Ranks(rank=dist.get_rank(), world=dist.get_world_size())


def local_device(device: torch.device, ranks: Ranks) -> torch.device:
    """Each rank's own GPU (LOCAL_RANK) under torchrun."""
    if device.type == "cuda" and ranks.active:
        return torch.device("cuda", torch.cuda.current_device())
    return device


def close(ranks: Ranks) -> None:
    if ranks.active and dist.is_initialized():
        dist.destroy_process_group()


def shard(model: torch.nn.Module) -> torch.nn.Module:
    """FSDP2: every decoder layer is its own unit (its parameters are gathered just before
    it runs and freed after), then the root (embeddings, final norm, head)."""
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    device_type = "cuda" if next(model.parameters()).is_cuda else "cpu"
    mesh = init_device_mesh(device_type, (dist.get_world_size(),))
    for layer in decoder_layers(model):
        fully_shard(layer, mesh=mesh)
    fully_shard(model, mesh=mesh)
    return model


def decoder_layers(model: torch.nn.Module) -> list[torch.nn.Module]:
    """The repeated blocks of a transformers causal LM, found by the class its config names
    (`_no_split_modules`, the unit transformers itself never splits across devices)."""
    names = set(getattr(model, "_no_split_modules", None) or [])
    layers = [m for m in model.modules() if type(m).__name__ in names]
    if not layers:
        raise ValueError(f"{type(model).__name__} names no decoder-layer class (_no_split_modules); "
                         f"it cannot be sharded layer by layer")
    return layers


def full_state_dict(model: torch.nn.Module, ranks: Ranks) -> dict[str, torch.Tensor]:
    """Unsharded weights on every rank (each rank's sampler needs all of them)."""
    if not ranks.active:
        return dict(model.state_dict())
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    return get_model_state_dict(model, options=StateDictOptions(full_state_dict=True))


def load_full_state_dict(model: torch.nn.Module, state: dict[str, torch.Tensor], ranks: Ranks) -> None:
    """Whole weights into a model, each rank keeping its shard when sharded."""
    if not ranks.active:
        model.load_state_dict(state)
        return
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict

    set_model_state_dict(model, state, options=StateDictOptions(full_state_dict=True))


def optimizer_state(model, optimizer, ranks: Ranks) -> dict:
    """The optimizer's state in the single-process layout (keyed by parameter index) whatever
    the number of ranks, so a checkpoint resumes under either; when sharded, whole on rank 0
    and empty elsewhere."""
    if not ranks.active:
        return optimizer.state_dict()
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_optimizer_state_dict

    by_name = get_optimizer_state_dict(model, optimizer, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    index = {name: i for i, (name, _) in enumerate(model.named_parameters())}
    return rekey(by_name, index) if ranks.main else {}


def load_optimizer_state(model, optimizer, state: dict, ranks: Ranks) -> None:
    """Every rank reads the whole saved state and keeps its own shard of it."""
    if not ranks.active:
        optimizer.load_state_dict(state)
        return
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

    names = {i: name for i, (name, _) in enumerate(model.named_parameters())}
    set_optimizer_state_dict(model, optimizer, optim_state_dict=rekey(state, names),
                             options=StateDictOptions(full_state_dict=True))


def rekey(state: dict, mapping: dict) -> dict:
    """An optimizer state dict with its parameter keys mapped (index <-> name)."""
    return {"state": {mapping[key]: value for key, value in state["state"].items()},
            "param_groups": [dict(group, params=[mapping[p] for p in group["params"]]) for group in state["param_groups"]]}
