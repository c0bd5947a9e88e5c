"""Where data files live: local paths, folders, globs and object-store URIs, through pyarrow.fs.

A data argument (``--data``, ``--valid``, ``--test``, a model's ``--out``) is a file, a
folder, a glob (``logs/day=*/part-*.parquet``) or a list of those, on the local disk or at a
URI: ``s3://``, ``gs://``, ``hdfs://`` or ``file://``, opened by
``pyarrow.fs.FileSystem.from_uri``. Credentials come the standard way (environment
variables, profiles, instance roles); a URI that carries them (``s3://key:secret@bucket``) is
refused, as the URI is written to run.json and to logs.

:func:`list_files` lists a dataset's files in their reading order: sorted by path, then each
file's rows in order. Names starting with ``.`` or ``_`` (``_SUCCESS``, ``.crc``) are left
out, as pyarrow.dataset does. Hive partition folders (``date=2026-12-01/hour=07``) give each
file the partition keys, which the readers add as columns.
"""

from __future__ import annotations

import fnmatch
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import pyarrow as pa
import pyarrow.fs as pafs

from deepfm.errors import DataError
from deepfm.util.files import file_identity

# What a data argument may be: a file, folder, glob or URI, or several of those.
DataSpec = str | Path | Sequence[str | Path]

URI = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")
GLOB_CHARS = "*?["
IGNORED_PREFIXES = (".", "_")  # pyarrow.dataset's default: _SUCCESS, _metadata, .crc files


@dataclass(frozen=True)
class FileRef:
    """One data file: ``path`` on ``fs`` (None: the local disk through plain paths), ``name``
    as messages show it (the URI, without any query), and its hive partition keys."""

    path: str
    name: str
    fs: pafs.FileSystem | None = None
    partition: tuple[tuple[str, str], ...] = ()

    def open_stream(self) -> pa.NativeFile:
        """The file's bytes, decompressed by its extension (.gz, .zst, .bz2, .lz4)."""
        if self.fs is None:
            return pa.input_stream(self.path, compression="detect")
        return self.fs.open_input_stream(self.path, compression="detect")

    def readable(self) -> str | pa.NativeFile:
        """What Arrow's CSV reader takes: a local path (it detects compression itself), else a
        decompressing stream."""
        return self.path if self.fs is None else self.open_stream()

    def open_random(self) -> str | pa.NativeFile:
        """The file for random access (Parquet's footer, then its row groups)."""
        return self.path if self.fs is None else self.fs.open_input_file(self.path)

    def info(self) -> pafs.FileInfo:
        fs, path = (pafs.LocalFileSystem(), os.path.abspath(self.path)) if self.fs is None else (self.fs, self.path)
        return fs.get_file_info(path)

    def identity(self) -> list[str | int]:
        """[name, size, modification time in ns]: changes whenever the file is rewritten."""
        info = self.info()
        name = os.path.abspath(self.path) if self.fs is None else self.name
        return [name, int(info.size or 0), int(info.mtime_ns or 0)]


def is_uri(spec: str | Path) -> bool:
    """Whether ``spec`` is a URI (``s3://...``), not a local path."""
    return isinstance(spec, str) and bool(URI.match(spec))


def resolve(spec: str) -> tuple[pafs.FileSystem | None, str, str]:
    """(file system or None for a local path, its path there, the name prefix for messages)."""
    if not is_uri(spec):
        return None, spec, ""
    parts = urlsplit(spec)
    if "@" in parts.netloc:
        raise DataError(
            "credentials in a URI would be written to run.json and to logs: give them the standard way "
            "(environment variables such as AWS_ACCESS_KEY_ID, or a profile)",
            path=f"{parts.scheme}://{parts.netloc.rsplit('@', 1)[1]}{parts.path}",
        )
    # from_uri refuses glob characters: open the part before the first, append the rest
    head, query = spec.split("?", 1) if "?" in spec else (spec, "")
    cut = min((i for i, c in enumerate(head) if c in GLOB_CHARS), default=len(head))
    try:
        fs, path = pafs.FileSystem.from_uri(head[:cut] + (f"?{query}" if query else ""))
        if cut < len(head):
            path = path + ("/" if head[cut - 1] == "/" and not path.endswith("/") else "") + head[cut:]
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, OSError, ValueError) as exc:
        raise DataError(f"cannot open this URI's file system: {exc}", path=f"{parts.scheme}://{parts.netloc}") from None
    if isinstance(fs, pafs.LocalFileSystem):  # file:///...: a local path
        return None, path, ""
    return fs, path, f"{parts.scheme}://"


def is_dataset(spec: DataSpec) -> bool:
    """More than one file could come of ``spec``: a list, a glob, a folder, or a URI (which
    may name a folder); a plain local file is read as before, by one reader."""
    if not isinstance(spec, (str, Path)):
        return True
    text = str(spec)
    return is_uri(text) or any(c in text for c in GLOB_CHARS) or Path(text).is_dir()


def data_identity(
    spec: DataSpec | None, files: list[FileRef] | None = None
) -> list[str | int] | list[list[str | int]] | None:
    """What identifies a data argument's content: a plain file's identity as before
    (:func:`~deepfm.util.files.file_identity`), or the identity of every file of a dataset
    (``files``: the dataset's files when they are already listed, so the identity names
    exactly the files that will be read)."""
    if spec is None:
        return None
    if not is_dataset(spec):
        return file_identity(str(spec))
    return [ref.identity() for ref in (list_files(spec) if files is None else files)]


def list_files(spec: DataSpec) -> list[FileRef]:
    """The files of a dataset in reading order: each argument's files sorted by path (a folder
    and a glob are listed recursively), the arguments in the order given."""
    specs = [spec] if isinstance(spec, (str, Path)) else list(spec)
    if not specs:
        raise DataError("no data files given")
    files: list[FileRef] = []
    for one in specs:
        files.extend(_list_one(str(one)))
    return files


def _list_one(spec: str) -> list[FileRef]:
    fs, path, prefix = resolve(spec)
    local = fs is None
    fsys = pafs.LocalFileSystem() if local else fs
    assert fsys is not None
    where = os.path.abspath(path) if local else path
    glob_at = min((i for i, c in enumerate(where) if c in GLOB_CHARS), default=-1)
    base = where if glob_at < 0 else where[:glob_at].rsplit("/", 1)[0]
    info = fsys.get_file_info(base)
    if info.type == pafs.FileType.NotFound:
        raise DataError("file not found" if glob_at < 0 else "no such folder for the pattern", path=spec)
    if info.type == pafs.FileType.File:
        return [FileRef(path if local else where, prefix + where if prefix else path, fs)]
    infos = fsys.get_file_info(pafs.FileSelector(base, recursive=True))
    found = []
    for f in infos:
        rel = f.path[len(base) :].lstrip("/")
        if f.type != pafs.FileType.File or any(s.startswith(IGNORED_PREFIXES) for s in rel.split("/")):
            continue
        if glob_at >= 0 and not _matches(f.path, where):
            continue
        found.append((f.path, rel))
    if not found:
        raise DataError("no data files match" if glob_at >= 0 else "the folder holds no data files", path=spec)
    shown = spec.split("?", 1)[0].rstrip("/") if glob_at < 0 else (prefix + base if prefix else _local_base(path))
    # A partition folder given itself (logs/day=2026-01-22) keeps its key, as one found below
    above = "/".join(_trailing_keys(base))
    return [
        FileRef(full, f"{shown}/{rel}" if not prefix or glob_at < 0 else prefix + full, fs, _partition(above, rel))
        for full, rel in sorted(found)
    ]


def _trailing_keys(folder: str) -> list[str]:
    """The ``key=value`` names at the end of a folder's path (its own partition keys)."""
    names = folder.rstrip("/").split("/")
    keys: list[str] = []
    while names and "=" in names[-1]:
        keys.insert(0, names.pop())
    return keys


def _local_base(pattern: str) -> str:
    """The folder part of a local glob as the user wrote it (relative stays relative)."""
    glob_at = min(i for i, c in enumerate(pattern) if c in GLOB_CHARS)
    return pattern[:glob_at].rsplit("/", 1)[0] if "/" in pattern[:glob_at] else "."


def _matches(path: str, pattern: str) -> bool:
    """fnmatch segment by segment, so ``*`` stays inside one folder name; a pattern that
    matches a folder (``logs/day=2026-12-0*``) takes every file below it."""
    a, b = path.split("/"), pattern.split("/")
    return len(a) >= len(b) and all(fnmatch.fnmatchcase(x, y) for x, y in zip(a, b))


def _partition(above: str, rel: str) -> tuple[tuple[str, str], ...]:
    """The hive keys of a file's folders below the dataset's root (and of the root's own
    trailing ``key=value`` folders, ``above``), decoded as pyarrow does."""
    rel = f"{above}/{rel}" if above else rel
    keys = [seg.split("=", 1)[0] for seg in rel.split("/")[:-1] if "=" in seg]
    if not keys:
        return ()
    # imported here: pyarrow.dataset imports pandas, a second of start-up for every command
    import pyarrow.dataset as ds

    hive = ds.HivePartitioning(pa.schema([(k, pa.string()) for k in keys]))
    found = ds.get_partition_keys(hive.parse("/" + rel))
    return tuple((k, str(found[k])) for k in keys if k in found)


def upload_folder(local: Path, uri: str) -> None:
    """Copy a finished folder (a model bundle) to ``uri``, file by file."""
    fs, path, _ = resolve(uri)
    if fs is None:
        raise ValueError(f"not a remote URI: {uri}")
    fs.create_dir(path, recursive=True)
    pafs.copy_files(str(local.resolve()), path, source_filesystem=pafs.LocalFileSystem(), destination_filesystem=fs)


def download_folder(uri: str, local: Path) -> None:
    """Copy the folder at ``uri`` (a model bundle) into ``local``."""
    fs, path, prefix = resolve(uri)
    if fs is None:
        raise ValueError(f"not a remote URI: {uri}")
    if fs.get_file_info(pafs.FileSelector(path, allow_not_found=True)) == []:
        raise DataError("no such folder", path=prefix + path)
    pafs.copy_files(path, str(local.resolve()), source_filesystem=fs, destination_filesystem=pafs.LocalFileSystem())
