"""Field kinds and the dataset schema.

A :class:`Schema` says which column holds the label and how every feature column is turned
into one D-vector of the shared embedding:

- ``categorical``: the value's row (rare values share an OOV row, missing values their own);
- ``numeric``: ``scaled`` (transformed value x a learned field vector) or ``bucketized``
  (binned, then treated as a categorical);
- ``multi_hot``: a separator-delimited list, pooled (mean or sum) over its values' rows.

Everything here is a frozen dataclass with a JSON round trip, validated once when built.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any, Literal

from deepfm.errors import ConfigError
from deepfm.util.validation import Auto, check_keys

Kind = Literal["categorical", "numeric", "multi_hot"]
KINDS: tuple[str, ...] = ("categorical", "numeric", "multi_hot")
NUMERIC_MODES: tuple[str, ...] = ("scaled", "bucketized")
TRANSFORMS: tuple[str, ...] = ("none", "log1p", "standardize", "log1p_standardize")
BINNINGS: tuple[str, ...] = ("quantile", "log")
POOLINGS: tuple[str, ...] = ("mean", "sum")

# min_count "auto": the count a value needs for a row of its own grows with the training rows.
# A value seen a few times gets a vector that mostly memorizes its rows, and the more rows a
# run has, the more such values it holds and the longer its epochs train them. At 80k training
# rows 5 lost to 2 (-0.0066 test AUC on the noisy setting); against 2, 10 moved the defaults
# by +0.0000 to +0.0034 at 240k rows on the four synthetic settings, and at 800k rows by
# +0.0017 to +0.0018 on three of them and -0.0015 on the tail setting (3 seeds each).
# docs/accuracy.md has the runs. Between the two row counts the threshold rises linearly.
MIN_COUNT_SMALL = 2  # up to MIN_COUNT_RAMP[0] training rows
MIN_COUNT_LARGE = 10  # from MIN_COUNT_RAMP[1] training rows on
MIN_COUNT_RAMP = (100_000, 200_000)


def auto_min_count(train_rows: int) -> int:
    """min_count "auto" for ``train_rows`` training rows (see MIN_COUNT_RAMP)."""
    lo, hi = MIN_COUNT_RAMP
    t = min(max((train_rows - lo) / (hi - lo), 0.0), 1.0)
    return round(MIN_COUNT_SMALL + t * (MIN_COUNT_LARGE - MIN_COUNT_SMALL))


CRITEO_COLUMNS: tuple[str, ...] = (
    ("label",) + tuple(f"I{i}" for i in range(1, 14)) + tuple(f"C{i}" for i in range(1, 27))
)


@dataclass(frozen=True)
class FieldSpec:
    """How one input column becomes one field vector.

    Options that do not apply to a kind keep their defaults and are ignored by it.
    """

    name: str
    kind: str = "categorical"
    # categorical, bucketized numeric and multi_hot: values seen fewer times in the
    # training part than this share the field's OOV row; "auto": by the training rows
    # (auto_min_count), made a number when the features are fitted.
    min_count: int | Auto = "auto"
    # Fields with a vocabulary: the most values it may hold (0: no cap). A fresh fit keeps the
    # most frequent; a warm start evicts by recency-weighted count (deepfm.vocab).
    max_vocab: int = 0
    # categorical and multi_hot: > 0 hashes values into this many rows and keeps no
    # vocabulary (deepfm.hashing), so memory is fixed however many distinct values there are.
    hash_buckets: int = 0
    # numeric only
    mode: str = "bucketized"
    transform: str = "log1p"  # for mode=scaled
    binning: str = "log"  # for mode=bucketized
    bins: int = 20  # for binning=quantile
    # multi_hot only
    separator: str = "|"
    pooling: str = "mean"

    def __post_init__(self) -> None:
        where = f"field {self.name!r}"
        if not isinstance(self.name, str) or not self.name:
            raise ConfigError(f"{where}: name must be a non-empty string")
        _check_choice(where, "kind", self.kind, KINDS)
        if self.min_count != "auto" and (
            not isinstance(self.min_count, int) or isinstance(self.min_count, bool) or self.min_count < 1
        ):
            raise ConfigError(f'{where}: min_count must be an integer >= 1 or "auto", got {self.min_count!r}')
        if not isinstance(self.max_vocab, int) or self.max_vocab < 0:
            raise ConfigError(f"{where}: max_vocab must be an integer >= 0 (0: no cap), got {self.max_vocab!r}")
        if not isinstance(self.hash_buckets, int) or isinstance(self.hash_buckets, bool) or self.hash_buckets < 0:
            raise ConfigError(
                f"{where}: hash_buckets must be an integer >= 0 (0: a vocabulary), got {self.hash_buckets!r}"
            )
        if self.hash_buckets and self.kind == "numeric":
            raise ConfigError(f"{where}: hash_buckets applies to categorical and multi_hot fields, not numeric ones")
        _check_choice(where, "mode", self.mode, NUMERIC_MODES)
        _check_choice(where, "transform", self.transform, TRANSFORMS)
        _check_choice(where, "binning", self.binning, BINNINGS)
        if not isinstance(self.bins, int) or self.bins < 2:
            raise ConfigError(f"{where}: bins must be an integer >= 2, got {self.bins!r}")
        if not isinstance(self.separator, str) or len(self.separator) == 0:
            raise ConfigError(f"{where}: separator must be a non-empty string")
        _check_choice(where, "pooling", self.pooling, POOLINGS)

    @property
    def is_scaled(self) -> bool:
        """A numeric field whose value multiplies its vector (not looked up by value)."""
        return self.kind == "numeric" and self.mode == "scaled"

    @property
    def is_hashed(self) -> bool:
        """Values reach their rows by a hash (no vocabulary is fitted or saved)."""
        return self.hash_buckets > 0 and self.kind != "numeric"

    @property
    def has_vocabulary(self) -> bool:
        """Fields whose values index rows of the table through a fitted vocabulary."""
        return not self.is_scaled and not self.is_hashed

    def resolved(self, train_rows: int) -> FieldSpec:
        """This spec with min_count "auto" made a number for ``train_rows`` training rows."""
        if self.min_count != "auto":
            return self
        return replace(self, min_count=auto_min_count(train_rows))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any], where: str = "field") -> FieldSpec:
        if not isinstance(data, dict):
            raise ConfigError(f"{where}: expected a mapping like {{name: C1, kind: categorical}}, got {data!r}")
        check_keys(where, data, {f.name for f in fields(cls)})
        if "name" not in data:
            raise ConfigError(f"{where}: missing 'name'")
        return cls(**data)


@dataclass(frozen=True)
class Schema:
    """The label column, the feature fields, and (for headerless files) all column names."""

    label: str
    fields: tuple[FieldSpec, ...]
    # Names of every column in file order, needed for files without a header. Columns that
    # are neither the label nor a field are read and ignored.
    columns: tuple[str, ...] | None = None
    # libFM files use labels 1/-1; text and Parquet files use 1/0.
    label_values: tuple[float, float] = field(default=(0.0, 1.0))

    def __post_init__(self) -> None:
        if not self.fields:
            raise ConfigError("schema: no feature fields declared")
        names = [f.name for f in self.fields]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ConfigError(f"schema: field names declared twice: {dupes}")
        if self.label in names:
            raise ConfigError(f"schema: the label column {self.label!r} is also declared as a field")
        if self.columns is not None:
            missing = [n for n in [self.label, *names] if n not in self.columns]
            if missing:
                raise ConfigError(
                    f"schema: columns {missing} are used but not listed in 'columns' {list(self.columns)}"
                )

    @property
    def names(self) -> list[str]:
        return [f.name for f in self.fields]

    @property
    def numeric_columns(self) -> frozenset[str]:
        """Columns to parse as numbers: the label and the numeric fields."""
        return frozenset([self.label, *(f.name for f in self.fields if f.kind == "numeric")])

    def field(self, name: str) -> FieldSpec:
        for f in self.fields:
            if f.name == name:
                return f
        raise KeyError(name)

    def resolved(self, train_rows: int) -> Schema:
        """This schema with every field's "auto" settings made concrete (FieldSpec.resolved)."""
        return replace(self, fields=tuple(f.resolved(train_rows) for f in self.fields))

    def to_dict(self) -> dict[str, Any]:
        return {
            "label": self.label,
            "fields": [f.to_dict() for f in self.fields],
            "columns": list(self.columns) if self.columns is not None else None,
            "label_values": list(self.label_values),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Schema:
        if not isinstance(data, dict):
            raise ConfigError(f"schema: expected a mapping, got {type(data).__name__}")
        check_keys("schema", data, {"label", "fields", "columns", "label_values"})
        raw_fields = data.get("fields")
        if not isinstance(raw_fields, list) or not raw_fields:
            raise ConfigError("schema: 'fields' must be a non-empty list")
        specs = tuple(FieldSpec.from_dict(f, where=f"fields[{i}]") for i, f in enumerate(raw_fields))
        columns = data.get("columns")
        return cls(
            label=str(data.get("label", "label")),
            fields=specs,
            columns=tuple(columns) if columns is not None else None,
            label_values=tuple(data.get("label_values", (0.0, 1.0))),
        )


def criteo_schema(min_count: int | Auto = "auto", numeric_mode: str = "bucketized") -> Schema:
    """Criteo's 40 columns: ``label, I1..I13`` (counts) and ``C1..C26`` (hashed categoricals).

    The counts are bucketized with log bins by default (floor(log(x)^2), as the Criteo
    challenge winners did), which beats scaling them on this data.
    """
    ints = [
        FieldSpec(name=f"I{i}", kind="numeric", mode=numeric_mode, binning="log", min_count=min_count)
        for i in range(1, 14)
    ]
    cats = [FieldSpec(name=f"C{i}", kind="categorical", min_count=min_count) for i in range(1, 27)]
    return Schema(label="label", fields=tuple(ints + cats), columns=CRITEO_COLUMNS)


PRESETS = {"criteo": criteo_schema}


def _check_choice(where: str, key: str, value: Any, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ConfigError(f"{where}: {key} must be one of {list(allowed)}, got {value!r}")
