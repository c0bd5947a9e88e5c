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
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from deepfm.errors import ConfigError
from deepfm.io import ReadOptions
from deepfm.model import DENSE_ROWS_PER_TABLE_ROW, ModelConfig
from deepfm.schema import PRESETS, FieldSpec, Schema, check_keys, coerce_numbers
from deepfm.tracking import specs


# embedding_lr "auto" (TrainConfig.resolve_embedding_lr): below DENSE_ROWS_PER_TABLE_ROW, 1e-3
# gained +0.0005 to +0.009 test AUC (Criteo sample, 100k-row synthetic sets) where 3e-3 gained
# up to +0.025 above it.
EMBEDDING_LR_SPARSE = 1e-3
EMBEDDING_LR_DENSE = 3e-3


@dataclass(frozen=True)
class TrainConfig:
    """Training settings. The defaults work untuned from ~10k to millions of rows."""

    batch_size: int | str = "auto"  # auto: ~1/32 of the training rows, clipped to [64, 4096]
    # The most; early stopping ends runs well before it (interaction-heavy data such as Frappe
    # keeps improving for 10-20 epochs, Criteo-like clicks stop after 2-5).
    epochs: int = 50
    lr: float = 1e-3  # Adam, dense parameters
    # row-wise Adam on the embedding table; "auto": from how often the training rows see each
    # table row (see resolve_embedding_lr)
    embedding_lr: float | str = "auto"
    l2_embedding: float = 1e-5  # on the table rows each batch uses
    weight_decay: float = 0.0  # dense parameters
    patience: int = 2  # epochs without a better valid AUC before stopping
    # A valid AUC counts as better when it beats the best by more than this: gains of 1e-5 an
    # epoch at a decayed learning rate would otherwise keep a finished run going to the cap.
    min_improvement: float = 1e-4
    lr_decay: float = 0.1  # multiply both learning rates by this when valid AUC stalls
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

    def __post_init__(self) -> None:
        coerce_numbers(
            self, "train", floats=("lr", "l2_embedding", "weight_decay", "lr_decay", "min_improvement"),
            ints=("epochs", "patience", "seed", "threads", "eval_batch_size", "checkpoint_every"),
        )  # fmt: skip
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
        if not isinstance(self.calibrate, bool):
            raise ConfigError(f"train.calibrate must be true or false, got {self.calibrate!r}")
        if not isinstance(self.patience, int) or self.patience < 1:
            raise ConfigError(f"train.patience must be an integer >= 1, got {self.patience!r}")
        if self.device not in ("auto", "cpu", "cuda") and not str(self.device).startswith("cuda:"):
            raise ConfigError(f"train.device must be auto, cpu or cuda, got {self.device!r}")

    def resolve_embedding_lr(self, rows_per_table_row: float) -> float:
        """'auto': the row-wise step for a table whose rows the training part sees
        ``rows_per_table_row`` times each on average (rows x fields / table rows). Where most
        values are rare, a smaller step keeps their vectors from memorizing the few clicks
        they saw; where every value is seen often, the larger step learns faster."""
        if self.embedding_lr != "auto":
            return float(self.embedding_lr)
        return EMBEDDING_LR_SPARSE if rows_per_table_row < DENSE_ROWS_PER_TABLE_ROW else EMBEDDING_LR_DENSE

    def resolve_batch_size(self, n_train: int) -> int:
        """'auto': about 32 steps per epoch on small data (a power of two), 4096 from ~100k rows
        up. Small data with a CTR-sized batch would get two steps an epoch and never learn."""
        if self.batch_size != "auto":
            return int(self.batch_size)
        target = max(n_train / 32, 1.0)
        return int(min(4096, max(64, 2 ** int(round(np.log2(target))))))


@dataclass(frozen=True)
class RunConfig:
    schema: Schema
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    data: ReadOptions = field(default_factory=ReadOptions)
    # Where runs are tracked ("tensorboard:DIR", "mlflow[:URI]"; see deepfm.tracking). Not a
    # model setting: training drops it before the config is saved with the model.
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
        known = {"preset", "label", "columns", "fields", "label_values", "model", "train", "data", "track"}
        check_keys(where, data, known)
        try:
            if "preset" in data:
                if data["preset"] not in PRESETS:
                    raise ConfigError(f"preset must be one of {sorted(PRESETS)}, got {data['preset']!r}")
                if "fields" in data:
                    raise ConfigError("give either 'preset' or 'fields', not both")
                schema = PRESETS[data["preset"]]()
            else:
                schema = Schema.from_dict({k: data[k] for k in ("label", "columns", "fields", "label_values") if k in data})
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
        return _build(ReadOptions, _mapping(data, "data"), "data")  # type: ignore[no-any-return]
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
