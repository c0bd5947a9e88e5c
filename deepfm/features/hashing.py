"""Per-field hashing: values map to a fixed number of rows, whatever how many distinct values.

A field with ``hash_buckets: N`` keeps no vocabulary. Its value's local id is
``FIRST_VALUE + h(value) mod N`` where ``h`` is FNV-1a 64 over the value's UTF-8 bytes,
followed by the splitmix64 finalizer (FNV's low bits mix poorly, and ``mod N`` reads
them). The hash has no seed and no per-process salt (unlike Python's ``hash()``), so every
process, machine and version encodes a value the same way. Nulls get the MISSING row; the
OOV row stays unused, so hashed and vocabulary fields share one row convention.

Vectorized over Arrow's string buffers: one NumPy pass per byte position, over the rows
still that long (rows sorted by length once), so the cost is about the bytes hashed.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

FNV_OFFSET = np.uint64(0xCBF29CE484222325)
FNV_PRIME = np.uint64(0x100000001B3)
_MIX1, _MIX2 = np.uint64(0xBF58476D1CE4E5B9), np.uint64(0x94D049BB133111EB)


def hash64(strings: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """Stable 64-bit hashes of UTF-8 strings. (N,) string -> (N,) uint64; a null hashes as ""."""
    arr = strings.combine_chunks() if isinstance(strings, pa.ChunkedArray) else strings
    if not (pa.types.is_string(arr.type) or pa.types.is_large_string(arr.type)):
        raise TypeError(f"hash64 needs strings, got {arr.type}")
    n = len(arr)
    _, off_buf, data_buf = arr.buffers()
    off_type = np.int64 if pa.types.is_large_string(arr.type) else np.int32
    offsets = (
        np.frombuffer(off_buf, dtype=off_type, count=n + 1, offset=arr.offset * np.dtype(off_type).itemsize)
        if n
        else np.zeros(1, off_type)
    )
    data = np.frombuffer(data_buf, dtype=np.uint8) if data_buf is not None else np.zeros(0, np.uint8)
    starts = offsets[:-1].astype(np.int64)
    lengths = np.diff(offsets).astype(np.int64)
    order = np.argsort(-lengths, kind="stable")  # longest first: byte k's rows are a prefix
    remaining, at = lengths[order], starts[order]
    h = np.full(n, FNV_OFFSET, dtype=np.uint64)  # in length order, so each prefix is a slice
    for k in range(int(remaining[0]) if n else 0):
        m = int(np.searchsorted(-remaining, -k, side="left"))  # rows with length > k
        h[:m] ^= data[at[:m] + k]
        h[:m] *= FNV_PRIME  # uint64 arithmetic wraps
    out = np.empty_like(h)
    out[order] = h
    return _mix(out)


def _mix(z: np.ndarray) -> np.ndarray:
    """splitmix64's finalizer: every input bit reaches the low output bits."""
    z = z ^ (z >> np.uint64(30))
    z = z * _MIX1
    z = z ^ (z >> np.uint64(27))
    z = z * _MIX2
    return z ^ (z >> np.uint64(31))


def hashed_ids(strings: pa.Array | pa.ChunkedArray, buckets: int, first: int, missing: int) -> np.ndarray:
    """Local ids of a hashed field: ``first + hash64 mod buckets``, ``missing`` for nulls.
    (N,) string -> (N,) int64."""
    ids = (hash64(strings) % np.uint64(buckets)).astype(np.int64) + first
    if strings.null_count:
        nulls = strings.is_null()
        ids[np.asarray(nulls.to_numpy(zero_copy_only=False), dtype=bool)] = missing
    return ids
