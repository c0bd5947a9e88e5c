"""X as the estimator reads it: pandas or polars DataFrames, Arrow tables and 2-D arrays as
an Arrow table of plain types, aligned with the columns seen in fit; list columns (multi-hot)
joined with a separator none of their values holds, as the feature pipeline reads them."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from deepfm.bundle import Bundle
from deepfm.data.columns import float_text, with_values
from deepfm.data.schema import Schema
from deepfm.data.tables import as_table
from deepfm.errors import ConfigError, DataError
from deepfm.estimator.labels import is_missing

# Tried in order for list columns; the pipeline trims whitespace around tokens, so no spaces.
SEPARATORS = ("|", ";", ",", "/", "\x1f", "\x1e", "\x1d", "\x1c")


def to_table(X: Any, what: str) -> tuple[pa.Table, bool]:
    """X as an Arrow table with plain types, and whether its column names are real names
    (a DataFrame's or table's string names; arrays get x0, x1, ...)."""
    module = type(X).__module__
    if module.startswith("scipy.sparse") or hasattr(X, "tocsr"):
        raise TypeError(f"{what}: sparse matrices are not supported; pass a DataFrame, an Arrow table or a dense array")
    if module.startswith(("pandas", "polars")) and type(X).__name__ != "DataFrame":
        raise ValueError(f"{what}: expected 2-D data (a DataFrame), got a {type(X).__name__}. Reshape your data")
    if isinstance(X, (pa.Table, pa.RecordBatch)) or module.startswith("polars"):
        table, named = as_table(X), True
    elif module.startswith("pandas"):
        named = all(isinstance(c, str) for c in X.columns)
        table = _from_pandas(X, what)
    else:
        table, named = _from_array(X, what), False
    if not named:
        table = table.rename_columns([f"x{i}" for i in range(table.num_columns)])
    dupes = sorted({c for c in table.column_names if table.column_names.count(c) > 1})
    if dupes:
        raise DataError(f"{what} names columns more than once: {dupes}")
    return pa.table([_plain(c) for c in table.columns], names=table.column_names), named


def _from_pandas(df: Any, what: str) -> pa.Table:
    try:
        return as_table(df)
    except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
        for name in df.columns:  # error path only: find the column Arrow could not convert
            try:
                pa.array(df[name], from_pandas=True)
            except (pa.ArrowInvalid, pa.ArrowTypeError) as col_exc:
                raise _mixed_types(df[name].tolist(), str(name), what, col_exc) from None
        raise DataError(f"{what}: cannot convert the DataFrame to Arrow ({exc})") from None


def _from_array(X: Any, what: str) -> pa.Table:
    arr = np.asarray(X)
    if np.iscomplexobj(arr):
        raise ValueError(f"{what}: Complex data not supported")
    if arr.ndim != 2:
        raise ValueError(
            f"{what}: expected 2-D data (a DataFrame, an Arrow table or a 2-D array), got {arr.ndim}-D. "
            "Reshape your data, e.g. with array.reshape(-1, 1) for a single feature"
        )
    columns = []
    for j in range(arr.shape[1]):
        try:
            columns.append(pa.array(arr[:, j], from_pandas=True))  # from_pandas: NaN in objects is null
        except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
            raise _mixed_types(arr[:, j].tolist(), f"x{j}", what, exc) from None
    return pa.table(columns, names=[f"x{j}" for j in range(arr.shape[1])])


def _mixed_types(values: list[Any], name: str, what: str, exc: Exception) -> DataError:
    """The error for a column Arrow cannot convert: the first record whose type differs from
    the column's first value (text among numbers, say)."""

    def sort(v: Any) -> str:
        is_number = isinstance(v, (int, float, np.number)) and not isinstance(v, (bool, np.bool_))
        return "a number" if is_number else "text" if isinstance(v, str) else type(v).__name__

    present = [(i, v) for i, v in enumerate(values) if not is_missing(v)]
    for i, v in present:
        if sort(v) != sort(present[0][1]):
            return DataError(
                f"{what}: expected {sort(present[0][1])} as in record {present[0][0]}, got {v!r}",
                line=f"record {i}",
                field=name,
            )
    return DataError(f"{what}: cannot convert the column ({exc})", field=name)


def _plain(col: pa.ChunkedArray) -> pa.ChunkedArray:
    """Types the pipeline reads: categoricals decoded, large and view strings as strings,
    decimals as floats; list columns keep their lists (joined later, see ``join_lists``)."""
    t = col.type
    if pa.types.is_dictionary(t):
        col, t = col.cast(t.value_type), t.value_type
    if pa.types.is_large_string(t) or _is_string_view(t):
        return col.cast(pa.string())
    if pa.types.is_decimal(t):
        return col.cast(pa.float64())
    return col


def _is_string_view(t: pa.DataType) -> bool:
    return bool(getattr(pa.types, "is_string_view", lambda _: False)(t))


def _is_list(t: pa.DataType) -> bool:
    views = (getattr(pa.types, "is_list_view", None), getattr(pa.types, "is_large_list_view", None))
    plain = pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t)
    return plain or any(f is not None and f(t) for f in views)


def integral(column: pa.ChunkedArray) -> bool:
    """Every value a whole number (counts: log bins), for a column declared numeric."""
    if not (pa.types.is_integer(column.type) or pa.types.is_floating(column.type)):
        return False
    x = pc.cast(column, pa.float64()).to_numpy(zero_copy_only=False)
    x = x[~np.isnan(x)]
    return bool(x.size) and bool(np.all(x == np.round(x)))


def default_kind(t: pa.DataType) -> str | None:
    """The default kind of an Arrow column type; None where there is no sensible one."""
    if pa.types.is_integer(t) or pa.types.is_floating(t):
        return "numeric"
    if pa.types.is_string(t) or pa.types.is_boolean(t) or pa.types.is_null(t):
        return "categorical"
    if _is_list(t) and _is_scalar(t.value_type):
        return "multi_hot"
    return None


def _is_scalar(t: pa.DataType) -> bool:
    """A type whose values read as one token of a list: text, numbers, bools, categoricals."""
    if pa.types.is_dictionary(t):
        t = t.value_type
    return any(
        check(t)
        for check in (
            pa.types.is_string,
            pa.types.is_large_string,
            _is_string_view,
            pa.types.is_integer,
            pa.types.is_floating,
            pa.types.is_boolean,
            pa.types.is_null,
        )
    )


def align(data: tuple[pa.Table, bool], names: list[str], fitted_named: bool, what: str) -> pa.Table:
    """``data`` with the training columns ``names``, in that order: by name when both have
    names, by position otherwise (with scikit-learn's warning when only one side has them)."""
    table, named = data
    if named and fitted_named:
        missing = [c for c in names if c not in table.column_names]
        extra = [c for c in table.column_names if c not in names]
        if missing or extra:
            raise DataError(
                f"{what}: the columns differ from those seen in fit: missing {missing}, not seen in fit {extra}"
            )
        return table.select(names)
    if table.num_columns != len(names):
        raise ValueError(
            f"{what} has {table.num_columns} features, but DeepFMClassifier is expecting {len(names)} features as input"
        )
    if named:
        warnings.warn(
            f"{what} has feature names, but DeepFMClassifier was fitted without feature names",
            UserWarning,
            stacklevel=3,
        )
    elif fitted_named:
        warnings.warn(
            f"{what} does not have valid feature names, but DeepFMClassifier was fitted with feature names",
            UserWarning,
            stacklevel=3,
        )
    return table.rename_columns(names)


def eval_pair(eval_set: Any) -> tuple[Any, Any]:
    """``(X, y)`` or ``[(X, y)]`` (the form other libraries take) -> (X, y)."""
    if isinstance(eval_set, list) and len(eval_set) == 1:
        eval_set = eval_set[0]
    if not isinstance(eval_set, tuple) or len(eval_set) != 2:
        raise ValueError("eval_set must be a pair (X_valid, y_valid) or a list holding one such pair")
    return eval_set


def list_separator(name: str, columns: list[pa.ChunkedArray], given: str | None) -> str:
    """A separator that no value of the list column holds (or the given one, checked)."""
    values = [_list_values(chunk) for col in columns for chunk in col.chunks]

    def occurs(sep: str) -> bool:
        return any(pc.any(pc.match_substring(v, sep)).as_py() for v in values if len(v))

    if given is not None:
        if not isinstance(given, str) or not given:
            raise ConfigError(f"fields[{name!r}]: separator must be a non-empty string, got {given!r}")
        if occurs(given):
            raise ConfigError(f"fields[{name!r}]: separator {given!r} occurs in the values of list column {name!r}")
        return given
    for sep in SEPARATORS:
        if not occurs(sep):
            return sep
    raise ConfigError(
        f"column {name!r}: its list values hold every separator tried {list(SEPARATORS)}; give one with fields"
    )


def _list_values(chunk: pa.Array) -> pa.Array:
    """The elements of a list array chunk as strings, row after row (null lists hold none;
    null elements kept). Numbers are written as every other input path writes them
    (:func:`deepfm.data.columns.float_text`), so 3.0 and 3 are one value."""
    values = pc.list_flatten(chunk)  # flatten first: casting a list view makes a broken array
    if not pa.types.is_floating(values.type):
        return values.cast(pa.string())
    return float_text(values)


def join_lists(table: pa.Table, schema: Schema, bundle: Bundle | None = None) -> pa.Table:
    """List columns of multi-hot fields as text joined with the field's separator (the form
    the feature pipeline reads). With a fitted ``bundle``, a list value holding the separator
    (so never seen in training) becomes one unseen token rather than being split in two."""
    for i, name in enumerate(table.column_names):
        col = table.column(name)
        if not _is_list(col.type):
            continue
        spec = schema.field(name)
        joined = []
        for chunk in col.chunks:
            values = pc.fill_null(_list_values(chunk), "")  # a null element is no element
            holds = pc.match_substring(values, spec.separator)
            if pc.any(holds).as_py():
                if bundle is None:
                    raise DataError(f"a list value holds the separator {spec.separator!r}", field=name)
                values = pc.if_else(holds, _unseen_token(bundle.pipeline.states[name].vocab, spec.separator), values)
            joined.append(pc.binary_join(with_values(chunk, values), spec.separator))
        table = table.set_column(i, name, pa.chunked_array(joined, pa.string()))
    return table


def _unseen_token(vocab: pa.Array | None, separator: str) -> str:
    """A token that holds no separator and is not in the field's vocabulary: it encodes as OOV."""
    known = set() if vocab is None else set(vocab.to_pylist())
    for i in range(2 * len(known) + 2):
        for token in (f"<unseen {i}>", f"#{i}"):
            if separator not in token and token not in known:
                return token
    raise DataError(f"no token free of the separator {separator!r} outside the vocabulary")


def write_parquet(path: Path, table: pa.Table, labels: np.ndarray, schema: Schema) -> Path:
    """X (lists joined) and the 0/1 labels as one Parquet file for :func:`deepfm.train`."""
    table = join_lists(table, schema).append_column(schema.label, pa.array(labels, pa.float64()))
    pq.write_table(table, path)
    return path
