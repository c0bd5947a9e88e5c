"""What every reader shares: the reading options, a chunk of rows, and the Reader base class.

A :class:`Source` is anything a :class:`Chunk` comes from: a file (a :class:`Reader` for its
format, :mod:`deepfm.data.readers` picks it) or rows in memory (:class:`~deepfm.data.tables.
TableSource`). Its chunks carry it, so an error about a value can name the file, the line (or
Parquet row, or record) and the field.

Every reader streams the file in chunks of Arrow record batches; the bulk path never loops
over rows in Python. Text columns arrive as strings (nulls for empty fields); turning them
into numbers happens in :mod:`deepfm.data.columns`, which knows how to point at a bad line.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Protocol, TypeVar

import pyarrow as pa
import pyarrow.fs as pafs

from deepfm.data.storage import FileRef
from deepfm.errors import ConfigError, DataError

FORMATS = ("auto", "text", "parquet", "libfm")
HEADER_CHOICES = ("auto", "yes", "no")
BAD_ROW_CHOICES = ("error", "skip")
T = TypeVar("T")


@dataclass(frozen=True)
class ReadOptions:
    """How to read an input file. ``auto`` guesses from the extension and first line."""

    format: str = "auto"
    delimiter: str | None = None
    header: str = "auto"
    on_bad_row: str = "error"
    block_size: int = 8 << 20  # bytes of text per chunk (rows per chunk for Parquet: /256)

    @property
    def parse_block(self) -> int:
        """Bytes Arrow parses at once. Blocks of about 1 MB stay in the CPU caches and parse
        about a third faster than 8 MB ones; ``chunks`` then groups them into block_size chunks."""
        return min(self.block_size, 1 << 20)

    def __post_init__(self) -> None:
        if self.format not in FORMATS:
            raise ConfigError(f"format must be one of {list(FORMATS)}, got {self.format!r}")
        if self.header not in HEADER_CHOICES:
            raise ConfigError(f"header must be one of {list(HEADER_CHOICES)}, got {self.header!r}")
        if self.on_bad_row not in BAD_ROW_CHOICES:
            raise ConfigError(f"on_bad_row must be one of {list(BAD_ROW_CHOICES)}, got {self.on_bad_row!r}")
        if self.delimiter is not None and len(self.delimiter) != 1:
            raise ConfigError(f"delimiter must be one character, got {self.delimiter!r}")


class Source(Protocol):
    """Where chunks come from: what a value's error needs to name its place, and how the
    source writes missing values and labels."""

    path: Path
    name: str  # the path as messages show it (a URI for a remote file)

    @property
    def format(self) -> str:
        """text | parquet | libfm | table"""
        ...

    @property
    def blank_is_null(self) -> bool:
        """Empty text fields arrive as nulls already (a CSV reader's nulls); elsewhere "" is
        turned into a missing value by the column parsers."""
        ...

    @property
    def signed_labels(self) -> bool:
        """Labels are 1 and 0 or -1 (libFM), not 1 and 0."""
        ...

    def locate(self, row: int) -> str:
        """Location of 0-based data row ``row`` as a user sees it: ``line 17``, ``row 3``."""
        ...


class SourceView:
    """A Source read as ``base`` but with rows numbered its own way; subclasses map a row back
    to ``base``'s (a file of a dataset, the rows of one part of a split)."""

    def __init__(self, base: Source) -> None:
        self.base = base
        self.path: Path = base.path
        self.name: str = base.name

    @property
    def format(self) -> str:
        return self.base.format

    @property
    def blank_is_null(self) -> bool:
        return self.base.blank_is_null

    @property
    def signed_labels(self) -> bool:
        return self.base.signed_labels

    def locate(self, row: int) -> str:
        return self.base.locate(row)


@dataclass
class Chunk:
    """A slice of a source: ``table`` holds rows ``row0 .. row0+len-1`` (0-based data rows)."""

    table: pa.Table
    row0: int
    reader: Source

    def where(self, i: int) -> str:
        """Human location of the chunk's i-th row, e.g. ``line 17``."""
        return self.reader.locate(self.row0 + i)

    def error(self, i: int, message: str, field: str | None = None) -> DataError:
        return DataError(message, path=self.reader.name, line=self.where(i), field=field)


class Reader:
    """One input file, read by the subclass for its format (:func:`deepfm.data.readers.
    open_reader` picks it). ``columns`` are the names of all its columns in file order."""

    format: ClassVar[str]
    blank_is_null: ClassVar[bool] = False
    signed_labels: ClassVar[bool] = False
    label_values: ClassVar[tuple[float, float]] = (0.0, 1.0)  # a schema's default for this format
    one_hot: ClassVar[bool] = False  # every feature column holds the ids of one categorical field

    def __init__(
        self,
        path: str | Path | FileRef,
        options: ReadOptions = ReadOptions(),
        column_names: tuple[str, ...] | list[str] | None = None,
        optional_label: str | None = None,
    ) -> None:
        """``column_names`` name the columns of a headerless file; a file to score may leave
        out the ``optional_label`` column of those. ``path`` may be a file of a dataset
        (:class:`~deepfm.data.storage.FileRef`), local or remote."""
        self.ref = path if isinstance(path, FileRef) else FileRef(str(path), str(path))
        self.path = Path(self.ref.path)
        self.name = self.ref.name
        self.options = options
        self.skipped = 0  # bad rows skipped under on_bad_row=skip
        self.skipped_examples: list[str] = []
        self.has_header = False
        self.delimiter = ","
        self.columns: list[str] = []
        check_file(self.ref)
        with io_errors(self.name):
            self._open(column_names, optional_label)

    def _open(self, column_names: tuple[str, ...] | list[str] | None, optional_label: str | None) -> None:
        """Read what the format needs before the rows: the columns, at least."""
        raise NotImplementedError

    def _batches(self, columns: list[str], numeric: set[str]) -> Iterator[pa.RecordBatch]:
        """The file's record batches holding ``columns``."""
        raise NotImplementedError

    def _restart(self) -> None:
        """Forget what an earlier pass over the file counted (bad rows skipped)."""
        self.skipped, self.skipped_examples = 0, []

    @property
    def group(self) -> int:
        """Record batches per chunk."""
        return 1

    # ---------------------------------------------------------------- public
    def locate(self, row: int) -> str:
        """Location of 0-based data row ``row`` as a user sees it in the file."""
        return f"line {row + 1 + (1 if self.has_header else 0)}"

    def check_columns(self, needed: list[str], what: str = "the config") -> None:
        missing = [c for c in needed if c not in self.columns]
        if missing:
            raise DataError(
                f"{what} names column(s) {missing} that the file lacks; it has {self.columns}",
                path=self.name,
            )

    def chunks(self, columns: list[str], numeric: set[str] | frozenset[str] = frozenset()) -> Iterator[Chunk]:
        """Stream the file as chunks holding ``columns``. In text files, ``numeric`` columns
        arrive as float64 and the others as strings."""
        self.check_columns(columns)
        self._restart()  # counts are per pass: training reads a file twice (fit, then encode)
        row0 = 0
        source = self._batches(columns, set(numeric) & set(columns))
        with io_errors(self.name):
            for batches in _prefetch(_grouped(source, self.group)):
                table = pa.Table.from_batches(batches).select(columns)
                yield Chunk(table=table, row0=row0, reader=self)
                row0 += table.num_rows
        if row0 == 0:
            raise DataError("the file holds no data rows", path=self.name)

    def count_rows(self) -> int:
        """Number of data rows (fast: counting line ends in blocks)."""
        n = 0
        last = b"\n"
        with self.ref.open_stream() as f:
            while True:
                block = f.read(16 << 20)
                if not block:
                    break
                n += block.count(b"\n")
                last = block[-1:]
        if last != b"\n":
            n += 1  # last line has no line end
        return n - (1 if self.has_header else 0)

    def first_line(self) -> bytes:
        """The file's first line (decompressed), without its line end."""
        with self.ref.open_stream() as f:
            head = f.read(1 << 16)
        if not head.strip():
            raise DataError("the file is empty", path=self.name)
        return head.split(b"\n", 1)[0].rstrip(b"\r")


def check_file(ref: FileRef) -> None:
    """A DataError unless ``ref`` is a file."""
    if ref.fs is None:
        path = Path(ref.path)
        if not path.exists():
            raise DataError("file not found", path=ref.name)
        if path.is_dir():
            raise DataError("expected a file, got a folder", path=ref.name)
        return
    with io_errors(ref.name):
        kind = ref.info().type
    if kind != pafs.FileType.File:
        raise DataError("file not found" if kind == pafs.FileType.NotFound else "expected a file", path=ref.name)


@contextmanager
def io_errors(name: str | Path) -> Iterator[None]:
    """Arrow raises OSError for unreadable or corrupt input (a truncated gzip, say): name the file."""
    try:
        yield
    except OSError as exc:
        raise DataError(f"cannot read the file: {exc}", path=str(name)) from exc


def _grouped(batches: Iterator[pa.RecordBatch], size: int) -> Iterator[list[pa.RecordBatch]]:
    """Non-empty batches in lists of ``size``: chunks big enough that per-chunk work is cheap."""
    group: list[pa.RecordBatch] = []
    for batch in batches:
        if batch.num_rows:
            group.append(batch)
        if len(group) == size:
            yield group
            group = []
    if group:
        yield group


def _prefetch(batches: Iterator[T], depth: int = 2) -> Iterator[T]:
    """Parse the next batches in a background thread while the caller works on this one:
    Arrow releases the GIL, so parsing and encoding share the two cores."""
    q: queue.Queue[tuple[str, object]] = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(item: tuple[str, object]) -> bool:
        """Hand an item over unless the consumer has stopped listening (never blocks forever)."""
        while not stop.is_set():
            try:
                q.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for batch in batches:
                if not put(("batch", batch)):
                    return
            put(("end", None))
        except BaseException as exc:  # handed to the consumer, raised there
            put(("error", exc))

    thread = threading.Thread(target=produce, name="deepfm-read", daemon=True)
    thread.start()
    try:
        while True:
            kind, item = q.get()
            if kind == "end":
                return
            if kind == "error":
                raise item  # type: ignore[misc]
            yield item  # type: ignore[misc]
    finally:
        stop.set()
        thread.join()
