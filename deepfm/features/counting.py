"""The single-pass fitting's bookkeeping: counting a field's distinct values across chunks
(:class:`Dictionary` for text, :class:`BinCounts` for integer bin keys), a uniform sample of
numeric values (:class:`Reservoir`, for quantile bin edges), and the :class:`Spill` that keeps
each chunk's per-row indices so every row can be encoded after fitting without a second parse.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.ipc

from deepfm.features.state import MISSING

# Several ranks fitting together: this rank's 1-D array -> every rank's, in rank order (a
# collective: every rank calls it with arrays of the same dtype, in the same order).
Gather = Callable[[np.ndarray], list[np.ndarray]]

RESERVOIR = 200_000  # values kept per field to place quantile bin edges
SPILL_MEMORY = 512 << 20  # bytes of the single-parse spill kept in memory; the rest goes to disk


class Dictionary:
    """The distinct values of one field across chunks, merged by Arrow's dictionary unifier,
    with their counts over the rows being fitted."""

    # Merging rehashes the global dictionary, so merge only once the chunk dictionaries
    # waiting add up to its size: each value is then rehashed O(1) times on average, where
    # merging every k chunks costs O(rows^2 / k) on high-cardinality fields.
    MIN_PENDING = 1 << 18

    def __init__(self, keep_maps: bool) -> None:
        self.values: pa.Array | None = None
        self.counts = np.zeros(0, dtype=np.int64)
        self.pending: list[tuple[pa.Array, np.ndarray]] = []
        self.pending_values = 0
        self.maps: list[np.ndarray] = []  # per chunk: position in its dictionary -> global position
        self.keep_maps = keep_maps

    def add(self, values: pa.Array | pa.ChunkedArray) -> np.ndarray:
        """Dictionary-encode and count a chunk's values. Returns the chunk-local index of each
        value (-1 for null). (n,) int32"""
        encoded = pc.dictionary_encode(values)
        if isinstance(encoded, pa.ChunkedArray):
            # The pieces share one dictionary (the hash table carries over), so no copy of
            # the strings is needed to treat them as one array.
            dictionary = encoded.chunk(0).dictionary if encoded.num_chunks else pa.array([], values.type)
            indices: pa.Array | pa.ChunkedArray = pa.chunked_array([c.indices for c in encoded.chunks], pa.int32())
        else:
            dictionary, indices = encoded.dictionary, encoded.indices
        idx = np.asarray(pc.fill_null(indices, -1).to_numpy(zero_copy_only=False), dtype=np.int32)
        cnt = np.bincount(idx + 1, minlength=len(dictionary) + 1)[1:].astype(np.int64)  # slot 0: nulls
        self.pending.append((dictionary, cnt))
        self.pending_values += len(dictionary)
        if self.pending_values >= max(self.MIN_PENDING, 0 if self.values is None else len(self.values)):
            self._compact()
        return idx

    def _compact(self) -> None:
        if not self.pending:
            return
        arrays = ([self.values] if self.values is not None else []) + [d for d, _ in self.pending]
        as_dicts = [pa.DictionaryArray.from_arrays(pa.array(np.arange(len(a), dtype=np.int32)), a) for a in arrays]
        unified = pa.chunked_array(as_dicts).unify_dictionaries()
        values = unified.chunk(0).dictionary
        counts = np.zeros(len(values), dtype=np.int64)
        counts[: len(self.counts)] = self.counts  # the unifier keeps the first dictionary's order
        first = 1 if self.values is not None else 0
        for i, (_, cnt) in enumerate(self.pending):
            positions = unified.chunk(first + i).indices.to_numpy()
            counts[positions] += cnt  # positions are distinct: dictionary entries are
            if self.keep_maps:
                self.maps.append(positions.astype(np.int32))
        self.values, self.counts, self.pending, self.pending_values = values, counts, [], 0

    def uncount(self, chunks: dict[int, np.ndarray]) -> None:
        """Take back the counts of values at chunk-local indices: {chunk: indices}."""
        if not chunks:
            return
        self._compact()
        positions = np.concatenate([self.maps[i][idx[idx >= 0]] for i, idx in chunks.items()])
        self.counts -= np.bincount(positions, minlength=len(self.counts))

    def finish(self) -> tuple[pa.Array, np.ndarray]:
        self._compact()
        if self.values is None:
            return pa.array([], pa.string()), np.zeros(0, dtype=np.int64)
        return self.values, self.counts

    def merge(self, gather: Gather, rank: int) -> None:
        """Merge every rank's values and counts into this counter (collective). The merged
        order is rank 0's values, then rank 1's new ones, ...: with the ranks holding
        consecutive files, the order one process reading them all would have seen, so the
        vocabulary is the one process's. This rank's chunk maps follow its values."""
        values, counts = self.finish()
        arrays = [arrow_array(b) for b in gather(arrow_bytes(values))]
        all_counts = gather(counts)
        kind = next((a.type for a in arrays if len(a)), values.type)
        as_dicts = [
            pa.DictionaryArray.from_arrays(pa.array(np.arange(len(a), dtype=np.int32)), a.cast(kind)) for a in arrays
        ]
        unified = pa.chunked_array(as_dicts).unify_dictionaries()
        merged = unified.chunk(0).dictionary
        total = np.zeros(len(merged), dtype=np.int64)
        positions = [unified.chunk(k).indices.to_numpy(zero_copy_only=False) for k in range(len(arrays))]
        for pos, cnt in zip(positions, all_counts):
            total[pos] += cnt  # distinct within a rank: its values are
        mine = positions[rank].astype(np.int32)
        self.maps = [mine[m] for m in self.maps]
        self.values, self.counts = merged, total

    def table(self, i: int, remap: np.ndarray, offset: int) -> np.ndarray:
        """Chunk ``i``'s index -> id (offset + local id), with one extra entry at the end for
        index -1 (null): the MISSING row. Encoding is then one gather."""
        return offset + np.append(remap[self.maps[i]], MISSING)

    def encode(self, i: int, idx: np.ndarray, remap: np.ndarray, offset: int, out: np.ndarray) -> None:
        """Ids of chunk ``i``'s spilled indices into ``out``."""
        np.take(self.table(i, remap, offset).astype(out.dtype), idx, out=out)


class BinCounts:
    """Counts of integer bin keys (log-binned numerics) in a dense array over the range of keys
    seen: the keys are small integers, so counting needs no hashing. Same interface as
    Dictionary; a chunk's spilled index is the key itself (NULL for missing)."""

    NULL = np.iinfo(np.int32).min

    def __init__(self) -> None:
        self.lo = 0
        self.counts = np.zeros(0, dtype=np.int64)  # counts[k - lo] for key k

    def add(self, keys: np.ndarray) -> np.ndarray:
        """Count a chunk's bin keys (float, NaN for missing). Returns them as int32. (n,)"""
        null = np.isnan(keys)
        idx = np.where(null, self.NULL, keys).astype(np.int32)
        present = idx[~null]
        if present.size:
            lo, hi = int(present.min()), int(present.max())
            self._cover(lo, hi)
            counted = np.bincount(present - lo)
            self.counts[lo - self.lo : lo - self.lo + counted.size] += counted
        return idx

    def _cover(self, lo: int, hi: int) -> None:
        """Grow the dense range to hold keys lo..hi."""
        if not self.counts.size:
            self.lo, self.counts = lo, np.zeros(hi - lo + 1, dtype=np.int64)
            return
        new_lo, new_hi = min(lo, self.lo), max(hi, self.lo + self.counts.size - 1)
        if (new_lo, new_hi) != (self.lo, self.lo + self.counts.size - 1):
            grown = np.zeros(new_hi - new_lo + 1, dtype=np.int64)
            grown[self.lo - new_lo : self.lo - new_lo + self.counts.size] = self.counts
            self.lo, self.counts = new_lo, grown

    def uncount(self, chunks: dict[int, np.ndarray]) -> None:
        if not chunks:
            return
        present = np.concatenate([idx[idx != self.NULL] for idx in chunks.values()])
        self.counts -= np.bincount(present - self.lo, minlength=self.counts.size)

    def finish(self) -> tuple[pa.Array, np.ndarray]:
        return pa.array(self.lo + np.arange(self.counts.size, dtype=np.int64)), self.counts

    def merge(self, gather: Gather) -> None:
        """Every rank's counts summed into this counter (collective). Spilled indices are the
        keys themselves, so nothing else changes."""
        ranges = gather(np.array([self.lo, self.counts.size], dtype=np.int64))
        all_counts = gather(self.counts)
        self.lo, self.counts = 0, np.zeros(0, dtype=np.int64)
        for (lo, n), counts in zip(ranges, all_counts):
            if n:
                self._cover(int(lo), int(lo + n - 1))
                self.counts[lo - self.lo : lo - self.lo + n] += counts

    def encode(self, i: int, idx: np.ndarray, remap: np.ndarray, offset: int, out: np.ndarray) -> None:
        table = (offset + np.append(remap, MISSING)).astype(out.dtype)
        np.take(table, np.where(idx == self.NULL, remap.size, idx.astype(np.int64) - self.lo), out=out)


class Spill:
    """Append-only arrays, one series per name, read back chunk by chunk. The first
    ``memory_budget`` bytes stay in memory (no write and read back); the rest go to one file
    per name in ``folder``, so memory stays bounded whatever the size of the input."""

    def __init__(self, folder: Path, memory_budget: int | None = None) -> None:
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.files: dict[str, Any] = {}
        self.where: dict[str, list[np.ndarray | tuple[int, int, np.dtype]]] = {}
        self.memory_left = SPILL_MEMORY if memory_budget is None else memory_budget
        self.lock = threading.Lock()  # put() runs on two threads

    def put(self, name: str, array: np.ndarray) -> None:
        array = np.ascontiguousarray(array)
        with self.lock:
            where = self.where.setdefault(name, [])
            in_memory = array.nbytes <= self.memory_left
            if in_memory:
                self.memory_left -= array.nbytes
        if in_memory:
            where.append(array)
            return
        f = self.files.get(name)
        if f is None:
            f = self.files[name] = open(self.folder / f"{name}.bin", "w+b")
        where.append((f.tell(), array.size, array.dtype))
        f.write(array.data)  # the array's memory, without a copy to bytes

    def seal(self) -> None:
        """Done writing: flush every file so ``get`` can read from any thread."""
        for f in self.files.values():
            f.flush()

    def get(self, name: str, i: int) -> np.ndarray:
        where = self.where[name][i]
        if isinstance(where, np.ndarray):
            return where
        offset, count, dtype = where
        return np.fromfile(self.folder / f"{name}.bin", dtype=dtype, count=count, offset=offset)

    def close(self) -> None:
        for f in self.files.values():
            f.close()


@dataclass
class Reservoir:
    """Uniform sample of at most RESERVOIR values (those with the smallest random keys),
    with the row each came from."""

    values: np.ndarray
    keys: np.ndarray
    rows: np.ndarray

    @classmethod
    def empty(cls) -> Reservoir:
        return cls(np.empty(0), np.empty(0), np.empty(0, dtype=np.int64))

    def add(self, x: np.ndarray, rows: np.ndarray, rng: np.random.Generator) -> None:
        self.values = np.concatenate([self.values, x])
        self.keys = np.concatenate([self.keys, rng.random(x.size)])
        self.rows = np.concatenate([self.rows, rows])
        if self.values.size > RESERVOIR:
            keep = np.argpartition(self.keys, RESERVOIR)[:RESERVOIR]
            self.values, self.keys, self.rows = self.values[keep], self.keys[keep], self.rows[keep]

    def merge(self, gather: Gather) -> None:
        """The sample of every rank's rows (collective): the values with the smallest keys of
        all, still uniform when each rank drew its keys from its own generator. Their rows
        are no longer comparable (each rank counts its own), so :meth:`before` is done first."""
        values, keys = np.concatenate(gather(self.values)), np.concatenate(gather(self.keys))
        if values.size > RESERVOIR:
            keep = np.argpartition(keys, RESERVOIR)[:RESERVOIR]
            values, keys = values[keep], keys[keep]
        self.values, self.keys, self.rows = values, keys, np.full(values.size, -1, dtype=np.int64)

    def before(self, n_rows: int) -> None:
        """Keep the values of rows < n_rows: still a uniform sample of those rows."""
        keep = self.rows < n_rows
        self.values, self.keys, self.rows = self.values[keep], self.keys[keep], self.rows[keep]


def arrow_bytes(values: pa.Array) -> np.ndarray:
    """An Arrow array as the bytes of an IPC stream (to send between ranks; no pickle). (n,) uint8"""
    sink = pa.BufferOutputStream()
    batch = pa.record_batch([values], names=["v"])
    with pa.ipc.new_stream(sink, batch.schema) as writer:
        writer.write_batch(batch)
    return np.frombuffer(sink.getvalue(), dtype=np.uint8)


def arrow_array(data: np.ndarray) -> pa.Array:
    """The array :func:`arrow_bytes` wrote."""
    table = pa.ipc.open_stream(pa.py_buffer(np.ascontiguousarray(data, dtype=np.uint8).tobytes())).read_all()
    return table.column("v").combine_chunks()
