"""Parquet files, read a row group's batches at a time."""

from __future__ import annotations

from collections.abc import Iterator

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
        if self._pq.metadata.num_rows == 0:
            raise DataError("the file holds no rows", path=self.name)

    def _batches(self, columns: list[str], numeric: set[str]) -> Iterator[pa.RecordBatch]:
        batch_rows = max(1024, self.options.block_size // 256)
        return self._pq.iter_batches(batch_size=batch_rows, columns=columns)

    def locate(self, row: int) -> str:
        return f"row {row + 1}"

    def count_rows(self) -> int:
        """Number of data rows, from the file's metadata."""
        return int(self._pq.metadata.num_rows)
