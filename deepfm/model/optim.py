"""The optimizers: RowAdam for the embedding table, Adam for the dense parameters.

RowAdam is Adam for an embedding table that touches only the rows a batch used.

Training looks rows up outside autograd, makes them leaves, and hands their gradients here:
one (ids, grads) pair per occurrence. Occurrences of the same row are summed, then Adam's
moments and the weights of just those rows are updated ("lazy" Adam, as torch's SparseAdam).
Doing it directly avoids building and coalescing a sparse COO gradient of the whole table,
which cost a fifth of a training step on CPU.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager, nullcontext

import torch


class RowAdam:
    """Lazy Adam over the rows of ``weight`` (N, C). L2 on the rows used is folded in as
    ``grad += 2 * l2 * row / B`` per occurrence: the gradient of ``l2 * sum(rows_used**2) / B``,
    the penalty FuxiCTR and DeepCTR put on the embeddings a batch uses."""

    def __init__(
        self,
        weight: torch.Tensor,
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        l2: float = 0.0,
    ) -> None:
        self.weight = weight
        self.lr, self.betas, self.eps, self.l2 = lr, betas, eps, l2
        self.exp_avg = torch.zeros_like(weight, memory_format=torch.contiguous_format)
        self.exp_avg_sq = torch.zeros_like(weight, memory_format=torch.contiguous_format)
        self.steps = 0
        self._seen: torch.Tensor | None = None  # scratch for _unique
        self._position: torch.Tensor | None = None

    @torch.no_grad()
    def step(
        self, ids: torch.Tensor, grads: torch.Tensor, rows: torch.Tensor | None = None, batch_size: int = 1
    ) -> None:
        """ids (K,) int64, grads (K, C): one row per occurrence; rows (K, C) the values that
        were looked up (for L2), or None; batch_size B scales the L2 term."""
        if self.l2 and rows is not None:
            grads = grads.add(rows, alpha=2.0 * self.l2 / max(batch_size, 1))
        uniq, inverse = self._unique(ids)
        g = torch.zeros((uniq.shape[0], grads.shape[1]), dtype=grads.dtype, device=grads.device)
        # On CUDA index_add_ sums duplicate rows with atomic adds, in no fixed order; ranks of a
        # data-parallel run must get the same rows bit for bit from the same gathered grads.
        # Deterministic mode fixes the order (torch's docs list index_add on CUDA among the
        # ops it makes deterministic). The CPU sum already is deterministic: left as it was.
        with deterministic() if g.is_cuda else nullcontext():
            g.index_add_(0, inverse, grads)
        self.steps += 1
        b1, b2 = self.betas
        m = self.exp_avg.index_select(0, uniq).lerp_(g, 1 - b1)
        v = self.exp_avg_sq.index_select(0, uniq).mul_(b2).addcmul_(g, g, value=1 - b2)
        self.exp_avg.index_copy_(0, uniq, m)
        self.exp_avg_sq.index_copy_(0, uniq, v)
        bias1 = 1 - b1**self.steps
        bias2 = 1 - b2**self.steps
        denom = v.div_(bias2).sqrt_().add_(self.eps)
        self.weight.index_add_(0, uniq, m.div_(denom), alpha=-self.lr / bias1)

    def _unique(self, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Distinct ids (ascending) and each occurrence's position among them. When the table
        is small next to the batch, a mark-and-scan over the table beats sorting the ids."""
        n = self.weight.shape[0]
        if n > 16 * ids.numel():
            return torch.unique(ids, return_inverse=True)
        if self._seen is None:
            self._seen = torch.zeros(n, dtype=torch.bool, device=ids.device)
            self._position = torch.empty(n, dtype=torch.int64, device=ids.device)
        seen, position = self._seen, self._position
        assert position is not None
        seen[ids] = True
        uniq = seen.nonzero().squeeze(1)
        seen[uniq] = False  # clean for the next step: O(distinct ids), not O(table)
        position[uniq] = torch.arange(uniq.numel(), device=ids.device)
        return uniq, position[ids]

    def reset(self) -> None:
        """Back to no steps taken (the moments zero), as for a freshly drawn table."""
        self.exp_avg.zero_()
        self.exp_avg_sq.zero_()
        self.steps = 0

    def state_dict(self) -> dict[str, torch.Tensor | int | float]:
        return {"exp_avg": self.exp_avg, "exp_avg_sq": self.exp_avg_sq, "steps": self.steps, "lr": self.lr}

    def load_state_dict(self, state: dict[str, torch.Tensor | int | float]) -> None:
        self.exp_avg.copy_(state["exp_avg"])  # type: ignore[arg-type]
        self.exp_avg_sq.copy_(state["exp_avg_sq"])  # type: ignore[arg-type]
        self.steps, self.lr = int(state["steps"]), float(state["lr"])


def dense_adam(params: list[torch.nn.Parameter], lr: float, weight_decay: float) -> torch.optim.Adam:
    """Adam for the dense parameters, with the fused kernel where this torch has it (one pass
    over each tensor)."""
    try:
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay, fused=True)
    except (RuntimeError, TypeError):
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay, foreach=True)


@contextmanager
def deterministic() -> Iterator[None]:
    """torch's deterministic algorithms on for the block; the caller's settings (on or off,
    warn only or not) are put back afterwards, also when the block raises."""
    was_on, warn_only = (
        torch.are_deterministic_algorithms_enabled(),
        torch.is_deterministic_algorithms_warn_only_enabled(),
    )
    torch.use_deterministic_algorithms(True)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(was_on, warn_only=warn_only)
