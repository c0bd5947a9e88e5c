"""Pure tensor maths: the shared field embedding, the FM interaction, the MLP.

Notation: B batch, S single-valued fields, M multi-hot fields, F = S + M fields, D embedding
size. The table has D + 1 columns: the first D are the field vector v, the last is the
first-order weight w of the same row, so one lookup serves both FM terms.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

ACTIVATIONS = {"relu": nn.ReLU, "gelu": nn.GELU, "tanh": nn.Tanh, "sigmoid": nn.Sigmoid, "silu": nn.SiLU}


class FieldEmbedding(nn.Module):
    """One table for every field, indexed by ids already offset per field (pytorch-fm's trick:
    one lookup per batch instead of a dict of tables).

    forward(ids (B,S) int64, values (B,V) float32, multi_hot [(offsets (B,), ids (nnz,))])
      -> (B, F, D+1): row vectors, scaled numerics multiplied by their value, multi-hot pooled.
    """

    scaled: torch.Tensor  # (V,) int64 buffer: the columns of ids that scaled numerics multiply

    def __init__(
        self,
        num_embeddings: int,
        dim: int,
        scaled_positions: list[int],
        poolings: list[str],
        init_std: float = 0.01,
        sparse: bool = True,
    ) -> None:
        super().__init__()
        self.dim = dim
        self.sparse = sparse
        self.weight = nn.Parameter(torch.empty(num_embeddings, dim + 1))
        self.register_buffer("scaled", torch.tensor(scaled_positions, dtype=torch.long), persistent=False)
        self.poolings = list(poolings)
        self.init_std = init_std
        # ONNX export turns embedding_bag into a loop over bags; pool_bags gives the same
        # vectors with scatter/cumsum ops, so the exporter switches this on while it traces.
        self.loop_free_pooling = False
        self.reset_parameters()

    def reset_parameters(self, generator: torch.Generator | None = None) -> None:
        """Vectors drawn from N(0, init_std^2) (from a CPU ``generator``, else torch's global
        one), first-order weights zero. A table on a GPU is drawn on the CPU and copied, so the
        draw is the same on any device (the ranks of a run may differ in theirs)."""
        with torch.no_grad():
            if generator is not None and not self.weight.is_cpu:
                drawn = torch.empty(self.weight.shape)
                nn.init.normal_(drawn[:, : self.dim], std=self.init_std, generator=generator)
                self.weight[:, : self.dim].copy_(drawn[:, : self.dim])
            else:
                nn.init.normal_(self.weight[:, : self.dim], std=self.init_std, generator=generator)
            self.weight[:, self.dim].zero_()  # first-order weights start at zero, as in LR

    def forward(
        self, ids: torch.Tensor, values: torch.Tensor, multi_hot: list[tuple[torch.Tensor, torch.Tensor]]
    ) -> torch.Tensor:
        rows = F.embedding(ids, self.weight, sparse=self.sparse)  # (B, S, D+1)
        bag_rows = [F.embedding(mh_ids, self.weight, sparse=self.sparse) for _, mh_ids in multi_hot]
        return self.combine(rows, values, bag_rows, [offsets for offsets, _ in multi_hot])

    @torch.no_grad()
    def lookup(
        self, ids: torch.Tensor, multi_hot: list[tuple[torch.Tensor, torch.Tensor]]
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """The table rows a batch uses, outside autograd: (B, S, D+1) and [(nnz_k, D+1)].
        Training makes them leaves and hands their gradients to a row-wise optimizer, which
        is cheaper than building a sparse gradient of the whole table."""
        w = self.weight.detach()
        return w[ids], [w[mh_ids] for _, mh_ids in multi_hot]

    def combine(
        self,
        rows: torch.Tensor,
        values: torch.Tensor,
        bag_rows: list[torch.Tensor],
        bag_offsets: list[torch.Tensor],
    ) -> torch.Tensor:
        """Field vectors from looked-up rows: scaled numerics times their value, multi-hot bags
        pooled. (B,S,D+1), (B,V), [(nnz_k, D+1)], [(B,)] -> (B, F, D+1)"""
        e = scale_numeric(rows, self.scaled, values)
        if self.poolings:
            pool = pool_bags if self.loop_free_pooling else _embedding_bag
            bags = [pool(r, offsets, mode) for r, offsets, mode in zip(bag_rows, bag_offsets, self.poolings)]
            e = torch.cat([e, torch.stack(bags, dim=1)], dim=1)
        return e


def scale_numeric(rows: torch.Tensor, scaled: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    """x_i * v_i and x_i * w_i for the scaled numerics at positions ``scaled``; missing ones
    carry value 1. (B,S,D+1), (V,) int64, (B,V) -> (B,S,D+1)"""
    if not scaled.numel():
        return rows
    factor = torch.ones(rows.shape[:2], dtype=rows.dtype, device=rows.device)
    factor = factor.index_copy(1, scaled, values.to(rows.dtype))
    return rows * factor.unsqueeze(-1)


def _embedding_bag(rows: torch.Tensor, offsets: torch.Tensor, mode: str) -> torch.Tensor:
    # Each bag's rows are their own little table: position i is row i.
    return F.embedding_bag(torch.arange(rows.shape[0], device=rows.device), rows, offsets, mode=mode)


def pool_bags(rows: torch.Tensor, offsets: torch.Tensor, mode: str) -> torch.Tensor:
    """Sum or mean of each bag's rows, as embedding_bag does, by a segment sum: the bag of
    every row is the running count of bag starts at or before it. An empty bag gives zeros.
    (nnz, D+1) rows, (B,) bag starts -> (B, D+1)"""
    nnz = rows.shape[0]
    # One extra slot takes the starts of empty bags at the very end.
    starts = torch.zeros(nnz + 1, dtype=offsets.dtype, device=rows.device)
    starts = starts.scatter_add(0, offsets, torch.ones_like(offsets))[:nnz]
    bag = starts.cumsum(0) - 1
    pooled = torch.zeros((offsets.shape[0], rows.shape[1]), dtype=rows.dtype, device=rows.device).index_add(
        0, bag, rows
    )
    if mode == "sum":
        return pooled
    sizes = torch.diff(offsets, append=offsets.new_full((1,), nnz)).clamp(min=1)
    return pooled / sizes.unsqueeze(1).to(rows.dtype)


def fm_pairwise(v: torch.Tensor) -> torch.Tensor:
    """sum_{i<j} <v_i, v_j> in O(F·D) as 0.5 * sum_d((sum_i v_id)^2 - sum_i v_id^2).
    (B, F, D) -> (B,)"""
    square_of_sum = v.sum(dim=1).square()
    sum_of_square = v.square().sum(dim=1)
    return 0.5 * (square_of_sum - sum_of_square).sum(dim=1)


class MLP(nn.Module):
    """Linear -> [BatchNorm] -> activation -> [Dropout], repeated, then Linear -> 1.
    (B, in_dim) -> (B,)"""

    def __init__(
        self,
        in_dim: int,
        hidden: list[int],
        activation: str = "relu",
        dropout: float = 0.0,
        batch_norm: bool = False,
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        prev = in_dim
        for width in hidden:
            layers.append(nn.Linear(prev, width))
            if batch_norm:
                layers.append(nn.BatchNorm1d(width))
            # In place: the activation overwrites the Linear's output instead of allocating.
            act = ACTIVATIONS[activation]
            layers.append(act(inplace=True) if act in (nn.ReLU, nn.SiLU) else act())
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
            prev = width
        layers.append(nn.Linear(prev, 1))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).squeeze(-1)


class CrossNetwork(nn.Module):
    """DCN's cross layers: x_{l+1} = x_0 * (w_l^T x_l) + b_l + x_l.  (B, d) -> (B, d)"""

    def __init__(self, dim: int, layers: int) -> None:
        super().__init__()
        self.w = nn.ParameterList([nn.Parameter(torch.randn(dim) * dim**-0.5) for _ in range(layers)])
        self.b = nn.ParameterList([nn.Parameter(torch.zeros(dim)) for _ in range(layers)])

    def forward(self, x0: torch.Tensor) -> torch.Tensor:
        x = x0
        for w, b in zip(self.w, self.b):
            x = x0 * (x @ w).unsqueeze(-1) + b + x
        return x
