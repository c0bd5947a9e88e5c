"""Columns of a chunk as the pipeline reads them: numbers, text, labels. A value that does not
parse is an error naming its file, line (or row, or record) and field."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from deepfm.data.source import Chunk


def to_float(chunk: Chunk, name: str) -> np.ndarray:
    """Parse a text (or numeric) column as float64; NaN marks missing. Bad text names its line."""
    col = chunk.table.column(name)
    if pa.types.is_floating(col.type) or pa.types.is_integer(col.type) or pa.types.is_boolean(col.type):
        values = pc.cast(col, pa.float64())
    elif pa.types.is_string(col.type) or pa.types.is_large_string(col.type):
        try:
            values = pc.cast(col, pa.float64())
        except pa.ArrowInvalid:
            trimmed = pc.utf8_trim_whitespace(col)
            empty = pc.equal(trimmed, "")
            trimmed = pc.if_else(empty, pa.scalar(None, pa.string()), trimmed)
            try:
                values = pc.cast(trimmed, pa.float64())
            except pa.ArrowInvalid:
                ok = pc.match_substring_regex(trimmed, r"^[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$")
                i = first_false(pc.fill_null(ok, True))
                raise chunk.error(i, f"expected a number, got {col[i].as_py()!r}", field=name) from None
    else:
        raise chunk.error(0, f"expected a numeric column, got Arrow type {col.type}", field=name)
    out = values.to_numpy(zero_copy_only=False).astype(np.float64, copy=False)
    bad = np.isinf(out)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise chunk.error(i, f"expected a finite number, got {col[i].as_py()!r}", field=name)
    return out


def to_strings(chunk: Chunk, name: str) -> pa.ChunkedArray:
    """A column as strings (nulls kept): categoricals compare by their text."""
    col = chunk.table.column(name)
    if pa.types.is_large_string(col.type) or pa.types.is_dictionary(col.type):
        col = pc.cast(col, pa.string())
    if pa.types.is_string(col.type):
        if chunk.reader.blank_is_null:
            return col  # the CSV reader already made empty fields null
        # An empty string is a missing value, as an empty field in a text file is.
        return pc.if_else(pc.equal(col, ""), pa.scalar(None, pa.string()), col)
    if pa.types.is_floating(col.type):
        # NaN is a missing value, as in a numeric column (pandas writes missing values as NaN).
        col = pc.cast(col, pa.float64())
        return float_text(pc.if_else(pc.is_nan(col), pa.scalar(None, pa.float64()), col))
    try:
        return pc.cast(col, pa.string())
    except pa.ArrowNotImplementedError as exc:
        raise chunk.error(0, f"cannot use an Arrow column of type {col.type} as categorical", field=name) from exc


def float_text(col: pa.Array | pa.ChunkedArray) -> pa.Array | pa.ChunkedArray:
    """Numbers as category text (nulls kept): 5.0 and 5 are the same category, so integral
    floats are written without ".0"; values past int64 keep their float text ("1e+20").
    :func:`deepfm.data.tables.record_value` writes a Python number the same way."""
    wide = pc.cast(col, pa.float64())
    as_int = pc.cast(wide, pa.int64(), safe=False)
    integral = pc.equal(pc.cast(as_int, pa.float64(), safe=False), wide)
    # the other values in their own type's text: a float32 0.1 is "0.1", not float64's digits
    return pc.if_else(integral, pc.cast(as_int, pa.string()), pc.cast(col, pa.string()))


def with_values(lists: pa.Array, values: pa.Array) -> pa.LargeListArray:
    """A list array of ``lists``' layout (each list's length, null lists kept null) holding
    ``values``, one per element of ``lists`` flattened. Rebuilt from the lengths, not
    ``lists.offsets``: a sliced array's offsets point into values it does not hold, and Arrow
    takes no null mask with them."""
    lengths = pc.fill_null(pc.list_value_length(lists), 0).to_numpy(zero_copy_only=False)
    offsets = pa.array(np.concatenate([[0], np.cumsum(lengths)]), pa.int64())
    return pa.LargeListArray.from_arrays(offsets, values, mask=lists.is_null())


def to_label(chunk: Chunk, name: str, libfm: bool | None = None) -> np.ndarray:
    """Labels as float32 0/1. Text and Parquet accept 0/1; libFM accepts 1 and 0 or -1
    (``libfm``: whether to, by default as the chunk's source says)."""
    if libfm is None:
        libfm = chunk.reader.signed_labels
    values = to_float(chunk, name)
    allowed = (0.0, 1.0, -1.0) if libfm else (0.0, 1.0)
    ok = np.isin(values, allowed)
    if not ok.all():
        i = int(np.flatnonzero(~ok)[0])
        raw = chunk.table.column(name)[i].as_py()
        expect = "1, 0 or -1" if libfm else "0 or 1"
        if isinstance(raw, float) and raw.is_integer():
            raw = str(int(raw))  # parsed as a number: show it as it was written
        got = "an empty value" if raw is None else repr(str(raw))
        raise chunk.error(i, f"label must be {expect}, got {got}", field=name)
    return (values > 0).astype(np.float32)


def first_false(mask: pa.Array | pa.ChunkedArray | np.ndarray) -> int:
    """Index of the first False of a boolean mask."""
    arr = mask.to_numpy(zero_copy_only=False) if not isinstance(mask, np.ndarray) else mask
    return int(np.flatnonzero(~arr.astype(bool))[0])
