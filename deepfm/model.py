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

import math
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any

import torch
from torch import nn
from torch.profiler import record_function

from deepfm.dataset import Batch
from deepfm.errors import ConfigError
from deepfm.schema import check_keys, coerce_numbers
from deepfm.layers import ACTIVATIONS, MLP, CrossNetwork, FieldEmbedding, fm_pairwise

MODEL_KINDS = ("deepfm", "fm", "lr", "dnn", "wide_deep", "dcn")
# init_std "auto": the spread, in logit units, of the pairwise FM term at initialization.
# Vectors drawn too small leave the pairs unlearned for many epochs (Frappe's valid AUC sits at
# 0.926 for ten epochs at std 0.01 and climbs to 0.94 from 0.05 up); too large, and the noise
# of rarely seen values' random vectors swamps small data (the Criteo sample loses 0.05 AUC at
# 0.1). The number of pairs sets how much noise a given std makes: see auto_init_std.
INIT_PAIRWISE_STD = 0.1
# Data is "dense" for the auto settings when the training part sees each table row at least
# this many times on average (rows_per_table_row). Batch norm (model.batch_norm "auto") lets
# the MLP fit fast: it gains where every value is seen often (+0.004 to +0.036 test AUC from 62
# up to 93 rows per table row) and memorizes where most are rare (-0.003 to -0.026 from 27 to
# 56); train.embedding_lr "auto" switches at the same point. docs/accuracy.md has the runs.
DENSE_ROWS_PER_TABLE_ROW = 60.0


@dataclass(frozen=True)
class ModelConfig:
    kind: str = "deepfm"
    embedding_dim: int = 16
    hidden: tuple[int, ...] = (400, 400, 400)
    activation: str = "relu"
    dropout: float = 0.2
    # batch norm in the MLP; "auto": from the training data (BATCH_NORM_DENSITY, see resolved)
    batch_norm: bool | str = "auto"
    cross_layers: int = 3  # dcn only
    # std of the vectors' normal initialization; "auto": from the number of fields and the
    # embedding size (auto_init_std), resolved when the data is known (see ``resolved``)
    init_std: float | str = "auto"

    def __post_init__(self) -> None:
        coerce_numbers(self, "model", floats=("dropout",), ints=("embedding_dim", "cross_layers"))
        if self.init_std != "auto":
            coerce_numbers(self, "model", floats=("init_std",))
            if not float(self.init_std) > 0:  # type: ignore[arg-type]
                raise ConfigError(f"model.init_std must be > 0 or 'auto', got {self.init_std!r}")
        if self.batch_norm not in (True, False, "auto"):
            raise ConfigError(f"model.batch_norm must be true, false or 'auto', got {self.batch_norm!r}")
        if self.kind not in MODEL_KINDS:
            raise ConfigError(f"model.kind must be one of {list(MODEL_KINDS)}, got {self.kind!r}")
        if not isinstance(self.embedding_dim, int) or self.embedding_dim < 1:
            raise ConfigError(f"model.embedding_dim must be a positive integer, got {self.embedding_dim!r}")
        object.__setattr__(self, "hidden", tuple(self.hidden))
        if any(not isinstance(h, int) or h < 1 for h in self.hidden):
            raise ConfigError(f"model.hidden must be a list of positive integers, got {list(self.hidden)}")
        if self.activation not in ACTIVATIONS:
            raise ConfigError(f"model.activation must be one of {sorted(ACTIVATIONS)}, got {self.activation!r}")
        if not 0.0 <= float(self.dropout) < 1.0:
            raise ConfigError(f"model.dropout must be in [0, 1), got {self.dropout!r}")

    def resolved(self, layout: InputLayout, train_rows: int | None = None) -> ModelConfig:
        """This config with its "auto" settings made concrete for ``layout`` and ``train_rows``
        training rows. Without the rows (a model built with no data at hand), batch_norm
        "auto" is off."""
        out = self
        if out.init_std == "auto":
            out = replace(out, init_std=auto_init_std(layout.n_fields, out.embedding_dim))
        if out.batch_norm == "auto":
            density = rows_per_table_row(train_rows, layout) if train_rows else 0.0
            out = replace(out, batch_norm=bool(density >= DENSE_ROWS_PER_TABLE_ROW))
        return out

    @property
    def uses_first_order(self) -> bool:
        return self.kind in ("deepfm", "fm", "lr", "wide_deep")

    @property
    def uses_pairwise(self) -> bool:
        return self.kind in ("deepfm", "fm")

    @property
    def uses_dnn(self) -> bool:
        return self.kind in ("deepfm", "dnn", "wide_deep", "dcn")

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["hidden"] = list(self.hidden)
        return d

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelConfig:
        check_keys("model", data, {f.name for f in fields(cls)})
        return cls(**data)


def rows_per_table_row(train_rows: int, layout: InputLayout) -> float:
    """How many times the training part sees each embedding row on average: the vector
    lookups of ``train_rows`` rows (one per field) over the table's rows."""
    return train_rows * layout.n_fields / max(layout.num_embeddings, 1)


def auto_init_std(n_fields: int, dim: int) -> float:
    """The vectors' initial std sigma that gives the pairwise term sum_{i<j} <v_i, v_j> the
    spread INIT_PAIRWISE_STD: with P = F(F-1)/2 pairs of D products of N(0, sigma^2) draws its
    std is sigma^2 sqrt(P D). 10 fields of 16 (Frappe): 0.061; Criteo's 39: 0.030. Kept in
    [0.01, 0.1], the range measured to work (docs/accuracy.md)."""
    pairs = max(n_fields * (n_fields - 1) // 2, 1)
    return round(min(0.1, max(0.01, math.sqrt(INIT_PAIRWISE_STD / math.sqrt(pairs * dim)))), 4)


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
        self.embedding = embedding or FieldEmbedding(
            layout.num_embeddings, d, list(layout.scaled_positions), list(layout.poolings), float(config.init_std)
        )
        self.bias = nn.Parameter(torch.zeros(1))
        in_dim = layout.n_fields * d
        self.cross = CrossNetwork(in_dim, config.cross_layers) if config.kind == "dcn" else None
        if config.uses_dnn:
            mlp_in = in_dim * 2 if self.cross is not None else in_dim
            self.dnn: MLP | None = MLP(mlp_in, list(config.hidden), config.activation, config.dropout, bool(config.batch_norm))
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
