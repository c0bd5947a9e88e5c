"""Data-parallel training over torch.distributed (``torchrun`` sets the environment).

Every rank holds the whole model. Each epoch's global batches (``batch_size x world`` rows,
in the order one process would use) are cut into ``world`` contiguous parts, one per rank.
After each backward pass:

- dense parameters: their gradients, weighted by the rank's share of the global batch, are
  summed by one all-reduce (what DistributedDataParallel does; done explicitly because the
  trainer calls the model's parts, not its ``forward``, so DDP's hooks would never fire);
- embedding rows: every rank all-gathers the row ids and row gradients of all ranks and runs
  RowAdam on the lot. RowAdam is deterministic, so the tables (and their Adam moments) stay
  equal on every rank without ever sending the table. Cost per step: each rank receives
  ``global_batch x fields x (8 + 4 x D)`` bytes (ids and gradients; ``8 x D`` with L2 on the
  embeddings, which needs the rows used too), independent of the table size; a dense all-reduce of the table gradient would send the
  whole table every step.

Metrics: training labels and logits, and the validation predictions (each rank scores a
slice), are gathered so every rank sees the global figures and takes the same early-stopping
decision; only rank 0 writes checkpoints, run.json and the bundle.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist


@dataclass(frozen=True)
class Context:
    """Where this process stands: rank r of world processes. world == 1: no collectives."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0
    owns_group: bool = False  # this context set up the process group, so it tears it down

    @property
    def main(self) -> bool:
        """The rank that writes files and logs."""
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world > 1

    def barrier(self) -> None:
        if self.active:
            dist.barrier()

    def close(self) -> None:
        if self.owns_group and dist.is_initialized():
            dist.destroy_process_group()


def setup(device: torch.device) -> tuple[Context, torch.device]:
    """Join the process group ``torchrun`` describes (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_*):
    gloo on CPU, NCCL on CUDA, each rank on its own GPU. A plain run gets a one-process context."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Context(), device
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if device.type == "cuda":
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    owns = not dist.is_initialized()
    if owns:
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo", device_id=device if device.type == "cuda" else None)
    return Context(rank=rank, world=world, local_rank=local_rank, owns_group=owns), device


def global_batches(order: np.ndarray, batch_size: int, ctx: Context, skip: int = 0, min_part: int = 1) -> Iterator[np.ndarray]:
    """This rank's rows of each global batch (``batch_size x world`` rows of ``order``), sorted
    so gathers read memory in order. A last global batch too small to give every rank
    ``min_part`` rows is left out: every rank must step, or the collectives would wait
    forever. Skips the first ``skip`` global batches (a resumed epoch)."""
    size = batch_size * ctx.world
    for start in range(skip * size, len(order), size):
        rows = np.sort(order[start : start + size])
        if rows.size < ctx.world * min_part:
            return
        yield np.array_split(rows, ctx.world)[ctx.rank]


class GradSync:
    """Sums one step's gradients over the ranks, each weighted by its share of the global batch
    (so uneven last batches still give the gradient of the global mean loss)."""

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self.share = 1.0  # this rank's rows / the global batch's rows, set by dense()
        self.global_rows = 0

    def dense(self, params: list[torch.nn.Parameter], rows: int) -> None:
        """All-reduce the gradients of ``params`` in one flat buffer, with the row count last."""
        grads = [p.grad for p in params if p.grad is not None]
        count = torch.tensor([float(rows)], device=params[0].device)
        flat = torch.cat([*(g.reshape(-1) * rows for g in grads), count])
        dist.all_reduce(flat)
        self.global_rows = int(round(float(flat[-1])))
        self.share = rows / self.global_rows
        flat = flat[:-1] / self.global_rows
        at = 0
        for g in grads:
            g.copy_(flat[at : at + g.numel()].view_as(g))
            at += g.numel()

    def rows(
        self, ids: torch.Tensor, grads: torch.Tensor, used: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """All ranks' embedding-row occurrences, in rank order: ids (K,), grads (K, D) scaled to
        the global mean loss, used (K, D) (the rows looked up, for L2; None: not sent). Call
        after :meth:`dense` (it sets the weights)."""
        width = grads.shape[1]
        ids_all = all_gather_rows(ids.reshape(-1, 1), self.ctx).reshape(-1)
        packed = all_gather_rows(grads * self.share if used is None else torch.cat([grads * self.share, used], dim=1), self.ctx)
        return ids_all, packed[:, :width], None if used is None else packed[:, width:]


def all_gather_rows(x: torch.Tensor, ctx: Context) -> torch.Tensor:
    """Concatenate every rank's ``x`` (K_r, C) along dim 0, in rank order. K_r may differ:
    the parts are padded to the largest, gathered, then cut back."""
    if not ctx.active:
        return x
    sizes = torch.zeros(ctx.world, dtype=torch.int64, device=x.device)
    sizes[ctx.rank] = x.shape[0]
    dist.all_reduce(sizes)
    most = int(sizes.max())
    padded = torch.zeros((most, *x.shape[1:]), dtype=x.dtype, device=x.device)
    padded[: x.shape[0]] = x
    parts = [torch.empty_like(padded) for _ in range(ctx.world)]
    dist.all_gather(parts, padded)
    return torch.cat([part[: int(k)] for part, k in zip(parts, sizes.tolist())])


def gather_array(x: np.ndarray, ctx: Context, device: torch.device) -> np.ndarray:
    """Every rank's 1-D array concatenated in rank order (metrics: labels, logits, scores)."""
    if not ctx.active:
        return x
    t = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float64)).to(device)
    return all_gather_rows(t.reshape(-1, 1), ctx).reshape(-1).cpu().numpy().astype(x.dtype)


def sum_scalar(x: float, ctx: Context, device: torch.device) -> float:
    if not ctx.active:
        return x
    t = torch.tensor([x], dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return float(t[0])


def my_slice(n: int, ctx: Context) -> slice:
    """This rank's contiguous share of ``n`` rows (scoring a part in parallel)."""
    bounds = np.linspace(0, n, ctx.world + 1).astype(np.int64)
    return slice(int(bounds[ctx.rank]), int(bounds[ctx.rank + 1]))
