"""Files written whole or not at all, and what identifies a file's content.

A crash at any moment leaves the old file or the new one (:func:`atomic_path`); a run that
reads files again (a resumed run, a cache entry) checks they are the ones it read before
(:func:`file_identity`); a saved model is signed file by file (:func:`sha256_file`).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """A temporary path to write ``path``'s new content to; when the block ends, the file is
    fsynced and renamed over ``path`` and the folder fsynced (so the rename itself is durable).
    A crash at any moment leaves the old file or the new one, whole."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    yield tmp
    with open(tmp, "rb+") as f:
        os.fsync(f.fileno())
    os.replace(tmp, path)
    fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through :func:`atomic_path`."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def sha256_file(path: Path) -> str:
    """The hex sha256 of a file's bytes, read in blocks of 1 MiB."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def file_identity(path: str | Path | None) -> list[str | int] | None:
    """[absolute path, size, modification time in ns] of a file, None when there is none:
    cheap to take, and it changes whenever the file is rewritten."""
    if path is None or not Path(path).is_file():
        return None
    st = Path(path).stat()
    return [str(Path(path).resolve()), st.st_size, st.st_mtime_ns]
