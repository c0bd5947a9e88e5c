"""Parquet files, read a row group's batches at a time (all of them, or a rank's share)."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from deepfm.data.source import Reader
from deepfm.errors import DataError


class ParquetReader(Reader):
    """A Parquet file; errors name the row (``row 12``), as a Parquet file has no lines."""

    format = "parquet"

    def _open(self, column_names: tuple[str, ...] | list[str] | None, optional_label: str | None) -> None:
        try:
            self._pq = pq.ParquetFile(self.ref.open_random())
        except Exception as exc:  # pyarrow raises several types for a broken file
            raise DataError(f"not a readable Parquet file ({exc})", path=self.name) from exc
        self.columns = list(self._pq.schema_arrow.names)
        self.row_groups: list[int] | None = None  # None: all (see share_of_row_groups)
        self.first_row = 0
        if self._pq.metadata.num_rows == 0:
            raise DataError("the file holds no rows", path=self.name)

    @property
    def num_row_groups(self) -> int:
        return int(self._pq.num_row_groups)

    def share_of_row_groups(self, rank: int, world: int) -> ParquetReader:
        """Read only rank ``rank``'s consecutive share of the file's row groups, of ``world``
        ranks reading the file together (rows keep their place in messages). Returns self."""
        bounds = np.linspace(0, self.num_row_groups, world + 1).astype(np.int64)
        self.row_groups = list(range(int(bounds[rank]), int(bounds[rank + 1])))
        self.first_row = sum(self._pq.metadata.row_group(g).num_rows for g in range(int(bounds[rank])))
        return self

    def _batches(self, columns: list[str], numeric: set[str]) -> Iterator[pa.RecordBatch]:
        batch_rows = max(1024, self.options.block_size // 256)
        return self._pq.iter_batches(batch_size=batch_rows, columns=columns, row_groups=self.row_groups)

    def locate(self, row: int) -> str:
        return f"row {self.first_row + row + 1}"

    def count_rows(self) -> int:
        """Number of data rows (of the row groups read), from the file's metadata."""
        if self.row_groups is None:
            return int(self._pq.metadata.num_rows)
        return sum(self._pq.metadata.row_group(g).num_rows for g in self.row_groups)
