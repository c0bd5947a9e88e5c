"""Joining what the ranks encoded: every rank's share of a data part written into one part.

When the ranks prepare the data together (:func:`deepfm.training.parts.prepare_ranked`), each
encodes the rows of its own files into a folder of its own. A part's rows are then the ranks'
shares in rank order, which is file order: :func:`join_shares` has each rank copy its share's
files into the part's files at their offsets, all ranks at once, so that the part is exactly
what one process encoding every file would have written. The folders must be on a file system
every rank sees (one machine, or a shared one), as the encoded-data cache already must.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np

from deepfm.data.encoded import EncodedDataset
from deepfm.training.distributed import Context

COPY_BYTES = 64 << 20  # copied per read and write


def join_shares(share: Path, dest: Path, ctx: Context) -> EncodedDataset:
    """The part made of every rank's ``share`` folder (an EncodedDataset, possibly of no rows),
    in rank order, written into ``dest`` (collective). Returns the joined part."""
    dest.mkdir(parents=True, exist_ok=True)
    names = sorted(p.name for p in share.iterdir() if p.suffix == ".bin")  # the same on every rank
    for name in names:
        size = (share / name).stat().st_size
        sizes = [int(k[0]) for k in ctx.gather_arrays(np.array([size], dtype=np.int64))]
        if name.endswith(".offsets.bin"):
            _copy_offsets(share / name, dest / name, sizes, ctx)
        else:
            _copy(share / name, dest / name, sum(sizes[: ctx.rank]), size)
    meta = json.loads((share / "meta.json").read_text())
    rows = sum(int(k[0]) for k in ctx.gather_arrays(np.array([meta["rows"]], dtype=np.int64)))
    ctx.wait_for_main()  # every share written
    if ctx.main:
        (dest / "meta.json").write_text(json.dumps({**meta, "rows": rows}))
    ctx.wait_for_main()
    shutil.rmtree(share, ignore_errors=True)
    return EncodedDataset(dest)


def _copy(src: Path, dest: Path, at: int, size: int) -> None:
    """The ``size`` bytes of ``src`` into ``dest`` from byte ``at`` on (other ranks write the
    rest of ``dest`` meanwhile: no truncation)."""
    fd = os.open(dest, os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        with open(src, "rb") as f:
            while block := f.read(min(COPY_BYTES, max(size - f.tell(), 0))):
                os.pwrite(fd, block, at)
                at += len(block)
    finally:
        os.close(fd)


def _copy_offsets(src: Path, dest: Path, sizes: list[int], ctx: Context) -> None:
    """A multi-hot field's bag offsets (rows + 1 int64, from 0): this rank's, past the first 0,
    shifted by the values the ranks before it hold, after theirs."""
    offsets = np.memmap(src, dtype=np.int64, mode="r")
    ends = [int(k[0]) for k in ctx.gather_arrays(np.array([offsets[-1]], dtype=np.int64))]
    shift, at = sum(ends[: ctx.rank]), 8 * (1 + sum((k - 8) // 8 for k in sizes[: ctx.rank]))
    fd = os.open(dest, os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        if ctx.main:
            os.pwrite(fd, np.zeros(1, dtype=np.int64).tobytes(), 0)
        step = COPY_BYTES // 8
        for a in range(1, len(offsets), step):
            block = np.asarray(offsets[a : a + step]) + shift
            os.pwrite(fd, block.tobytes(), at)
            at += block.nbytes
    finally:
        os.close(fd)
        del offsets
