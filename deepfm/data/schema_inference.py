"""Field kinds guessed from the data, for files and tables that come without a schema.

A column's Arrow type says little: user and item numbers, zip codes and ad ids are integers as
much as click counts are, and treating an id as a count (log bins) merges unrelated users into
one bin. So each column of a sample of rows is judged by its values, with its name as a hint:

- text whose values hold a list separator (``Comedy|Romance``), and splitting makes fewer
  distinct tokens than there were distinct values: ``multi_hot`` with that separator;
- other text, booleans: ``categorical``;
- numbers with a fraction: ``numeric``, quantile bins;
- integers, in this order:
  1. at most SMALL_CODE_SET distinct values: ``categorical`` (a flag, a code set, a small
     count: each value keeps a row of its own);
  2. a name that says identifier (``user_id``, ``item``, ``zip``...): ``categorical``;
     a name that says amount (``count``, ``price``, ``clicks``...): ``numeric``;
  3. starting near zero and spread over orders of magnitude (99th percentile >= HEAVY_TAIL x
     the median), as counts and amounts are: ``numeric``, log bins (the Criteo winners');
  4. almost every value distinct (timestamps, row numbers): ``numeric``, quantile bins;
  5. a smooth histogram, as ages or years have: each value about as frequent as the mean of
     its two neighbours on a log scale, within sampling noise (ROUGHNESS), judged where values
     repeat often enough (MIN_REPEATS) for that noise not to hide an id's uneven counts:
     ``numeric``, quantile bins;
  6. otherwise (uneven counts among neighbours, as ids have): ``categorical``.

Every guess carries its reason; ``deepfm schema`` prints them beside the YAML.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from deepfm.data.schema import FieldSpec, Schema
from deepfm.data.source import Reader
from deepfm.errors import ConfigError

SAMPLE_ROWS = 100_000  # rows of a file looked at
SMALL_CODE_SET = 32
HEAVY_TAIL = 10.0
# Median over runs of three consecutive integers of d^2 / var(d), where d = log c(v) minus the
# mean of log c(v-1) and log c(v+1), and var(d) its Poisson sampling variance: ~0.45 (the
# median of chi-square with one degree of freedom) for a smooth histogram, a steep one
# included; tens to thousands for ids, whose neighbours' counts are unrelated.
ROUGHNESS = 3.0
MIN_REPEATS = 20  # mean rows per value for the histogram to be judged
LIST_SEPARATORS = ("|", ";", ",")
LIST_SHARE = 0.05  # of the values holding a separator, for a list column

_ID_WORDS = {
    "id",
    "ids",
    "uid",
    "uuid",
    "key",
    "code",
    "zip",
    "zipcode",
    "postcode",
    "postal",
    "user",
    "users",
    "item",
    "items",
    "movie",
    "product",
    "sku",
    "ad",
    "ads",
    "advertiser",
    "campaign",
    "creative",
    "site",
    "app",
    "device",
    "publisher",
    "domain",
    "category",
    "cat",
    "type",
    "brand",
    "store",
    "shop",
    "country",
    "city",
    "region",
    "state",
    "gender",
    "occupation",
    "os",
    "browser",
    "model",
    "channel",
    "slot",
    "placement",
    "partner",
    "merchant",
    "hash",
}
_AMOUNT_WORDS = {
    "count",
    "counts",
    "cnt",
    "num",
    "number",
    "amount",
    "price",
    "cost",
    "revenue",
    "spend",
    "clicks",
    "impressions",
    "views",
    "visits",
    "sessions",
    "duration",
    "seconds",
    "length",
    "size",
    "total",
    "sum",
    "balance",
    "quantity",
    "qty",
    "distance",
    "weight",
    "height",
    "income",
    "salary",
    "score",
    "rating",
    "age",
}


@dataclass(frozen=True)
class Guess:
    """One column's inferred field and why."""

    spec: FieldSpec
    reason: str


def infer_schema(reader: Reader, label: str = "label") -> tuple[Schema, list[Guess]]:
    """The schema of a file without one, from its first SAMPLE_ROWS rows: ``label`` and a
    field for every other column, with the reason for each. libFM files are positions of
    categorical features, so every field is categorical."""
    if label not in reader.columns:
        raise ConfigError(
            f"{reader.path}: no label column {label!r} among {reader.columns}; name it with --label "
            "or describe the file with --config / --preset"
        )
    if reader.one_hot:  # libFM: every column holds the positions of one categorical field
        guesses = [_categorical(name, "a libFM position", {}) for name in reader.columns if name != label]
        return Schema(label=label, fields=tuple(g.spec for g in guesses), label_values=reader.label_values), guesses
    parts, rows = [], 0
    for chunk in reader.chunks(reader.columns):
        parts.append(chunk.table)
        rows += chunk.table.num_rows
        if rows >= SAMPLE_ROWS:
            break
    sample = (
        pa.concat_tables(parts).slice(0, SAMPLE_ROWS)
        if parts
        else pa.table({c: pa.array([], pa.string()) for c in reader.columns})
    )
    guesses = infer_fields(sample, exclude=(label,))
    return Schema(label=label, fields=tuple(g.spec for g in guesses)), guesses


def schema_yaml(schema: Schema, guesses: list[Guess], source: str) -> str:
    """The inferred schema as a config file to edit, each field's reason beside it."""
    lines = [
        f"# The schema deepfm infers for {source} (from its first {SAMPLE_ROWS:,} rows at most).",
        "# Edit it and pass it with --config; model:, train: and data: sections may be added.",
        f"label: {schema.label}",
    ]
    if schema.label_values != (0.0, 1.0):
        lines.append(f"label_values: [{schema.label_values[0]:g}, {schema.label_values[1]:g}]")
    lines.append("fields:")
    for g in guesses:
        spec = {"name": g.spec.name, "kind": g.spec.kind}
        if g.spec.kind == "numeric":
            spec.update(mode=g.spec.mode, binning=g.spec.binning)
        elif g.spec.kind == "multi_hot":
            spec["separator"] = g.spec.separator
        flow = ", ".join(f"{k}: {_yaml_scalar(v)}" for k, v in spec.items())
        lines.append(f"  - {{{flow}}}  # {g.reason}")
    return "\n".join(lines) + "\n"


def _yaml_scalar(value: str) -> str:
    import json

    plain = re.fullmatch(r"[A-Za-z_][A-Za-z0-9_.\-]*", value) is not None and value not in (
        "true",
        "false",
        "null",
        "yes",
        "no",
    )
    return value if plain else json.dumps(value)  # JSON strings are YAML strings


def infer_fields(table: pa.Table, exclude: tuple[str, ...] = ()) -> list[Guess]:
    """A guess for every column of ``table`` but those in ``exclude`` (the label)."""
    return [guess_field(name, table.column(name)) for name in table.column_names if name not in exclude]


def guess_field(name: str, column: pa.ChunkedArray | pa.Array, **options: Any) -> Guess:
    """The field spec of one column from its values (see the module's rules); ``options``
    (min_count, ...) go into the spec."""
    t = column.type
    if pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_list_view(t) or pa.types.is_large_list_view(t):
        return Guess(FieldSpec(name=name, kind="multi_hot", **options), "lists")
    if pa.types.is_string(t) or pa.types.is_large_string(t):
        x = _as_numbers(column)  # text files hold numbers as text
        return _text(name, column, options) if x is None else number_field(name, x, **options)
    if pa.types.is_integer(t) or pa.types.is_floating(t):
        x = pc.cast(column, pa.float64()).to_numpy(zero_copy_only=False)
        return number_field(name, x, **options)
    return Guess(FieldSpec(name=name, kind="categorical", **options), f"values of type {t}")


def number_field(name: str, x: np.ndarray, **options: Any) -> Guess:
    """The field of a numeric column from its values (N,), NaN for missing."""
    v = x[~np.isnan(x)]
    if v.size == 0:
        return Guess(FieldSpec(name=name, kind="categorical", **options), "no values in the sample")
    if not np.all(v == np.round(v)):
        return _numeric(name, "quantile", "numbers with fractions", options)
    values, counts = np.unique(v, return_counts=True)
    described = f"{values.size:,} distinct integers in {values[0]:g}..{values[-1]:g}"
    if values.size <= SMALL_CODE_SET:
        return _categorical(name, f"{described}: a small set, each value its own row", options)
    words = set(_words(name))
    if words & _ID_WORDS:
        return _categorical(name, f"{described}; the name says identifier", options)
    counts_like = values[0] <= 1 and _tail(v) >= HEAVY_TAIL
    if words & _AMOUNT_WORDS:
        return _numeric(name, "log" if counts_like else "quantile", f"{described}; the name says amount", options)
    if counts_like:
        return _numeric(name, "log", f"{described}, from zero over orders of magnitude: counts or amounts", options)
    if values.size >= 0.5 * v.size:
        return _numeric(name, "quantile", f"{described}, nearly every value distinct (a time or a row number)", options)
    roughness = _roughness(values, counts) if v.size >= MIN_REPEATS * values.size else None
    if roughness is not None and roughness <= ROUGHNESS:
        return _numeric(name, "quantile", f"{described}, a smooth histogram: a measure", options)
    return _categorical(name, f"{described}, uneven counts among neighbours: an identifier", options)


def _as_numbers(column: pa.ChunkedArray | pa.Array) -> np.ndarray | None:
    """Text that is all numbers (blank: missing) as float64, or None. (N,)"""
    trimmed = pc.utf8_trim_whitespace(column)
    trimmed = pc.if_else(pc.equal(trimmed, ""), pa.scalar(None, trimmed.type), trimmed)
    try:
        x = pc.cast(trimmed, pa.float64()).to_numpy(zero_copy_only=False)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return None
    return None if np.isinf(x).any() else x  # '8e123456' is a hash, not a number


def _text(name: str, column: pa.ChunkedArray | pa.Array, options: dict[str, Any]) -> Guess:
    """multi_hot with the separator its values use, or categorical."""
    values = pc.unique(pc.drop_null(column))
    if len(values) == 0:
        return _categorical(name, "no values in the sample", options)
    best: tuple[float, str] | None = None
    for sep in LIST_SEPARATORS:
        share = pc.sum(pc.match_substring(values, sep)).as_py() / len(values)
        if share >= LIST_SHARE and (best is None or share > best[0]):
            best = (share, sep)
    if best is not None:
        sep = best[1]
        tokens = pc.unique(pc.utf8_trim_whitespace(pc.list_flatten(pc.split_pattern(values, sep))))
        if len(tokens) < len(values):
            reason = (
                f"lists: {best[0]:.0%} of {len(values):,} distinct values hold {sep!r}, {len(tokens):,} distinct items"
            )
            return Guess(FieldSpec(name=name, kind="multi_hot", separator=sep, **options), reason)
    return _categorical(name, f"text, {len(values):,} distinct values", options)


def _categorical(name: str, reason: str, options: dict[str, Any]) -> Guess:
    return Guess(FieldSpec(name=name, kind="categorical", **options), reason)


def _numeric(name: str, binning: str, reason: str, options: dict[str, Any]) -> Guess:
    spec = FieldSpec(name=name, kind="numeric", mode="bucketized", binning=binning, **options)
    return Guess(spec, f"{reason} ({binning} bins)")


def _words(name: str) -> list[str]:
    """``userId``, ``user_id``, ``User ID`` -> ["user", "id"]."""
    spaced = re.sub(r"(?<=[a-z0-9])(?=[A-Z])", " ", name)
    return [w for w in re.split(r"[^A-Za-z0-9]+", spaced.lower()) if w]


def _tail(v: np.ndarray) -> float:
    """(|99th percentile| + 1) / (|median| + 1): how many times the typical value the large
    ones are."""
    q50, q99 = np.quantile(np.abs(v), [0.5, 0.99])
    return float((q99 + 1) / (q50 + 1))


def _roughness(values: np.ndarray, counts: np.ndarray) -> float | None:
    """How unevenly consecutive integers occur (see ROUGHNESS); None with fewer than 8 runs of
    three to judge by. values (K,) ascending, counts (K,)"""
    step = np.diff(values) == 1
    mid = np.flatnonzero(step[:-1] & step[1:]) + 1  # v with v-1 and v+1 present
    if mid.size < 8:
        return None
    c = counts.astype(np.float64)
    lo, at, hi = c[mid - 1], c[mid], c[mid + 1]
    d = np.log(at) - (np.log(lo) + np.log(hi)) / 2
    var = 1 / at + (1 / lo + 1 / hi) / 4
    return float(np.median(d * d / var))
