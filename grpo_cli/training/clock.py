"""The run's clock: which rows a step reads, the seeds of each step, and what is due when.

Everything here is a pure function of (run seed, step), so a resumed run, and every torchrun
rank, draws exactly what an uninterrupted single process would.
"""

from __future__ import annotations

import torch


def step_indices(num_rows: int, per_step: int, step: int, seed: int) -> list[int]:
    """Row indices for `step`: consecutive slices of a seeded permutation, one per epoch."""
    out: list[int] = []
    position = step * per_step
    while len(out) < per_step:
        epoch, offset = divmod(position, num_rows)
        order = torch.randperm(num_rows, generator=torch.Generator().manual_seed(seed * 100_003 + epoch))
        take = min(per_step - len(out), num_rows - offset)
        out.extend(order[offset:offset + take].tolist())
        position += take
    return out


def round_prompts(num_rows: int, per_step: int, step: int, round_: int, seed: int) -> tuple[list[int], int]:
    """The rows a step's sampling round reads and the round's sampling seed, for the synchronous
    and the asynchronous loop alike: round 0 walks the data in seeded epochs (step_indices);
    refill rounds (DAPO's dynamic sampling) draw fresh rows from their own seeded stream."""
    round_seed = derived_seed(seed, step, 0) + (round_ << 40)
    if round_ == 0:
        return step_indices(num_rows, per_step, step, seed), round_seed
    return torch.randperm(num_rows, generator=torch.Generator().manual_seed(round_seed))[:per_step].tolist(), round_seed


def derived_seed(seed: int, step: int, stream: int) -> int:
    """Independent, reproducible seeds per (run seed, step, purpose): stream 0 sampling, 1 the
    update's shuffling, 2 held-out evaluation, 3 the group filter's ties."""
    return (seed * 1_000_003 + step) * 16 + stream


def is_due(every: int, step: int) -> bool:
    """True every `every` steps (0: never)."""
    return every > 0 and step % every == 0
