"""Opening a data file: the reader for its format, given or guessed.

    format   reader                            guessed from
    text     deepfm.data.text.TextReader       anything else (CSV, TSV, ...)
    parquet  deepfm.data.parquet.ParquetReader .parquet / .pq, or the PAR1 magic bytes
    libfm    deepfm.data.libfm.LibfmReader     .libfm / .libsvm / .svm, or a first line like it

Every reader is a :class:`~deepfm.data.source.Reader`: the same chunks, column checks and
error locations whatever the format. A new format is a Reader subclass and a line in
FORMAT_READERS.
"""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa

from deepfm.data.libfm import LIBFM_LINE, LibfmReader
from deepfm.data.parquet import ParquetReader
from deepfm.data.source import Reader, ReadOptions, check_file, io_errors
from deepfm.data.text import TextReader

FORMAT_READERS: dict[str, type[Reader]] = {"text": TextReader, "parquet": ParquetReader, "libfm": LibfmReader}


def open_reader(
    path: str | Path,
    options: ReadOptions = ReadOptions(),
    column_names: tuple[str, ...] | list[str] | None = None,
    optional_label: str | None = None,
) -> Reader:
    """The reader of ``path``'s format (``options.format``, or guessed). ``column_names`` name
    the columns of a headerless text file; a file to score may leave out the
    ``optional_label`` column of those."""
    path = Path(path)
    check_file(path)
    with io_errors(path):
        fmt = options.format if options.format != "auto" else guess_format(path)
    return FORMAT_READERS[fmt](path, options, column_names, optional_label)


def guess_format(path: Path) -> str:
    """text, parquet or libfm, from the name's extensions and then the first bytes."""
    suffixes = [s.lower() for s in path.suffixes]
    if any(s in (".parquet", ".pq") for s in suffixes):
        return "parquet"
    if any(s in (".libfm", ".libsvm", ".svm") for s in suffixes):
        return "libfm"
    with pa.input_stream(str(path), compression="detect") as f:
        head = f.read(4096)
    if head.startswith(b"PAR1"):
        return "parquet"
    if LIBFM_LINE.match(head.split(b"\n", 1)[0].rstrip(b"\r")):
        return "libfm"
    return "text"
