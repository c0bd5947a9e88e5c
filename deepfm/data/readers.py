"""Readers for delimited text (CSV/TSV, with or without header), Parquet and libFM.

Every reader streams the file in chunks of Arrow record batches; the bulk path never loops
over rows in Python. Errors name the file, the line (or Parquet row) and the field.

Text columns arrive as strings (nulls for empty fields); turning them into numbers happens
in :func:`to_float` / :func:`to_label`, which know how to point at a bad line.
"""

from __future__ import annotations

import csv
import queue
import threading
import io as _io
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from deepfm.errors import ConfigError, DataError

FORMATS = ("auto", "text", "parquet", "libfm")
HEADER_CHOICES = ("auto", "yes", "no")
BAD_ROW_CHOICES = ("error", "skip")
T = TypeVar("T")
_LIBFM_LINE = re.compile(rb"^\s*[-+]?\d+(\.\d*)?(\s+\d+:\S+)+\s*$")


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


@dataclass
class Chunk:
    """A slice of the file: ``table`` holds rows ``row0 .. row0+len-1`` (0-based data rows)."""

    table: pa.Table
    row0: int
    reader: "Reader"

    def where(self, i: int) -> str:
        """Human location of the chunk's i-th row, e.g. ``line 17``."""
        return self.reader.locate(self.row0 + i)

    def error(self, i: int, message: str, field: str | None = None) -> DataError:
        return DataError(message, path=str(self.reader.path), line=self.where(i), field=field)


class Reader:
    """One input file. ``columns`` are the names of all its columns in file order."""

    def __init__(
        self,
        path: str | Path,
        options: ReadOptions = ReadOptions(),
        column_names: tuple[str, ...] | list[str] | None = None,
        optional_label: str | None = None,
    ) -> None:
        """``column_names`` name the columns of a headerless file; a file to score may leave
        out the ``optional_label`` column of those."""
        self.path = Path(path)
        self.options = options
        self.skipped = 0  # bad rows skipped under on_bad_row=skip
        self.skipped_examples: list[str] = []
        self._skipped_lines: list[int] = []  # libFM: 1-based lines skipped, ascending
        if not self.path.exists():
            raise DataError("file not found", path=str(self.path))
        if self.path.is_dir():
            raise DataError("expected a file, got a folder", path=str(self.path))
        with _io_errors(self.path):
            self._open(column_names, optional_label)

    def _open(self, column_names: tuple[str, ...] | list[str] | None, optional_label: str | None) -> None:
        options = self.options
        self.format = options.format if options.format != "auto" else _guess_format(self.path)
        self.has_header = False
        self.delimiter = ","
        if self.format == "parquet":
            try:
                self._pq = pq.ParquetFile(self.path)
            except Exception as exc:  # pyarrow raises several types for a broken file
                raise DataError(f"not a readable Parquet file ({exc})", path=str(self.path)) from exc
            self.columns = list(self._pq.schema_arrow.names)
            if self._pq.metadata.num_rows == 0:
                raise DataError("the file holds no rows", path=str(self.path))
        elif self.format == "libfm":
            self._first_line()  # raises on an empty file
            self.columns = ["label"]  # the feature columns f1..fk are known after the first line
            self.columns += [f"f{i}" for i in range(1, self._libfm_width() + 1)]
        else:
            self._init_text(column_names, optional_label)

    # ---------------------------------------------------------------- text
    def _first_line(self) -> bytes:
        with pa.input_stream(str(self.path), compression="detect") as f:
            head = f.read(1 << 16)
        if not head.strip():
            raise DataError("the file is empty", path=str(self.path))
        return head.split(b"\n", 1)[0].rstrip(b"\r")

    def _init_text(self, column_names: tuple[str, ...] | list[str] | None, optional_label: str | None) -> None:
        first = self._first_line()
        delim = self.options.delimiter or _sniff_delimiter(first)
        if delim is None:
            raise DataError(
                "cannot tell the delimiter from the first line (no tab, comma, semicolon or |); "
                "set 'delimiter' in the config or --delimiter",
                path=str(self.path),
                line=1,
            )
        self.delimiter = delim
        try:
            first_fields = next(csv.reader([first.decode("utf-8", errors="replace")], delimiter=delim))
        except csv.Error as exc:  # a lone carriage return inside the line, say
            raise DataError(f"cannot split the first line into fields ({exc}): {first[:120]!r}", path=str(self.path), line=1) from None
        header = self.options.header
        if header == "auto":
            if column_names is not None:
                stripped = [f.strip() for f in first_fields]
                without_label = [c for c in column_names if c != optional_label]
                header = "yes" if stripped in (list(column_names), without_label) else "no"
            else:
                header = "yes"
        self.has_header = header == "yes"
        if self.has_header:
            self.columns = [f.strip() for f in first_fields]
        else:
            if column_names is None:
                raise ConfigError(
                    f"{self.path}: the file has no header; name its columns with 'columns' in the "
                    "config or a preset such as --preset criteo"
                )
            self.columns = list(column_names)
            if optional_label in self.columns and len(first_fields) == len(self.columns) - 1:
                self.columns.remove(optional_label)  # data to score, without labels
            if len(first_fields) != len(self.columns):
                raise DataError(
                    f"expected {len(self.columns)} columns ({', '.join(self.columns[:4])}, ...), "
                    f"got {len(first_fields)}",
                    path=str(self.path),
                    line=1,
                )
        dupes = sorted({c for c in self.columns if self.columns.count(c) > 1})
        if dupes:
            raise DataError(f"the header names columns more than once: {dupes}", path=str(self.path), line=1)

    def _text_batches(self, columns: list[str], numeric: set[str]) -> Iterator[pa.RecordBatch]:
        """Numeric columns are parsed as float64 by Arrow (fast). If a value does not parse,
        the rest of the file is read with those columns as text from the first unread row,
        so :func:`to_float` can name the line and field of the bad value."""
        done = 0
        try:
            for batch in self._text_reader(columns, numeric):
                yield batch
                done += batch.num_rows
        except _NumericConversion:
            for batch in self._text_reader(columns, set()):
                if done >= batch.num_rows:
                    done -= batch.num_rows
                    continue
                yield batch.slice(done)
                done = 0

    def _text_reader(self, columns: list[str], numeric: set[str]) -> Iterator[pa.RecordBatch]:
        bad: list[pacsv.InvalidRow] = []

        def on_invalid(row: pacsv.InvalidRow) -> str:
            if self.options.on_bad_row == "skip":
                self.skipped += 1
                if len(self.skipped_examples) < 5:
                    self.skipped_examples.append(row.text)
                return "skip"
            bad.append(row)
            return "error"

        try:
            # open_csv reads the first block at once: bad rows there raise here.
            reader = pacsv.open_csv(
                str(self.path),
                read_options=pacsv.ReadOptions(
                    column_names=self.columns,
                    skip_rows=1 if self.has_header else 0,
                    block_size=self.options.parse_block,
                    use_threads=True,
                ),
                parse_options=pacsv.ParseOptions(
                    delimiter=self.delimiter,
                    ignore_empty_lines=False,
                    invalid_row_handler=on_invalid,
                ),
                convert_options=pacsv.ConvertOptions(
                    include_columns=columns,
                    column_types={c: pa.float64() if c in numeric else pa.string() for c in columns},
                    strings_can_be_null=True,
                    null_values=[""],
                    quoted_strings_can_be_null=False,
                ),
            )
            yield from reader
        except (pa.ArrowInvalid, UnicodeDecodeError) as exc:
            if not bad and numeric and "conversion error" in str(exc):
                raise _NumericConversion() from exc
            if bad:
                row = bad[0]
                line = self._find_line_with_text(row.text)
                raise DataError(
                    f"expected {row.expected_columns} columns, got {row.actual_columns}: {row.text[:120]!r}",
                    path=str(self.path),
                    line=line,
                ) from exc
            raise DataError(f"cannot parse the file: {exc}", path=str(self.path)) from exc

    def _find_line_with_text(self, text: str) -> int | None:
        """Error path only: the 1-based line of the first line equal to ``text``."""
        with _open_text(self.path) as f:
            for n, line in enumerate(f, start=1):
                if line.rstrip("\r\n") == text:
                    return n
        return None

    def locate(self, row: int) -> str:
        """Location of 0-based data row ``row`` as a user sees it in the file."""
        if self.format == "parquet":
            return f"row {row + 1}"
        if self.format == "text" and self.skipped:
            return self._scan_for_row(row)
        line = row + 1 + (1 if self.has_header else 0)
        for skipped in self._skipped_lines:  # libFM: count the lines skipped before this one
            if skipped <= line:
                line += 1
        return f"line {line}"

    def _scan_for_row(self, row: int) -> str:
        """Error path only: find the line of a data row when bad rows were skipped before it."""
        width = len(self.columns)
        seen = -1
        with _open_text(self.path) as f:
            lines = iter(enumerate(f, start=1))
            if self.has_header:
                next(lines, None)
            for n, line in lines:
                try:
                    fields = next(csv.reader([line.rstrip("\r\n")], delimiter=self.delimiter), [])
                except csv.Error:
                    fields = []  # not a row Arrow read either
                if len(fields) == width or not line.strip():
                    seen += 1
                if seen == row:
                    return f"line {n}"
        return f"data row {row + 1}"

    # ---------------------------------------------------------------- libFM
    def _libfm_width(self) -> int:
        first = self._first_line()
        if not _LIBFM_LINE.match(first):
            raise DataError(
                f"expected a libFM line 'label id:value ...', got {first[:80]!r}", path=str(self.path), line=1
            )
        return len(first.split()) - 1

    def _libfm_batches(self) -> Iterator[pa.RecordBatch]:
        width = len(self.columns) - 1
        reader = pacsv.open_csv(
            str(self.path),
            read_options=pacsv.ReadOptions(column_names=["line"], block_size=self.options.block_size),
            parse_options=pacsv.ParseOptions(delimiter="\x1f", quote_char=False, ignore_empty_lines=False),
            convert_options=pacsv.ConvertOptions(column_types={"line": pa.string()}, strings_can_be_null=False),
        )
        row0 = 0
        for batch in reader:
            lines = pc.utf8_trim_whitespace(batch.column(0))
            parts = pc.split_pattern_regex(lines, r"\s+")
            lengths = pc.list_value_length(parts).to_numpy(zero_copy_only=False)
            wrong = np.flatnonzero(lengths != width + 1)
            if wrong.size:
                i = int(wrong[0])
                if self.options.on_bad_row != "skip":
                    raise DataError(
                        f"expected a label and {width} id:value features (as on line 1), "
                        f"got {int(lengths[i]) - 1 if lines[i].as_py() else 'an empty line'}",
                        path=str(self.path),
                        line=row0 + i + 1,
                    )
                keep = lengths == width + 1
                self.skipped += int((~keep).sum())
                self._skipped_lines.extend((row0 + np.flatnonzero(~keep) + 1).tolist())
                parts = parts.filter(pa.array(keep))
            flat = pc.list_flatten(parts).to_numpy(zero_copy_only=False).reshape(-1, width + 1)
            labels = flat[:, 0]
            pairs = pa.array(flat[:, 1:].ravel(), pa.string())
            kv = pc.split_pattern(pairs, ":", max_splits=1)
            ids = pc.list_element(kv, 0)
            values = pc.list_element(kv, 1)
            ok_values = pc.equal(values, "1")
            if not pc.all(ok_values).as_py():
                # Tolerate "1.0"; anything else is a value we cannot represent by field.
                as_num = pc.cast(values, pa.float64(), safe=False) if _all_floats(values) else None
                if as_num is None or not pc.all(pc.equal(as_num, 1.0)).as_py():
                    bad_at = _first_false(ok_values if as_num is None else pc.equal(as_num, 1.0))
                    r, c = divmod(bad_at, width)
                    if wrong.size:  # rows were skipped in this batch: back to the file's row
                        r = int(np.flatnonzero(lengths == width + 1)[r])
                    raise DataError(
                        f"feature values must be 1 (one-hot libFM, one feature per field); got "
                        f"{values[bad_at].as_py()!r}. Convert weighted features to a table with numeric columns",
                        path=str(self.path),
                        line=row0 + r + 1,
                        field=f"f{c + 1}",
                    )
            columns = {"label": pa.array(labels, pa.string())}
            ids_np = ids.to_numpy(zero_copy_only=False).reshape(-1, width)
            for c in range(width):
                columns[f"f{c + 1}"] = pa.array(ids_np[:, c], pa.string())
            row0 += batch.num_rows
            yield pa.RecordBatch.from_pydict(columns)

    # ---------------------------------------------------------------- public
    def check_columns(self, needed: list[str], what: str = "the config") -> None:
        missing = [c for c in needed if c not in self.columns]
        if missing:
            raise DataError(
                f"{what} names column(s) {missing} that the file lacks; it has {self.columns}",
                path=str(self.path),
            )

    def chunks(self, columns: list[str], numeric: set[str] | frozenset[str] = frozenset()) -> Iterator[Chunk]:
        """Stream the file as chunks holding ``columns``. In text files, ``numeric`` columns
        arrive as float64 and the others as strings."""
        self.check_columns(columns)
        # Counts are per pass: training reads a file twice (fit, then encode).
        self.skipped, self.skipped_examples, self._skipped_lines = 0, [], []
        row0 = 0
        if self.format == "parquet":
            batch_rows = max(1024, self.options.block_size // 256)
            source: Iterator[pa.RecordBatch] = self._pq.iter_batches(batch_size=batch_rows, columns=columns)
        elif self.format == "libfm":
            source = self._libfm_batches()
        else:
            source = self._text_batches(columns, set(numeric) & set(columns))
        group = max(1, self.options.block_size // self.options.parse_block) if self.format == "text" else 1
        with _io_errors(self.path):
            for batches in _prefetch(_grouped(source, group)):
                table = pa.Table.from_batches(batches).select(columns)
                yield Chunk(table=table, row0=row0, reader=self)
                row0 += table.num_rows
        if row0 == 0:
            raise DataError("the file holds no data rows", path=str(self.path))

    def count_rows(self) -> int:
        """Number of data rows (fast: Parquet metadata, or counting line ends in blocks)."""
        if self.format == "parquet":
            return int(self._pq.metadata.num_rows)
        n = 0
        last = b"\n"
        with pa.input_stream(str(self.path), compression="detect") as f:
            while True:
                block = f.read(16 << 20)
                if not block:
                    break
                n += block.count(b"\n")
                last = block[-1:]
        if last != b"\n":
            n += 1  # last line has no line end
        return n - (1 if self.has_header else 0)


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
                i = _first_false(pc.fill_null(ok, True))
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
        if chunk.reader.format == "text":
            return col  # the CSV reader already made empty fields null
        # An empty string is a missing value, as an empty field in a text file is.
        return pc.if_else(pc.equal(col, ""), pa.scalar(None, pa.string()), col)
    if pa.types.is_floating(col.type):
        # 5.0 and 5 are the same category: write integral floats without ".0".
        as_int = pc.cast(col, pa.int64(), safe=False)
        integral = pc.equal(pc.cast(as_int, pa.float64()), col)
        return pc.if_else(integral, pc.cast(as_int, pa.string()), pc.cast(col, pa.string()))
    try:
        return pc.cast(col, pa.string())
    except pa.ArrowNotImplementedError as exc:
        raise chunk.error(0, f"cannot use an Arrow column of type {col.type} as categorical", field=name) from exc


def to_label(chunk: Chunk, name: str, libfm: bool = False) -> np.ndarray:
    """Labels as float32 0/1. Text and Parquet accept 0/1; libFM accepts 1 and 0 or -1."""
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


@contextmanager
def _io_errors(path: Path) -> Iterator[None]:
    """Arrow raises OSError for unreadable or corrupt input (a truncated gzip, say): name the file."""
    try:
        yield
    except OSError as exc:
        raise DataError(f"cannot read the file: {exc}", path=str(path)) from exc


def _guess_format(path: Path) -> str:
    suffixes = [s.lower() for s in path.suffixes]
    if any(s in (".parquet", ".pq") for s in suffixes):
        return "parquet"
    if any(s in (".libfm", ".libsvm", ".svm") for s in suffixes):
        return "libfm"
    with pa.input_stream(str(path), compression="detect") as f:
        head = f.read(4096)
    if head.startswith(b"PAR1"):
        return "parquet"
    if _LIBFM_LINE.match(head.split(b"\n", 1)[0].rstrip(b"\r")):
        return "libfm"
    return "text"


def _sniff_delimiter(first_line: bytes) -> str | None:
    counts = {d: first_line.count(d.encode()) for d in ("\t", ",", ";", "|")}
    best = max(counts, key=lambda d: counts[d])
    return best if counts[best] > 0 else None


def _open_text(path: Path) -> _io.TextIOWrapper:
    stream = pa.input_stream(str(path), compression="detect")
    return _io.TextIOWrapper(stream, encoding="utf-8", errors="replace", newline="")


def _first_false(mask: pa.Array | pa.ChunkedArray) -> int:
    arr = mask.to_numpy(zero_copy_only=False) if not isinstance(mask, np.ndarray) else mask
    return int(np.flatnonzero(~arr.astype(bool))[0])


def _all_floats(values: pa.Array) -> bool:
    try:
        pc.cast(values, pa.float64())
        return True
    except pa.ArrowInvalid:
        return False


class _NumericConversion(Exception):
    """A numeric column held text: read again with text columns to point at it."""


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


class TableSource:
    """In-memory rows (records, a DataFrame, an Arrow table) read like a file; errors name
    the record index instead of a line."""

    format = "table"

    def __init__(self, table: pa.Table, name: str = "<records>") -> None:
        self.table = table
        self.path = Path(name)
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
            yield Chunk(table=table.slice(start, batch_rows), row0=start, reader=self)  # type: ignore[arg-type]


def as_table(
    data: object, numeric: set[str] | None = None, multi_hot: dict[str, str] | None = None
) -> pa.Table:
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
        return data.to_arrow()  # type: ignore[no-any-return, attr-defined]
    if type(data).__module__.startswith("pandas"):
        return pa.Table.from_pandas(data, preserve_index=False)  # type: ignore[arg-type]
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
        return separator.join(str(x) for x in v)
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
    if isinstance(v, (float, np.floating)) and float(v).is_integer():
        return str(int(v))  # 5.0 and 5 are the same category
    return str(v)
