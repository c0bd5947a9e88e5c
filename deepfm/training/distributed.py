"""Data-parallel training over torch.distributed (``torchrun`` sets the environment).

Every rank holds the whole model. Each epoch's global batches (``batch_size x world`` rows,
in the order one process would use) are cut into ``world`` contiguous parts, one per rank.
Each rank's loss is its share of the global batch's mean loss (its mean x its rows / the
global rows), so that summing over ranks gives the gradient one process would compute:

- dense parameters (FM bias, MLP, cross network): PyTorch's DistributedDataParallel wraps
  everything after the embedding (:func:`data_parallel`); its bucketed all-reduces overlap
  the backward pass and are summed, not averaged, because the losses are already weighted.
  The embedding table is left out of DDP: the trainer looks its rows up outside autograd, so
  the table itself never has a gradient (and a dense one would be the whole table per step).
- embedding rows: every rank all-gathers the row ids and row gradients of all ranks
  (:func:`gather_rows`) and runs RowAdam on the lot. RowAdam is deterministic, so the tables
  (and their Adam moments) stay equal on every rank without ever sending the table. Cost per
  step: each rank receives ``global_batch x fields x (8 + 4 x (D+1))`` bytes (ids and the
  gradients of rows D+1 wide: D vector columns and the first-order weight; ``4 x (D+1)``
  more with L2 on the embeddings, which needs the rows used too), independent of the table
  size.

Metrics: training labels and logits, and the validation predictions (each rank scores a
slice), are gathered so every rank sees the global figures and takes the same early-stopping
decision; only rank 0 writes checkpoints, run.json and the bundle.

A :class:`Context` says where a process stands and does what a Trainer needs from the others;
with one process (world 1, no torchrun) its collectives are the identity.
"""

from __future__ import annotations

import gc
import os
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from deepfm.data.encoded import Batch, EncodedDataset, EpochOrder
from deepfm.errors import ConfigError

# How long the other ranks wait for rank 0 to parse and encode the data into the cache: hours
# at Criteo-1TB size (2.3 h a pass on 2 cores, docs/scale.md), where the process group's own
# timeout (30 min on gloo, 10 on NCCL) is meant for steps.
PREPARE_TIMEOUT = timedelta(hours=24)


@dataclass(frozen=True)
class Context:
    """Where this process stands: rank r of world processes. world == 1: no collectives."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0
    owns_group: bool = False  # this context set up the process group, so it tears it down
    wait_group: Any = None  # a gloo group with PREPARE_TIMEOUT for wait_for_main (None: the default group)

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

    def wait_for_main(self) -> None:
        """A barrier that may wait up to PREPARE_TIMEOUT: the ranks that reach it first wait
        while rank 0 does the work that only rank 0 does (filling the cache)."""
        if self.active:
            dist.barrier(group=self.wait_group)

    def close(self) -> None:
        if self.owns_group and dist.is_initialized():
            # A DistributedDataParallel still alive when its group goes aborts the process at
            # exit (SIGABRT, "terminate called without an active exception"), and DDP sits in
            # reference cycles that outlive the trainer holding it: collect them first.
            gc.collect()
            dist.destroy_process_group()

    # ------------------------------------------------------------ what a Trainer asks
    # Each is the identity, or the plain single-process way, when world == 1: a Trainer calls
    # them alike on every rank and never asks which rank it is on.
    def data_parallel(self, module: nn.Module, params: list[nn.Parameter]) -> nn.Module:
        """``module`` under DistributedDataParallel for ``params`` (see :func:`data_parallel`)."""
        return data_parallel(module, params) if self.active else module

    def batches(
        self, data: EncodedDataset, batch_size: int, seed: int, skip: int = 0, min_part: int = 1
    ) -> Iterator[tuple[Batch, int]]:
        """(batch, rows in its global batch) for a shuffled epoch of ``data`` from global batch
        ``skip`` on: this rank's part of each global batch (see :func:`global_batches`)."""
        if not self.active:
            for batch in data.batches(batch_size, shuffle=True, seed=seed, skip=skip):
                yield batch, len(batch)
            return
        for rows, global_rows in global_batches(EpochOrder(len(data), seed), batch_size, self, skip, min_part):
            yield data.batch(rows), global_rows

    def share_of(self, loss: torch.Tensor, rows: int, global_rows: int) -> torch.Tensor:
        """This rank's share of the global batch's mean loss: its mean x rows / global rows."""
        return loss * (rows / global_rows) if self.active else loss

    def gather_rows(
        self, ids: torch.Tensor, grads: torch.Tensor, used: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """Every rank's embedding-row occurrences (see :func:`gather_rows`)."""
        return gather_rows(ids, grads, used, self) if self.active else (ids, grads, used)

    def all_gather_rows(self, x: torch.Tensor) -> torch.Tensor:
        """Every rank's ``x`` (K_r, C) concatenated in rank order (see :func:`all_gather_rows`)."""
        return all_gather_rows(x, self)

    def gather(self, x: np.ndarray, device: torch.device) -> np.ndarray:
        """Every rank's 1-D array concatenated in rank order (see :func:`gather_array`)."""
        return gather_array(x, self, device)

    def gather_arrays(self, x: np.ndarray) -> list[np.ndarray]:
        """Every rank's 1-D array ``x`` (any dtype, any length), in rank order: the exchanges of
        preparing the data together. On the long-timeout group: a rank may get there hours
        after another (each first parses its own files)."""
        return gather_bytes(x, self) if self.active else [x]

    def sum(self, x: float, device: torch.device) -> float:
        """``x`` summed over the ranks."""
        return sum_scalar(x, self, device)

    def share(self, n: int) -> slice:
        """This rank's contiguous share of ``n`` rows (see :func:`my_slice`)."""
        return my_slice(n, self)

    def broadcast_buffers(self, module: nn.Module) -> None:
        """Rank 0's buffers on every rank (see :func:`broadcast_buffers`)."""
        broadcast_buffers(module, self)


def setup(device: torch.device, group: bool = False) -> tuple[Context, torch.device]:
    """Join the process group ``torchrun`` describes (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_*):
    gloo on CPU, NCCL on CUDA, each rank on its own GPU. A plain run gets a one-process
    context; with ``group`` (sharded tables), a torchrun of one process joins its group too."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1 and not (group and "MASTER_ADDR" in os.environ):
        return Context(), device
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if device.type == "cuda":
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    owns = not dist.is_initialized()
    if owns:
        dist.init_process_group(
            "nccl" if device.type == "cuda" else "gloo", device_id=device if device.type == "cuda" else None
        )
    # Every rank creates it, in the same order. Only with a group of its own: a caller that set
    # up the group (and may call train() more than once) keeps its default timeout.
    wait_group = dist.new_group(backend="gloo", timeout=PREPARE_TIMEOUT) if owns else None
    return Context(rank=rank, world=world, local_rank=local_rank, owns_group=owns, wait_group=wait_group), device


def global_batches(
    order: EpochOrder | np.ndarray, batch_size: int, ctx: Context, skip: int = 0, min_part: int = 1
) -> Iterator[tuple[np.ndarray, int]]:
    """(this rank's rows, the global batch's row count) for each global batch of
    ``batch_size x world`` rows of ``order``, sliced one global batch at a time; the rows are
    sorted so gathers read memory in order. A last global batch too small to give every rank
    ``min_part`` rows is left out: every rank must step, or the collectives would wait
    forever. Skips the first ``skip`` global batches (a resumed epoch)."""
    size = batch_size * ctx.world
    for start in range(skip * size, len(order), size):
        rows = np.sort(order[start : start + size])
        if rows.size < ctx.world * min_part:
            return
        yield np.array_split(rows, ctx.world)[ctx.rank], int(rows.size)


def data_parallel(module: nn.Module, params: list[nn.Parameter]) -> DistributedDataParallel:
    """``module`` under DistributedDataParallel, which syncs the gradients of ``params`` only:
    its other parameters (the embedding table, whose rows are gathered instead; DDP would
    broadcast it whole at the start and then wait forever for a gradient it never gets) and
    its buffers (see :func:`broadcast_buffers`) are left out. Gradients are summed over the
    ranks: each rank's loss must already be weighted by its share of the global batch."""
    mine = {id(p) for p in params}
    ignore = [name for name, p in module.named_parameters() if id(p) not in mine] + [
        name for name, _ in module.named_buffers()
    ]
    DistributedDataParallel._set_params_and_buffers_to_ignore_for_model(module, ignore)
    device = params[0].device
    ddp = DistributedDataParallel(module, device_ids=[device] if device.type == "cuda" else None)
    ddp.register_comm_hook(None, _sum_hook)
    return ddp


def broadcast_buffers(module: nn.Module, ctx: Context) -> None:
    """Give every rank rank 0's buffers (batch norm running statistics). Training never reads
    them, each rank only updates them from its own part, so they are synced where they are
    read: before scoring, so every rank scores with the model rank 0 saves."""
    if ctx.active:
        for buffer in module.buffers():
            dist.broadcast(buffer, src=0)


def _sum_hook(_, bucket):  # type: ignore[no-untyped-def]
    """DDP communication hook: all-reduce a gradient bucket (dist.GradBucket) as a sum; DDP's
    own divides by the world size, which would count a weighted loss twice. Returns a
    Future[Tensor]. Unannotated: DDP checks the annotations, which this module's
    ``from __future__ import annotations`` would turn into strings."""
    return dist.all_reduce(bucket.buffer(), async_op=True).get_future().then(lambda fut: fut.value()[0])


def gather_rows(
    ids: torch.Tensor, grads: torch.Tensor, used: torch.Tensor | None, ctx: Context
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """All ranks' embedding-row occurrences, in rank order: ids (K,), grads (K, D), used (K, D)
    (the rows looked up, for L2; None: not sent). ``grads`` must come from the weighted loss,
    so that RowAdam's sum over occurrences is the gradient of the global mean loss."""
    width = grads.shape[1]
    ids_all = all_gather_rows(ids.reshape(-1, 1), ctx).reshape(-1)
    packed = all_gather_rows(grads if used is None else torch.cat([grads, used], dim=1), ctx)
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


def gather_bytes(x: np.ndarray, ctx: Context) -> list[np.ndarray]:
    """Every rank's 1-D ``x`` as its bytes, padded to the longest, all-gathered on the CPU
    (gloo) group ``ctx.wait_group``, and cut back into arrays of ``x``'s dtype."""
    data = torch.from_numpy(np.frombuffer(np.ascontiguousarray(x).tobytes(), dtype=np.uint8).copy())
    sizes = [torch.zeros(1, dtype=torch.int64) for _ in range(ctx.world)]
    dist.all_gather(sizes, torch.tensor([data.numel()], dtype=torch.int64), group=ctx.wait_group)
    most = max(1, max(int(k) for k in sizes))
    padded = torch.zeros(most, dtype=torch.uint8)
    padded[: data.numel()] = data
    parts = [torch.empty_like(padded) for _ in range(ctx.world)]
    dist.all_gather(parts, padded, group=ctx.wait_group)
    return [np.frombuffer(part[: int(k)].numpy().tobytes(), dtype=x.dtype) for part, k in zip(parts, sizes)]


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


def resolve_device(name: str) -> torch.device:
    """The device train.device names: auto is CUDA when PyTorch sees a GPU, else the CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError("--device cuda asked for, but PyTorch sees no CUDA device")
    return torch.device(name)
