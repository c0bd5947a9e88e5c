"""Opening a data file: the reader for its format, given or guessed.

    format   reader                            guessed from
    text     deepfm.data.text.TextReader       anything else (CSV, TSV, ...)
    parquet  deepfm.data.parquet.ParquetReader .parquet / .pq, or the PAR1 magic bytes
    libfm    deepfm.data.libfm.LibfmReader     .libfm / .libsvm / .svm, or a first line like it

Every reader is a :class:`~deepfm.data.source.Reader`: the same chunks, column checks and
error locations whatever the format. A new format is a Reader subclass and a line in
FORMAT_READERS. A folder, a glob, a list of files or a URI is a dataset
(:class:`~deepfm.data.dataset.DatasetReader`): one Reader per file, chained.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from deepfm.data.dataset import DatasetReader
from deepfm.data.libfm import LIBFM_LINE, LibfmReader
from deepfm.data.parquet import ParquetReader
from deepfm.data.source import Reader, ReadOptions, check_file, io_errors
from deepfm.data.storage import FileRef, is_dataset, list_files
from deepfm.data.text import TextReader

FORMAT_READERS: dict[str, type[Reader]] = {"text": TextReader, "parquet": ParquetReader, "libfm": LibfmReader}


def open_reader(
    path: str | Path | FileRef | Sequence[str | Path],
    options: ReadOptions = ReadOptions(),
    column_names: tuple[str, ...] | list[str] | None = None,
    optional_label: str | None = None,
) -> Reader:
    """The reader of ``path``'s format (``options.format``, or guessed). ``column_names`` name
    the columns of a headerless text file; a file to score may leave out the
    ``optional_label`` column of those. A folder, glob, list or URI opens a DatasetReader."""
    if not isinstance(path, FileRef) and is_dataset(path):
        name = str(path) if isinstance(path, (str, Path)) else ", ".join(str(p) for p in path)
        return DatasetReader(
            list_files(path), lambda ref: open_reader(ref, options, column_names, optional_label), name.split("?")[0]
        )
    ref = path if isinstance(path, FileRef) else FileRef(str(path), str(path))
    check_file(ref)
    with io_errors(ref.name):
        fmt = options.format if options.format != "auto" else guess_format(ref)
    return FORMAT_READERS[fmt](ref, options, column_names, optional_label)


def guess_format(ref: FileRef) -> str:
    """text, parquet or libfm, from the name's extensions and then the first bytes."""
    path = Path(ref.path)
    suffixes = [s.lower() for s in path.suffixes]
    if any(s in (".parquet", ".pq") for s in suffixes):
        return "parquet"
    if any(s in (".libfm", ".libsvm", ".svm") for s in suffixes):
        return "libfm"
    with ref.open_stream() as f:
        head = f.read(4096)
    if head.startswith(b"PAR1"):
        return "parquet"
    if LIBFM_LINE.match(head.split(b"\n", 1)[0].rstrip(b"\r")):
        return "libfm"
    return "text"
