"""Delimited text (CSV, TSV and the like), with or without a header, plain or compressed."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator

import pyarrow as pa
import pyarrow.csv as pacsv

from deepfm.data.source import Reader
from deepfm.data.storage import FileRef
from deepfm.errors import ConfigError, DataError


class TextReader(Reader):
    """A delimited text file: the delimiter guessed from the first line unless given, the header
    recognised by the column names expected (``header: auto``)."""

    format = "text"
    blank_is_null = True  # the CSV reader makes empty fields null

    @property
    def group(self) -> int:
        """Parse blocks per chunk: about block_size bytes of text."""
        return max(1, self.options.block_size // self.options.parse_block)

    def _open(self, column_names: tuple[str, ...] | list[str] | None, optional_label: str | None) -> None:
        first = self.first_line()
        delim = self.options.delimiter or sniff_delimiter(first)
        if delim is None:
            raise DataError(
                "cannot tell the delimiter from the first line (no tab, comma, semicolon or |); "
                "set 'delimiter' in the config or --delimiter",
                path=self.name,
                line=1,
            )
        self.delimiter = delim
        try:
            first_fields = next(csv.reader([first.decode("utf-8", errors="replace")], delimiter=delim))
        except csv.Error as exc:  # a lone carriage return inside the line, say
            raise DataError(
                f"cannot split the first line into fields ({exc}): {first[:120]!r}", path=self.name, line=1
            ) from None
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
                    f"{self.name}: the file has no header; name its columns with 'columns' in the "
                    "config or a preset such as --preset criteo"
                )
            self.columns = list(column_names)
            if optional_label in self.columns and len(first_fields) == len(self.columns) - 1:
                self.columns.remove(optional_label)  # data to score, without labels
            if len(first_fields) != len(self.columns):
                raise DataError(
                    f"expected {len(self.columns)} columns ({', '.join(self.columns[:4])}, ...), "
                    f"got {len(first_fields)}",
                    path=self.name,
                    line=1,
                )
        dupes = sorted({c for c in self.columns if self.columns.count(c) > 1})
        if dupes:
            raise DataError(f"the header names columns more than once: {dupes}", path=self.name, line=1)

    def _batches(self, columns: list[str], numeric: set[str]) -> Iterator[pa.RecordBatch]:
        """Numeric columns are parsed as float64 by Arrow (fast). If a value does not parse,
        the rest of the file is read with those columns as text from the first unread row,
        so :func:`~deepfm.data.columns.to_float` can name the line and field of the bad value."""
        done = 0
        try:
            for batch in self._csv_batches(columns, numeric):
                yield batch
                done += batch.num_rows
        except _NumericConversion:
            for batch in self._csv_batches(columns, set()):
                if done >= batch.num_rows:
                    done -= batch.num_rows
                    continue
                yield batch.slice(done)
                done = 0

    def _csv_batches(self, columns: list[str], numeric: set[str]) -> Iterator[pa.RecordBatch]:
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
                self.ref.readable(),
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
                    path=self.name,
                    line=line,
                ) from exc
            raise DataError(f"cannot parse the file: {exc}", path=self.name) from exc

    def _find_line_with_text(self, text: str) -> int | None:
        """Error path only: the 1-based line of the first line equal to ``text``."""
        with _open_text(self.ref) as f:
            for n, line in enumerate(f, start=1):
                if line.rstrip("\r\n") == text:
                    return n
        return None

    def locate(self, row: int) -> str:
        """Location of 0-based data row ``row``: its line, found by scanning the file when bad
        rows were skipped before it."""
        return self._scan_for_row(row) if self.skipped else super().locate(row)

    def _scan_for_row(self, row: int) -> str:
        """Error path only: find the line of a data row when bad rows were skipped before it."""
        width = len(self.columns)
        seen = -1
        with _open_text(self.ref) as f:
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


class _NumericConversion(Exception):
    """A numeric column held text: read again with text columns to point at it."""


def sniff_delimiter(first_line: bytes) -> str | None:
    """The most frequent of tab, comma, semicolon and | in the first line; None without any."""
    counts = {d: first_line.count(d.encode()) for d in ("\t", ",", ";", "|")}
    best = max(counts, key=lambda d: counts[d])
    return best if counts[best] > 0 else None


def _open_text(ref: FileRef) -> io.TextIOWrapper:
    stream = ref.open_stream()
    return io.TextIOWrapper(stream, encoding="utf-8", errors="replace", newline="")
