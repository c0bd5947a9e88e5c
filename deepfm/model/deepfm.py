"""DeepFM (Guo et al., IJCAI 2017) and its ablations, composed from layers.py.

    e      = embedding(ids, values, multi_hot)            (B, F, D+1)
    v, w   = e[..., :D], e[..., D]                         field vectors, first-order weights
    y_FM   = bias + sum_i w_i + sum_{i<j} <v_i, v_j>       (x_i is already folded into e)
    y_DNN  = MLP(flatten(v))
    logit  = y_FM + y_DNN                                  sigmoid only at prediction

The ablations switch parts off on the same code: ``lr`` (bias + first order), ``fm`` (FM),
``dnn`` (MLP only), ``wide_deep`` (first order + MLP), ``dcn`` (cross network + MLP),
``deepfm`` (everything).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, cast

import torch
from torch import nn
from torch.profiler import record_function

from deepfm.config import ModelConfig
from deepfm.data.encoded import Batch
from deepfm.model.layers import MLP, CrossNetwork, FieldEmbedding, fm_pairwise


@dataclass(frozen=True)
class InputLayout:
    """What the model needs to know about the encoded inputs (from the FeaturePipeline)."""

    num_embeddings: int
    n_single: int
    scaled_positions: tuple[int, ...] = ()
    poolings: tuple[str, ...] = field(default=())

    @property
    def n_fields(self) -> int:
        return self.n_single + len(self.poolings)

    @classmethod
    def of(cls, pipeline: Any) -> InputLayout:
        """The layout a fitted FeaturePipeline encodes to."""
        return cls(
            num_embeddings=pipeline.num_embeddings,
            n_single=len(pipeline.single_fields),
            scaled_positions=tuple(pipeline.scaled_positions),
            poolings=tuple(f.pooling for f in pipeline.multi_hot_fields),
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "num_embeddings": self.num_embeddings,
            "n_single": self.n_single,
            "scaled_positions": list(self.scaled_positions),
            "poolings": list(self.poolings),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> InputLayout:
        return cls(
            num_embeddings=int(data["num_embeddings"]),
            n_single=int(data["n_single"]),
            scaled_positions=tuple(data["scaled_positions"]),
            poolings=tuple(data["poolings"]),
        )


class DeepFM(nn.Module):
    """forward(batch) -> logits (B,). Parts: ``embedding``, ``bias`` (FM), ``dnn``, ``cross``."""

    def __init__(
        self, layout: InputLayout, config: ModelConfig = ModelConfig(), embedding: nn.Module | None = None
    ) -> None:
        """``embedding``: a module with FieldEmbedding's forward to use instead of the one shared
        table (deepfm.sharded passes per-field tables sharded over processes)."""
        super().__init__()
        config = config.resolved(layout)
        self.layout, self.config = layout, config
        d = config.embedding_dim
        # Typed as the shared table: a replacement (deepfm.training.sharded) answers its forward.
        self.embedding: FieldEmbedding = cast(FieldEmbedding, embedding) or FieldEmbedding(
            layout.num_embeddings, d, list(layout.scaled_positions), list(layout.poolings), float(config.init_std)
        )
        self.bias = nn.Parameter(torch.zeros(1))
        in_dim = layout.n_fields * d
        self.cross = CrossNetwork(in_dim, config.cross_layers) if config.kind == "dcn" else None
        if config.uses_dnn:
            mlp_in = in_dim * 2 if self.cross is not None else in_dim
            self.dnn: MLP | None = MLP(
                mlp_in, list(config.hidden), config.activation, config.dropout, bool(config.batch_norm)
            )
        else:
            self.dnn = None

    def forward(self, batch: Batch) -> torch.Tensor:
        return self.logits(batch.ids, batch.values, batch.multi_hot)

    def logits(
        self, ids: torch.Tensor, values: torch.Tensor, multi_hot: list[tuple[torch.Tensor, torch.Tensor]]
    ) -> torch.Tensor:
        """(B,S) int64, (B,V) float32, [(offsets, ids)] -> (B,) logits."""
        return self.head(self.embedding(ids, values, multi_hot))

    def head(self, e: torch.Tensor) -> torch.Tensor:
        """Everything after the embedding: FM and deep parts. (B, F, D+1) -> (B,) logits"""
        parts = self.parts(e)
        logit = parts.pop("bias")
        for part in parts.values():  # bias + first order + pairs + DNN, the paper's order
            logit = logit + part
        return logit

    def parts(self, e: torch.Tensor) -> dict[str, torch.Tensor]:
        """The logit's additive parts, each (B,): ``bias``, then those this kind uses of
        ``first_order`` (sum_i w_i), ``fm_pairs`` (sum_{i<j} <v_i, v_j>) and ``dnn`` (the MLP,
        after the cross network for dcn). They add up to ``head(e)``. (B, F, D+1) -> {name: (B,)}"""
        d = self.config.embedding_dim
        v = e[..., :d]
        out = {"bias": self.bias.expand(e.shape[0])}
        if self.config.uses_first_order:
            out["first_order"] = e[..., d].sum(dim=1)
        if self.config.uses_pairwise:
            with record_function("fm"):
                out["fm_pairs"] = fm_pairwise(v)
        if self.dnn is not None:
            with record_function("mlp"):
                flat = v.flatten(1)  # (B, F*D); works for B = 0 too
                if self.cross is not None:
                    flat = torch.cat([self.cross(flat), flat], dim=1)
                out["dnn"] = self.dnn(flat)
        return out

    def dense_parameters(self) -> list[nn.Parameter]:
        return [p for n, p in self.named_parameters() if not n.startswith("embedding.")]


class Head(nn.Module):
    """A model's part after the embedding as a module of its own, so DistributedDataParallel
    can wrap it (training looks the table's rows up itself): forward(e) = model.head(e),
    (B, F, D+1) -> (B,) logits."""

    def __init__(self, model: DeepFM) -> None:
        super().__init__()
        self.model = model

    def forward(self, e: torch.Tensor) -> torch.Tensor:
        return self.model.head(e)
