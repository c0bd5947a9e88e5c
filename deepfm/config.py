"""Typed run configuration: schema + model + training + reading options, from YAML or flags.

A config file looks like::

    label: label
    columns: [label, I1, C1, genres]     # only for files without a header
    fields:
      - {name: I1, kind: numeric, mode: bucketized, binning: log}
      - {name: C1, kind: categorical, min_count: 2}
      - {name: genres, kind: multi_hot, separator: "|", pooling: mean}
    model: {embedding_dim: 16, hidden: [400, 400, 400], dropout: 0.2}
    train: {batch_size: auto, epochs: 10, lr: 0.001, patience: 2}
    data:  {delimiter: "\\t", header: auto}

or ``preset: criteo`` in place of label/columns/fields. Every key is checked once, here.
The configs are plain frozen dataclasses (no torch): the model and the trainer read them.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import yaml

from deepfm.data.schema import PRESETS, Schema
from deepfm.data.source import ReadOptions
from deepfm.errors import ConfigError
from deepfm.util.validation import Auto, check_keys, coerce_numbers

ACTIVATIONS = ("gelu", "relu", "sigmoid", "silu", "tanh")  # deepfm.model.layers.ACTIVATIONS builds them


MODEL_KINDS = ("deepfm", "fm", "lr", "dnn", "wide_deep", "dcn")
# init_std "auto": the spread, in logit units, of the pairwise FM term at initialization, by
# how often the training rows see each table row (DENSE_ROWS_PER_TABLE_ROW). Sparse data wants
# the pairs to start near zero: most rows are seen a few times, and their random vectors stay
# noise in the pairwise term at test time (spread 0.001, std 0.003 for 39 fields of 16, gained
# +0.0007 to +0.0057 test AUC on the sparse synthetic 100k sets with batches of 256, and lost
# 0.0035, within its spread, on the Criteo sample). Dense data wants a larger start: every row
# is learned, and interaction-heavy data lost 0.0038 at std 0.003.
# The number of pairs sets how much spread a given std makes: see auto_init_std.
INIT_PAIRWISE_STD = 0.1  # dense data
INIT_PAIRWISE_STD_SPARSE = 0.001
# Data is "dense" for the auto settings when the training part sees each table row at least
# this many times on average (rows_per_table_row). Batch norm (model.batch_norm "auto") lets
# the MLP fit fast: it gains where every value is seen often (+0.004 to +0.036 test AUC from 62
# up to 93 rows per table row) and memorizes where most are rare (-0.003 to -0.026 from 27 to
# 56); train.embedding_lr "auto" switches at the same point. docs/accuracy.md has the runs.
DENSE_ROWS_PER_TABLE_ROW = 60.0


class TableShape(Protocol):
    """What the "auto" settings read of a model's input layout (deepfm.model.InputLayout)."""

    @property
    def n_fields(self) -> int: ...

    @property
    def num_embeddings(self) -> int: ...


@dataclass(frozen=True)
class ModelConfig:
    kind: str = "deepfm"
    embedding_dim: int = 16
    hidden: tuple[int, ...] = (400, 400, 400)
    activation: str = "relu"
    dropout: float = 0.2
    # batch norm in the MLP; "auto": from the training data (DENSE_ROWS_PER_TABLE_ROW, see resolved)
    batch_norm: bool | Auto = "auto"
    cross_layers: int = 3  # dcn only
    # std of the vectors' normal initialization; "auto": from the number of fields, the
    # embedding size and the data's density (auto_init_std), resolved with the data (``resolved``)
    init_std: float | Auto = "auto"

    def __post_init__(self) -> None:
        coerce_numbers(self, "model", floats=("dropout",), ints=("embedding_dim", "cross_layers"))
        if self.init_std != "auto":
            coerce_numbers(self, "model", floats=("init_std",))
            if not float(self.init_std) > 0:
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

    def resolved(self, layout: TableShape, train_rows: int | None = None) -> ModelConfig:
        """This config with its "auto" settings made concrete for ``layout`` and ``train_rows``
        training rows. Without the rows (a model built with no data at hand), the data counts
        as sparse: batch_norm "auto" is off and init_std "auto" small."""
        out = self
        dense = (rows_per_table_row(train_rows, layout) if train_rows else 0.0) >= DENSE_ROWS_PER_TABLE_ROW
        if out.init_std == "auto":
            out = replace(out, init_std=auto_init_std(layout.n_fields, out.embedding_dim, dense))
        if out.batch_norm == "auto":
            out = replace(out, batch_norm=dense)
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


def rows_per_table_row(train_rows: int, layout: TableShape) -> float:
    """How many times the training part sees each embedding row on average: the vector
    lookups of ``train_rows`` rows (one per field) over the table's rows."""
    return train_rows * layout.n_fields / max(layout.num_embeddings, 1)


def auto_init_std(n_fields: int, dim: int, dense: bool) -> float:
    """The vectors' initial std sigma that gives the pairwise term sum_{i<j} <v_i, v_j> the
    spread INIT_PAIRWISE_STD (``dense`` data) or INIT_PAIRWISE_STD_SPARSE: with P = F(F-1)/2
    pairs of D products of N(0, sigma^2) draws its std is sigma^2 sqrt(P D). Dense, 10 fields
    of 16 (Frappe): 0.061, Criteo's 39: 0.0303; sparse: 0.0061 and 0.003. Kept in [0.001, 0.1],
    the range measured to work (docs/accuracy.md)."""
    pairs = max(n_fields * (n_fields - 1) // 2, 1)
    spread = INIT_PAIRWISE_STD if dense else INIT_PAIRWISE_STD_SPARSE
    return round(min(0.1, max(0.001, math.sqrt(spread / math.sqrt(pairs * dim)))), 4)


# embedding_lr "auto" (TrainConfig.resolve_embedding_lr): below DENSE_ROWS_PER_TABLE_ROW, 1e-3
# at batches of 256 (the Criteo sample, 100k-row synthetic sets), where 3e-3 gained up to
# +0.025 above it. Row-wise Adam moves a row about one step a batch that holds it, and a value
# seen in most batches gets one update a batch however many of its rows the batch holds: a
# larger batch gives it fewer, so for models with an MLP the sparse step grows with the square
# root of the batch (Adam's scaling rule), up to the dense step: 3e-3 at 4096 gained +0.0105
# test AUC on the 1M-row tail setting, whose best epoch is its first. FM alone lost with it
# (about -0.004 at 300k and 1M rows) and LR did not move: they keep 1e-3 (docs/accuracy.md).
EMBEDDING_LR_SPARSE = 1e-3
EMBEDDING_LR_SPARSE_BATCH = 256  # the batch EMBEDDING_LR_SPARSE was measured at
EMBEDDING_LR_DENSE = 3e-3
# batch_size "auto" aims at this many steps an epoch (TrainConfig.resolve_batch_size): at 80k
# training rows, batches of 256 gained +0.003 to +0.016 test AUC over 2048 on four generator
# settings, where the 32 steps of the rule before it ended runs before the pairs were learned.
STEPS_PER_EPOCH = 256


SHARD_TABLES = ("auto", "row", "table")  # train.shard_tables: how the per-field tables are placed


@dataclass(frozen=True)
class TrainConfig:
    """Training settings. The defaults work untuned from ~10k to millions of rows."""

    batch_size: int | Auto = "auto"  # auto: ~1/256 of the training rows, in [256, 4096] (resolve_batch_size)
    # The most; early stopping ends runs well before it (interaction-heavy data such as Frappe
    # keeps improving for 10-20 epochs, Criteo-like clicks stop after 4-10 with fresh tables).
    epochs: int = 50
    lr: float = 1e-3  # Adam, dense parameters
    # row-wise Adam on the embedding table; "auto": from how often the training rows see each
    # table row, the global batch and whether the model has an MLP (see resolve_embedding_lr)
    embedding_lr: float | Auto = "auto"
    l2_embedding: float = 1e-5  # on the table rows each batch uses
    weight_decay: float = 0.0  # dense parameters
    patience: int = 2  # epochs without a better valid AUC before stopping
    # A valid AUC counts as better when it beats the best by more than this: gains of 1e-5 an
    # epoch at a decayed learning rate would otherwise keep a finished run going to the cap.
    min_improvement: float = 1e-4
    lr_decay: float = 0.03  # multiply both learning rates by this when valid AUC falls
    # Start epochs 2, 3, ... from a fresh embedding table while the last such epoch was the
    # best so far; the MLP keeps learning across them (see deepfm.training.stopping). "auto":
    # on for models with an MLP, off for sharded tables; never for a warm start
    # (resolve_reset_embeddings).
    reset_embeddings: bool | Auto = "auto"
    # Fit Platt scaling (two parameters on the logit) on the validation rows' scores after
    # training, when they hold at least 50 rows of each class: early stopping picks the epoch
    # of the best AUC, which is often past the best logloss, so scores come out overconfident.
    calibrate: bool = True
    seed: int = 2024
    device: str = "auto"  # auto | cpu | cuda
    threads: int = 0  # torch intra-op threads per process; 0 = PyTorch's default (OMP_NUM_THREADS, else one per core)
    eval_batch_size: int = 16384
    progress: bool = True
    checkpoint_every: int = 2000  # steps between checkpoints (and one at each epoch's end); 0: epoch ends only
    # None: every rank keeps the whole table (data-parallel). auto | row | table: the table is
    # cut into one table per field, sharded over the ranks by torchrec (deepfm.training.sharded):
    # row: each table split row-wise over every rank; table: each placed whole on one rank;
    # auto: split only the tables larger than a rank's fair share (all rows / ranks).
    shard_tables: str | None = None

    def __post_init__(self) -> None:
        coerce_numbers(
            self,
            "train",
            floats=("lr", "l2_embedding", "weight_decay", "lr_decay", "min_improvement"),
            ints=("epochs", "patience", "seed", "threads", "eval_batch_size", "checkpoint_every"),
        )
        if self.batch_size != "auto" and not isinstance(self.batch_size, int):
            coerce_numbers(self, "train", ints=("batch_size",))
        if self.batch_size != "auto" and (not isinstance(self.batch_size, int) or self.batch_size < 1):
            raise ConfigError(f"train.batch_size must be a positive integer or 'auto', got {self.batch_size!r}")
        if self.embedding_lr != "auto":
            coerce_numbers(self, "train", floats=("embedding_lr",))
        if not isinstance(self.epochs, int) or self.epochs < 1:
            raise ConfigError(f"train.epochs must be a positive integer, got {self.epochs!r}")
        for name in ("lr", "embedding_lr"):
            if getattr(self, name) != "auto" and not float(getattr(self, name)) > 0:
                raise ConfigError(f"train.{name} must be > 0, got {getattr(self, name)!r}")
        for name in ("l2_embedding", "weight_decay", "min_improvement"):
            if float(getattr(self, name)) < 0:
                raise ConfigError(f"train.{name} must be >= 0, got {getattr(self, name)!r}")
        if not 0 < float(self.lr_decay) <= 1:
            raise ConfigError(f"train.lr_decay must be in (0, 1], got {self.lr_decay!r}")
        if not isinstance(self.checkpoint_every, int) or self.checkpoint_every < 0:
            raise ConfigError(f"train.checkpoint_every must be an integer >= 0, got {self.checkpoint_every!r}")
        if not isinstance(self.reset_embeddings, bool) and self.reset_embeddings != "auto":
            raise ConfigError(f"train.reset_embeddings must be true, false or 'auto', got {self.reset_embeddings!r}")
        if not isinstance(self.calibrate, bool):
            raise ConfigError(f"train.calibrate must be true or false, got {self.calibrate!r}")
        if not isinstance(self.patience, int) or self.patience < 1:
            raise ConfigError(f"train.patience must be an integer >= 1, got {self.patience!r}")
        if self.shard_tables not in (None, *SHARD_TABLES):
            raise ConfigError(
                f"train.shard_tables must be one of {', '.join(SHARD_TABLES)} (or unset), got {self.shard_tables!r}"
            )
        if self.device not in ("auto", "cpu", "cuda") and not str(self.device).startswith("cuda:"):
            raise ConfigError(f"train.device must be auto, cpu or cuda, got {self.device!r}")

    def resolve_embedding_lr(self, rows_per_table_row: float, batch_size: int, deep: bool = True) -> float:
        """'auto': the row-wise step for a table whose rows the training part sees
        ``rows_per_table_row`` times each on average (rows x fields / table rows), in global
        batches of ``batch_size`` (all processes' rows of one step). Where most values are
        rare, a smaller step keeps their vectors from memorizing the few clicks they saw; for
        a model with a ``deep`` part it grows with sqrt(batch / 256) above batches of 256 (never
        below the sparse step), since a larger batch gives the values seen in most batches
        fewer updates, up to the dense step (the MLP and its dropout use what the vectors learn;
        FM alone memorizes with the larger step). Where every value is seen often, the larger
        step learns faster. Measured with row-wise Adam; the sharded trainer's row-wise
        Adagrad takes the same value."""
        if self.embedding_lr != "auto":
            return float(self.embedding_lr)
        if rows_per_table_row >= DENSE_ROWS_PER_TABLE_ROW:
            return EMBEDDING_LR_DENSE
        if not deep:
            return EMBEDDING_LR_SPARSE
        scaled = EMBEDDING_LR_SPARSE * math.sqrt(max(batch_size, 1) / EMBEDDING_LR_SPARSE_BATCH)
        return float(f"{min(EMBEDDING_LR_DENSE, max(EMBEDDING_LR_SPARSE, scaled)):.3g}")

    def resolve_reset_embeddings(self, deep: bool, warm: bool) -> bool:
        """'auto': on for a model with a ``deep`` part (an MLP learns across the fresh tables;
        without one a fresh table is a fresh model), off for sharded tables (their rows live in
        torchrec). Off for a ``warm`` start whatever the setting: a fresh table would drop the
        one it starts from, and a warm start's config is its base model's, resolved value and all."""
        if warm:
            return False
        if self.reset_embeddings != "auto":
            return bool(self.reset_embeddings)
        return deep and self.shard_tables is None

    def resolve_batch_size(self, n_train: int) -> int:
        """'auto': the power of two nearest n_train / 256 (about 256 steps an epoch), kept in
        [256, 4096]; below ~8k rows, nearest n_train / 32 (at least 64), so that small data
        still gets about 32 steps an epoch. Early stopping looks once an epoch: with the
        steps of a 4096 batch, runs of 100k rows end before the model has learned its pairs
        (docs/accuracy.md has the study); from ~500k rows it is 4096, the fast batch."""
        if self.batch_size != "auto":
            return int(self.batch_size)

        def power_of_two(x: float) -> int:
            return int(2 ** int(round(np.log2(max(x, 1.0)))))

        small = max(64, power_of_two(n_train / 32))
        return min(small, min(4096, max(256, power_of_two(n_train / STEPS_PER_EPOCH))))


TRACKER_KINDS = ("tensorboard", "mlflow")  # deepfm.training.tracking


def parse_spec(spec: str) -> tuple[str, str | None]:
    """ "tensorboard:DIR" -> ("tensorboard", DIR); "mlflow" -> ("mlflow", None); "mlflow:URI" ->
    ("mlflow", URI). Anything else is a ConfigError naming the expected forms."""
    if not isinstance(spec, str):
        raise ConfigError(f"track: expected a string like 'tensorboard:DIR' or 'mlflow[:URI]', got {spec!r}")
    kind, _, target = spec.partition(":")
    if kind not in TRACKER_KINDS:
        raise ConfigError(f"track: expected 'tensorboard:DIR', 'mlflow' or 'mlflow:TRACKING_URI', got {spec!r}")
    if kind == "tensorboard" and not target:
        raise ConfigError(
            f"track: tensorboard needs a folder for its event files, e.g. 'tensorboard:runs/tb', got {spec!r}"
        )
    return kind, target or None


def specs(track: str | Sequence[str] | None) -> tuple[str, ...]:
    """One spec or several, checked, as a tuple (None: none)."""
    items = () if track is None else (track,) if isinstance(track, str) else tuple(track)
    for s in items:
        parse_spec(s)
    return items


@dataclass(frozen=True)
class RunConfig:
    schema: Schema
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    data: ReadOptions = field(default_factory=ReadOptions)
    # Where runs are tracked ("tensorboard:DIR", "mlflow[:URI]"; see deepfm.training.tracking).
    # Not a model setting: training drops it before the config is saved with the model.
    track: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "track", specs(self.track))

    def to_dict(self) -> dict[str, Any]:
        return {
            **self.schema.to_dict(),
            "model": self.model.to_dict(),
            "train": asdict(self.train),
            "data": asdict(self.data),
            **({"track": list(self.track)} if self.track else {}),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any], where: str = "config") -> RunConfig:
        if not isinstance(data, dict):
            raise ConfigError(f"{where}: expected a mapping at the top level")
        # split: how a run splits its data by time: read with the run's inputs (deepfm.ColumnSplit)
        known = {"preset", "label", "columns", "fields", "label_values", "model", "train", "data", "track", "split"}
        check_keys(where, data, known)
        try:
            if "preset" in data:
                if data["preset"] not in PRESETS:
                    raise ConfigError(f"preset must be one of {sorted(PRESETS)}, got {data['preset']!r}")
                if "fields" in data:
                    raise ConfigError("give either 'preset' or 'fields', not both")
                schema = PRESETS[data["preset"]]()
            else:
                schema = Schema.from_dict(
                    {k: data[k] for k in ("label", "columns", "fields", "label_values") if k in data}
                )
            return cls(
                schema=schema,
                model=ModelConfig.from_dict(_mapping(data, "model")),
                train=_build(TrainConfig, _mapping(data, "train"), "train"),
                data=_build(ReadOptions, _mapping(data, "data"), "data"),
                track=specs(data.get("track")),
            )
        except ConfigError as exc:
            raise ConfigError(f"{where}: {exc}") from None


def load_config(path: str | Path) -> dict[str, Any]:
    """Read a YAML (or JSON) config file into a mapping; errors name the file and line."""
    p = Path(path)
    if not p.exists():
        raise ConfigError(f"config file not found: {p}")
    try:
        data = yaml.safe_load(p.read_text())
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f" line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"{p}:{line} is not valid YAML: {getattr(exc, 'problem', exc)}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{p}: expected a mapping of keys (label, fields, model, train, data)")
    return data


def read_options(data: dict[str, Any], where: str = "config") -> ReadOptions:
    """The ``data:`` section of a config mapping, checked."""
    try:
        return _build(ReadOptions, _mapping(data, "data"), "data")
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc}") from None


def with_overrides(config: RunConfig, model: dict[str, Any], train: dict[str, Any], data: dict[str, Any]) -> RunConfig:
    """Apply command-line overrides (None values are ignored)."""

    def clean(d: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in d.items() if v is not None}

    try:
        return replace(
            config,
            model=replace(config.model, **clean(model)),
            train=replace(config.train, **clean(train)),
            data=replace(config.data, **clean(data)),
        )
    except TypeError as exc:
        raise ConfigError(str(exc)) from None


def _mapping(data: dict[str, Any], key: str) -> dict[str, Any]:
    value = data.get(key) or {}
    if not isinstance(value, dict):
        raise ConfigError(f"'{key}' must be a mapping, got {value!r}")
    return value


def _build(cls: type, values: dict[str, Any], where: str) -> Any:
    check_keys(where, values, {f.name for f in fields(cls)})
    return cls(**values)
