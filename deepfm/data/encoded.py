"""Encoded rows: a chunk in memory, a dataset of memory-mapped files, and the batches.

A dataset folder holds raw little-endian arrays plus ``meta.json``:

- ``ids.bin``     (N, S) int32 (int64 for tables of 2**31 rows or more; ``meta.json`` says
  which) one id per single-valued field, already offset
- ``values.bin``  (N, V) float32 the values of scaled numeric fields
- ``labels.bin``  (N,)   float32 0/1
- ``mh{k}.offsets.bin`` (N+1,) int64 and ``mh{k}.ids.bin`` (nnz,) int64 per multi-hot field

Batches are tensors sliced from these arrays: no per-row Python and no DataLoader of dicts.
Shuffling permutes blocks of rows and then rows inside each block, so reading stays local
even when the data is larger than memory. Pages already read are handed back to the kernel
every ``SHUFFLE_BLOCK`` rows (``madvise(MADV_DONTNEED)``): they stay in the page cache, which
the kernel may reclaim, but leave the process's resident set, so an epoch over 40M rows does
not show up as the data's full 8 GB in RSS.
"""

from __future__ import annotations

import json
import mmap
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

SHUFFLE_BLOCK = 1 << 18  # rows per shuffle block


@dataclass
class EncodedChunk:
    """Encoded rows. Shapes: ids (N, S) int64, values (N, V) float32, labels (N,) float32;
    multi_hot[k] = (offsets (N+1,) int64, ids (nnz,) int64) for the k-th multi-hot field."""

    ids: np.ndarray
    values: np.ndarray
    multi_hot: list[tuple[np.ndarray, np.ndarray]]
    labels: np.ndarray | None

    def __len__(self) -> int:
        return int(self.ids.shape[0])


@dataclass
class Batch:
    """Model inputs for B rows. ids (B, S) int64, values (B, V) float32, labels (B,) float32;
    multi_hot[k] = (offsets (B,) int64 bag starts, ids (nnz,) int64) as embedding_bag wants."""

    ids: torch.Tensor
    values: torch.Tensor
    multi_hot: list[tuple[torch.Tensor, torch.Tensor]]
    labels: torch.Tensor | None

    def __len__(self) -> int:
        return int(self.ids.shape[0])

    def to(self, device: torch.device | str) -> Batch:
        if torch.device(device).type == "cpu":
            return self
        return Batch(
            ids=self.ids.to(device, non_blocking=True),
            values=self.values.to(device, non_blocking=True),
            multi_hot=[(o.to(device, non_blocking=True), i.to(device, non_blocking=True)) for o, i in self.multi_hot],
            labels=None if self.labels is None else self.labels.to(device, non_blocking=True),
        )

    @classmethod
    def from_chunk(cls, chunk: EncodedChunk) -> Batch:
        return cls(
            ids=torch.from_numpy(chunk.ids),
            values=torch.from_numpy(chunk.values),
            multi_hot=[(torch.from_numpy(o[:-1]), torch.from_numpy(i)) for o, i in chunk.multi_hot],
            labels=None if chunk.labels is None else torch.from_numpy(chunk.labels),
        )


class EncodedDataset:
    """Encoded rows of one data part (train, valid or test), memory-mapped from a folder."""

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)
        meta = json.loads((self.folder / "meta.json").read_text())
        self.rows: int = meta["rows"]
        self.n_single: int = meta["n_single"]
        self.n_values: int = meta["n_values"]
        self.n_multi_hot: int = meta["n_multi_hot"]
        n = self.rows
        self.id_dtype = np.dtype(meta.get("id_dtype", "int64"))
        self._maps: list[mmap.mmap] = []  # the mappings behind the arrays, released by release()
        self._rows_since_release = 0
        self.ids = self._map(self.folder / "ids.bin", self.id_dtype.type, (n, self.n_single))
        self.values = self._map(self.folder / "values.bin", np.float32, (n, self.n_values))
        self.labels = self._map(self.folder / "labels.bin", np.float32, (n,))
        self.multi_hot = []
        for k in range(self.n_multi_hot):
            offsets = self._map(self.folder / f"mh{k}.offsets.bin", np.int64, (n + 1,))
            ids = self._map(self.folder / f"mh{k}.ids.bin", np.int64, (int(offsets[-1]),))
            self.multi_hot.append((offsets, ids))

    def __len__(self) -> int:
        return self.rows

    def _map(self, path: Path, dtype: type, shape: tuple[int, ...]) -> np.ndarray:
        """A read-only array over the file at ``path``, its mapping kept for release()."""
        count = int(np.prod(shape))
        if count == 0:
            return np.zeros(shape, dtype=dtype)
        need = count * np.dtype(dtype).itemsize
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            if size < need:
                raise ValueError(f"{path}: {size} bytes, expected at least {need} for {shape} {np.dtype(dtype).name}")
            mapped = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)  # the mapping outlives the file object
        self._maps.append(mapped)
        return np.frombuffer(mapped, dtype=dtype, count=count).reshape(shape)

    def release(self) -> None:
        """Drop the mapped pages from this process's resident set. The data stays in the page
        cache (no copy is lost: the mapping is read-only), and pages read again fault back in."""
        self._rows_since_release = 0
        if not hasattr(mmap, "MADV_DONTNEED"):  # Windows: the OS trims mapped pages itself
            return
        for mapped in self._maps:
            mapped.madvise(mmap.MADV_DONTNEED)

    @property
    def positive_rate(self) -> float:
        return float(self.labels.mean()) if self.rows else float("nan")

    def batch(self, index: np.ndarray | slice) -> Batch:
        """Gather rows (a sorted or shuffled index array, or a slice) into one Batch."""
        # np.array copies: memory-mapped pages are read-only and torch wants writable memory.
        # Ids are stored narrow (int32) and widened here, where the copy happens anyway.
        ids = torch.from_numpy(np.array(self.ids[index], dtype=np.int64))
        values = torch.from_numpy(np.array(self.values[index]))
        labels = torch.from_numpy(np.array(self.labels[index]))
        multi = []
        for offsets, flat in self.multi_hot:
            if isinstance(index, slice):
                start, stop = index.start or 0, min(index.stop, self.rows)
                starts, ends = offsets[start:stop], offsets[start + 1 : stop + 1]
            else:
                starts, ends = offsets[index], offsets[index + 1]
            lens = ends - starts
            bag_starts = np.zeros(len(lens), dtype=np.int64)
            np.cumsum(lens[:-1], out=bag_starts[1:])
            # Position of every gathered element in the flat array: its bag's start + rank.
            pos = np.repeat(starts - bag_starts, lens) + np.arange(int(lens.sum()), dtype=np.int64)
            multi.append((torch.from_numpy(bag_starts), torch.from_numpy(np.array(flat[pos]))))
        # A shuffled epoch reads one block of rows after another; once about a block has been
        # read, the pages behind it are not needed soon and can leave the resident set.
        self._rows_since_release += len(labels)
        if self._rows_since_release >= SHUFFLE_BLOCK:
            self.release()
        return Batch(ids=ids, values=values, multi_hot=multi, labels=labels)

    def batches(
        self, batch_size: int, shuffle: bool = False, seed: int = 0, drop_last: bool = False, skip: int = 0
    ) -> Iterator[Batch]:
        """Yield batches in order, or shuffled by blocks (deterministic for ``seed``), leaving
        out the first ``skip`` of them (a resumed epoch)."""
        n = self.rows
        if not shuffle:
            for start in range(skip * batch_size, n, batch_size):
                if drop_last and start + batch_size > n:
                    break
                yield self.batch(slice(start, min(start + batch_size, n)))
            return
        order = EpochOrder(n, seed)
        for start in range(skip * batch_size, n, batch_size):
            if drop_last and start + batch_size > n:
                break
            idx = np.sort(order[start : start + batch_size])  # sorted gathers read memory in order
            yield self.batch(idx)


class EpochOrder:
    """A permutation of range(n) without an array of n rows: blocks of ``block`` rows in
    random order (the last block may be short), rows shuffled inside each block. Holds the
    block order and where each block starts in the epoch, O(n / block); a block's own
    permutation is drawn when a slice reaches it, from a generator seeded by (seed, block),
    so the order is the same on every process and for any way of slicing it.
    ``order[start:stop]`` -> (stop - start,) int64 row numbers."""

    def __init__(self, n: int, seed: int, block: int = SHUFFLE_BLOCK) -> None:
        self.n, self.seed, self.block = n, seed, block
        self.blocks = np.random.default_rng(seed).permutation(-(-n // block))  # (n_blocks,) in epoch order
        sizes = np.minimum(block, n - self.blocks * block)
        self.ends = np.cumsum(sizes)  # epoch position just past each block
        self._cache: dict[int, np.ndarray] = {}  # block -> its rows, for the blocks last sliced

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, index: slice) -> np.ndarray:
        if not isinstance(index, slice):
            raise TypeError(f"EpochOrder takes slices, not {type(index).__name__}")
        start, stop, step = index.indices(self.n)
        if step != 1:
            raise ValueError("EpochOrder slices take no step")
        if start >= stop:
            return np.zeros(0, dtype=np.int64)
        parts: list[np.ndarray] = []
        cache: dict[int, np.ndarray] = {}
        first = int(np.searchsorted(self.ends, start, side="right"))
        for i in range(first, len(self.blocks)):
            begin = int(self.ends[i - 1]) if i else 0
            if begin >= stop:
                break
            b = int(self.blocks[i])
            cache[b] = rows = self._cache[b] if b in self._cache else self._block_rows(b)
            parts.append(rows[max(start - begin, 0) : stop - begin])
        # Consecutive batches share the block they straddle: keep it, drop the ones behind.
        self._cache = cache
        return np.concatenate(parts)

    def _block_rows(self, b: int) -> np.ndarray:
        """Block b's rows in their epoch order. (size,) int64"""
        # spawn_key=(b,) is SeedSequence(seed).spawn()'s b-th child: independent of the block
        # order's generator and of the other blocks', without spawning them all.
        rng = np.random.default_rng(np.random.SeedSequence(self.seed, spawn_key=(b,)))
        size = min(self.block, self.n - b * self.block)
        return b * self.block + rng.permutation(size)


class DatasetWriter:
    """Appends encoded chunks to the files of a dataset folder, then writes ``meta.json``."""

    def __init__(
        self, folder: str | Path, n_single: int, n_values: int, n_multi_hot: int, id_dtype: type = np.int64
    ) -> None:
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.id_dtype = np.dtype(id_dtype)
        self.meta = {
            "rows": 0,
            "n_single": n_single,
            "n_values": n_values,
            "n_multi_hot": n_multi_hot,
            "id_dtype": self.id_dtype.name,
        }
        self._ids = open(self.folder / "ids.bin", "wb")
        self._values = open(self.folder / "values.bin", "wb")
        self._labels = open(self.folder / "labels.bin", "wb")
        self._mh = [
            (open(self.folder / f"mh{k}.offsets.bin", "wb"), open(self.folder / f"mh{k}.ids.bin", "wb"))
            for k in range(n_multi_hot)
        ]
        self._mh_nnz = [0] * n_multi_hot
        for offsets_file, _ in self._mh:
            offsets_file.write(np.zeros(1, dtype=np.int64).tobytes())

    def append(self, chunk: EncodedChunk, rows: slice | None = None) -> None:
        """Append all rows of ``chunk`` (or the contiguous ``rows`` slice of it)."""
        sl = rows or slice(0, len(chunk))
        if sl.stop <= sl.start:
            return
        assert chunk.labels is not None, "training data needs labels"
        # memoryview: write the array's memory without another copy
        self._ids.write(np.ascontiguousarray(chunk.ids[sl], dtype=self.id_dtype).data)
        self._values.write(np.ascontiguousarray(chunk.values[sl]).data)
        self._labels.write(np.ascontiguousarray(chunk.labels[sl]).data)
        for k, (offsets, ids) in enumerate(chunk.multi_hot):
            lo, hi = offsets[sl.start], offsets[sl.stop]
            self._mh[k][0].write((offsets[sl.start + 1 : sl.stop + 1] - lo + self._mh_nnz[k]).tobytes())
            self._mh[k][1].write(ids[lo:hi].tobytes())
            self._mh_nnz[k] += int(hi - lo)
        self.meta["rows"] += sl.stop - sl.start

    def close(self) -> EncodedDataset:
        for f in [self._ids, self._values, self._labels, *[f for pair in self._mh for f in pair]]:
            f.close()
        (self.folder / "meta.json").write_text(json.dumps(self.meta))
        return EncodedDataset(self.folder)
