"""A split by a column's value, usually time: ``--split-by day --valid-from V --test-from W``.

Rows whose ``column`` is below ``valid_from`` train, rows in ``[valid_from, test_from)``
validate, rows at or past ``test_from`` test. The bounds decide how values compare: when
every bound given reads as a number, the column's values are compared as numbers (a value that
is not one is an error naming its file, line and field); otherwise as text, which orders ISO
dates (``2026-12-01``, ``2026-12-01T07``) by time. A missing value is an error: a row of no
known time belongs to no part.

A part's rows are usually not one range of the input (a column in the file interleaves
them), so :meth:`ColumnSplit.subset` makes a chunk of the selected rows whose Source still
points at each row's own line.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from deepfm.data.columns import to_float
from deepfm.data.source import Chunk, Source, SourceView
from deepfm.errors import ConfigError
from deepfm.util.validation import check_keys

PARTS = ("train", "valid", "test")


def _is_number(text: str) -> bool:
    try:
        float(text)
        return True
    except ValueError:
        return False


@dataclass(frozen=True)
class ColumnSplit:
    """Train below ``valid_from``, validate up to ``test_from`` (when given), test from it."""

    column: str
    valid_from: str
    test_from: str | None = None

    def __post_init__(self) -> None:
        if not self.column:
            raise ConfigError("--split-by needs a column name")
        if self.numeric and self.test_from is not None and float(self.test_from) < float(self.valid_from):
            raise ConfigError(f"--test-from {self.test_from} comes before --valid-from {self.valid_from}")
        if not self.numeric and self.test_from is not None and self.test_from < self.valid_from:
            raise ConfigError(f"--test-from {self.test_from!r} comes before --valid-from {self.valid_from!r}")

    @classmethod
    def from_dict(cls, data: Any, where: str = "config") -> ColumnSplit:
        """A config's ``split:`` section: ``{by: day, valid_from: ..., test_from: ...}``."""
        if not isinstance(data, dict):
            raise ConfigError(f"{where}: split: expected a mapping with by, valid_from and test_from")
        check_keys("split", data, {"by", "valid_from", "test_from"})
        if "by" not in data or "valid_from" not in data:
            raise ConfigError(f"{where}: split: needs 'by' (a column) and 'valid_from'")
        test_from = data.get("test_from")
        return cls(str(data["by"]), str(data["valid_from"]), None if test_from is None else str(test_from))

    @property
    def numeric(self) -> bool:
        """Compare as numbers: every bound given reads as one."""
        return all(_is_number(b) for b in (self.valid_from, self.test_from) if b is not None)

    @property
    def parts(self) -> tuple[str, ...]:
        return PARTS if self.test_from is not None else PARTS[:2]

    def assign(self, chunk: Chunk) -> np.ndarray:
        """(N,) int8: each row's part, 0 train, 1 valid, 2 test."""
        col = chunk.table.column(self.column)
        nulls = col.is_null().to_numpy(zero_copy_only=False)
        if nulls.any():
            raise chunk.error(int(np.flatnonzero(nulls)[0]), "--split-by needs a value in every row", self.column)
        if self.numeric:
            values: np.ndarray = to_float(chunk, self.column)
            bounds: list[float | str] = [float(b) for b in (self.valid_from, self.test_from) if b is not None]
        else:
            text = col if pa.types.is_string(col.type) else pc.cast(col, pa.string())
            values = np.asarray(text.to_numpy(zero_copy_only=False), dtype=object)
            bounds = [b for b in (self.valid_from, self.test_from) if b is not None]
        part = np.zeros(len(values), dtype=np.int8)
        for bound in bounds:
            part += (values >= bound).astype(np.int8)
        return part

    def subset(self, chunk: Chunk, rows: np.ndarray) -> Chunk:
        """The chunk's rows at positions ``rows``, located in the file as before."""
        table = chunk.table.take(pa.array(rows))
        return Chunk(table=table, row0=0, reader=RowSubset(chunk.reader, chunk.row0 + rows))


class RowSubset(SourceView):
    """The Source of selected rows: row i is row ``rows[i]`` of ``base``."""

    def __init__(self, base: Source, rows: np.ndarray) -> None:
        super().__init__(base)
        self.rows = rows

    def locate(self, row: int) -> str:
        return self.base.locate(int(self.rows[row]))
