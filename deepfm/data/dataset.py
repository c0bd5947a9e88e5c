"""A dataset of many files read as one source: a folder, a glob, a list, hive partitions.

:class:`DatasetReader` chains one format Reader per file (:func:`deepfm.data.storage.
list_files` gives them in reading order: sorted paths, then each file's rows in order), so
everything above it -- fitting, encoding, scoring -- reads a dataset as it reads a file.
Its chunks count rows across the whole dataset (a split by fractions cuts the dataset, not
each file), and each chunk carries a :class:`FileView` of the file it came from, so an error
still names that file and its own line or row. Hive partition keys (``day=2026-12-01``)
arrive as string columns of every row of the file.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pyarrow as pa

from deepfm.data.source import Chunk, Reader, ReadOptions, SourceView
from deepfm.data.storage import FileRef
from deepfm.errors import DataError


class FileView(SourceView):
    """The Source of a dataset's chunk: one file, whose first row is row ``offset`` of the
    dataset. Locations are the file's own (``line 17`` of that file)."""

    def __init__(self, reader: Reader, offset: int) -> None:
        super().__init__(reader)
        self.offset = offset

    def locate(self, row: int) -> str:
        return self.base.locate(row - self.offset)


class DatasetReader(Reader):
    """Many files of one format and the same columns, read in order as one source."""

    def __init__(
        self,
        files: list[FileRef],
        opener: Callable[[FileRef], Reader],
        name: str,
    ) -> None:
        """``opener`` opens one file's Reader (every file is opened here, so a file with
        other columns is refused before any row is read); ``name``: the dataset as given."""
        self.ref = FileRef(name, name)
        self.path, self.name = Path(name), name
        self.readers = [opener(f) for f in files]
        first = self.readers[0]
        self.options: ReadOptions = first.options
        self.format = first.format  # type: ignore[misc]  # a dataset is of its files' format
        self.blank_is_null, self.signed_labels = first.blank_is_null, first.signed_labels  # type: ignore[misc]
        self.label_values, self.one_hot = first.label_values, first.one_hot  # type: ignore[misc]
        self.has_header, self.delimiter = first.has_header, first.delimiter
        self.keys = [k for k, _ in files[0].partition]
        self.columns = [*first.columns, *self.keys]
        self.skipped_examples: list[str] = []
        for reader, ref in zip(self.readers, files):
            self._check_same(first, files[0], reader, ref)

    def _check_same(self, first: Reader, first_ref: FileRef, reader: Reader, ref: FileRef) -> None:
        """Every file holds the columns of the first, in its format, under the same keys."""
        if reader.format != first.format:
            raise DataError(
                f"a {reader.format} file in a dataset of {first.format} files ({first.name})", path=ref.name
            )
        if reader.columns != first.columns:
            extra = sorted(set(reader.columns) - set(first.columns))
            lacks = sorted(set(first.columns) - set(reader.columns))
            raise DataError(
                f"the files of a dataset must have the same columns: this file has {reader.columns}, "
                f"{first.name} has {first.columns} (extra here: {extra}, missing here: {lacks})",
                path=ref.name,
            )
        keys = [k for k, _ in ref.partition]
        if keys != self.keys:
            raise DataError(
                f"partition keys {keys} differ from {self.keys} of {first_ref.name}: every file of a "
                "dataset sits in the same partition folders",
                path=ref.name,
            )
        both = sorted(set(keys) & set(reader.columns))
        if both:
            raise DataError(f"partition key(s) {both} are also columns of the file", path=ref.name)

    @property
    def skipped(self) -> int:  # the sum of the files'
        return sum(r.skipped for r in self.readers)

    @skipped.setter
    def skipped(self, value: int) -> None:
        """Readers count their own bad rows; nothing to keep here."""

    def files(self) -> list[FileRef]:
        return [r.ref for r in self.readers]

    def locate(self, row: int) -> str:
        return f"row {row + 1} of the dataset"

    def chunks(self, columns: list[str], numeric: set[str] | frozenset[str] = frozenset()) -> Iterator[Chunk]:
        """Every file's chunks in order, with rows counted across the dataset and partition
        keys as string columns."""
        self.check_columns(columns)
        in_file = [c for c in columns if c not in self.keys]
        offset = 0
        for reader in self.readers:
            view = FileView(reader, offset)
            values = dict(reader.ref.partition)
            n = 0
            for chunk in reader.chunks(in_file, numeric):
                table = chunk.table
                for key in (c for c in columns if c in self.keys):
                    table = table.append_column(key, pa.array([values[key]] * table.num_rows, pa.string()))
                yield Chunk(table=table.select(columns), row0=offset + chunk.row0, reader=view)
                n = chunk.row0 + chunk.table.num_rows
            offset += n

    def count_rows(self) -> int:
        return sum(r.count_rows() for r in self.readers)

    def first_line(self) -> bytes:
        return self.readers[0].first_line()
