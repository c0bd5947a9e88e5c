"""Rows in memory read like a file: records (a list of dicts), DataFrames and Arrow tables."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa

from deepfm.data.source import Chunk
from deepfm.errors import DataError


class TableSource:
    """In-memory rows (records, a DataFrame, an Arrow table) read like a file; errors name
    the record index instead of a line."""

    format = "table"
    blank_is_null = False
    signed_labels = False

    def __init__(self, table: pa.Table, name: str = "<records>") -> None:
        self.table = table
        self.path = Path(name)
        self.name = name
        self.columns = list(table.column_names)
        self.skipped = 0

    def locate(self, row: int) -> str:
        return f"record {row}"

    def chunks(self, columns: list[str], batch_rows: int = 65536) -> Iterator[Chunk]:
        present = [c for c in columns if c in self.columns]
        table = self.table.select(present)
        # Absent columns are missing values, as an empty field in a file would be.
        for c in columns:
            if c not in present:
                table = table.append_column(c, pa.nulls(table.num_rows, pa.string()))
        table = table.select(columns)
        for start in range(0, max(table.num_rows, 1), batch_rows):
            yield Chunk(table=table.slice(start, batch_rows), row0=start, reader=self)


def as_table(data: object, numeric: set[str] | None = None, multi_hot: dict[str, str] | None = None) -> pa.Table:
    """Arrow table from a list of dicts, a pandas or polars DataFrame, or an Arrow table.

    Records are built column by column so a value of the wrong type names its record and field.
    ``numeric`` names the columns that must hold numbers; ``multi_hot`` maps list columns to
    their separator (a record may give a list there); every other value is kept as text.
    """
    if isinstance(data, pa.Table):
        return data
    if isinstance(data, pa.RecordBatch):
        return pa.Table.from_batches([data])
    if hasattr(data, "to_arrow") and not isinstance(data, (list, tuple, dict)):  # polars
        return data.to_arrow()
    if type(data).__module__.startswith("pandas"):
        return pa.Table.from_pandas(data, preserve_index=False)
    if isinstance(data, dict):
        data = [data]
    if not isinstance(data, (list, tuple)):
        raise DataError(f"expected records (a list of dicts), a DataFrame or an Arrow table, got {type(data).__name__}")
    numeric = numeric or set()
    multi_hot = multi_hot or {}
    names: dict[str, None] = {}  # first-seen order; a dict, as a list would be O(fields) per key
    for i, rec in enumerate(data):
        if not isinstance(rec, dict):
            raise DataError(f"expected a mapping of field -> value, got {type(rec).__name__}", line=f"record {i}")
        names.update(dict.fromkeys(rec))
    columns = {}
    for name in names:
        values = [rec.get(name) for rec in data]
        columns[name] = _column(values, name, name in numeric, multi_hot.get(name))
    return pa.table(columns) if columns else pa.table({"_": pa.nulls(len(data))}).drop(["_"])


def _column(values: list[object], name: str, numeric: bool, separator: str | None = None) -> pa.Array:
    out: list[object] = []
    for i, v in enumerate(values):
        try:
            out.append(record_value(v, numeric, separator))
        except ValueError as exc:
            raise DataError(str(exc), line=f"record {i}", field=name) from None
    if numeric and any(isinstance(v, str) for v in out):
        return pa.array([None if v is None else str(v) for v in out], pa.string())
    return pa.array(out, pa.float64() if numeric else pa.string())


def record_value(v: object, numeric: bool, separator: str | None = None) -> object:
    """One value of a record as a column holds it: None (missing); for a numeric field a
    float, or a string still to parse by the file's rules (:func:`to_float`); otherwise text
    (5.0 and 5 are the same category). A list is joined by ``separator`` (multi-hot fields
    only). Raises ValueError saying what was expected."""
    if v is None:
        return None
    if separator is not None and isinstance(v, (list, tuple)):
        if any(isinstance(x, (list, dict, tuple, bool)) or x is None for x in v):
            raise ValueError("expected a list of strings or numbers")
        return separator.join(map(_text, v))  # each value as a categorical's: [1.0] is "1"
    if isinstance(v, bool) or isinstance(v, (list, dict, tuple)):
        kind = "a number" if numeric else "a string or number"
        raise ValueError(f"expected {kind}, got {type(v).__name__} {v!r}")
    if isinstance(v, np.generic) and not isinstance(v, (np.number, np.str_)):
        raise ValueError(f"expected a string or number, got {type(v).__name__}")
    if numeric:
        if isinstance(v, (int, float, np.integer, np.floating)):
            return float(v)
        if isinstance(v, str):
            return v  # parsed (and checked) with the file path's rules
        raise ValueError(f"expected a number, got {type(v).__name__}")
    return _text(v)


def _text(v: object) -> str:
    """A value as category text, as :func:`deepfm.data.columns.float_text` writes a column's:
    5.0 and 5 are the same category; an integral float past int64 keeps its float text."""
    if isinstance(v, (float, np.floating)) and float(v).is_integer() and abs(float(v)) < 2.0**63:
        return str(int(v))
    return str(v)
