"""deepfm 0.1's ``deepfm.io``, kept for one release: its names now live in deepfm.data."""

from pathlib import Path

from deepfm._deprecated import deprecated_module

deprecated_module(__name__, "deepfm.data")

from deepfm.data.columns import to_float, to_label, to_strings
from deepfm.data.readers import open_reader
from deepfm.data.source import BAD_ROW_CHOICES, FORMATS, HEADER_CHOICES, Chunk, ReadOptions
from deepfm.data.source import Reader as FormatReader
from deepfm.data.tables import TableSource, as_table, record_value

__all__ = [
    "BAD_ROW_CHOICES",
    "Chunk",
    "FORMATS",
    "HEADER_CHOICES",
    "ReadOptions",
    "Reader",
    "TableSource",
    "as_table",
    "record_value",
    "to_float",
    "to_label",
    "to_strings",
]


def Reader(  # deepfm 0.1's class, called to open a file
    path: str | Path,
    options: ReadOptions = ReadOptions(),
    column_names: tuple[str, ...] | list[str] | None = None,
    optional_label: str | None = None,
) -> FormatReader:
    """deepfm 0.1's ``Reader(path, ...)``: the reader of the file's format, now
    :func:`deepfm.data.readers.open_reader` (each format is a subclass of
    :class:`deepfm.data.source.Reader`)."""
    return open_reader(path, options, column_names, optional_label)
