"""What is fitted for one field, and looking its values up.

All fields share one id space (one embedding table). Field ``f`` owns rows
``offset_f .. offset_f + size_f - 1`` and within them:

- row 0: OOV (values unseen in training, or seen fewer than ``min_count`` times);
- row 1: missing (an empty field; for multi-hot also an empty list);
- rows 2..: the vocabulary, most frequent first (or the hash buckets).

A scaled numeric field owns two rows: row 0 is the vector its value multiplies, row 1 the
vector used when the value is missing (so "missing" is learned, not imputed as 0).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from deepfm.data.schema import FieldSpec
from deepfm.features.hashing import hashed_ids

OOV, MISSING, FIRST_VALUE = 0, 1, 2
DICT_LOOKUP_ROWS = 1024  # keys looked up in a dict (see lookup) rather than by pc.index_in


@dataclass
class FieldState:
    """What was fitted for one field."""

    spec: FieldSpec
    offset: int = 0
    size: int = 2
    vocab: pa.Array | None = None  # keys, most frequent first (strings, or int64 bin keys)
    counts: np.ndarray | None = None
    mean: float = 0.0  # scaled numerics: standardization after the transform
    std: float = 1.0
    edges: list[float] = field(default_factory=list)  # quantile bins
    _index: tuple[pa.Array, dict[Any, int]] | None = field(default=None, repr=False, compare=False)

    def index(self) -> dict[Any, int]:
        """Key -> local id as a dict, built on first use and again if ``vocab`` is replaced."""
        if self._index is None or self._index[0] is not self.vocab:
            assert self.vocab is not None
            self._index = (self.vocab, {k: FIRST_VALUE + i for i, k in enumerate(self.vocab.to_pylist())})
        return self._index[1]

    def local_ids(self, keys: pa.Array | pa.ChunkedArray) -> np.ndarray:
        """Local ids of raw keys (text, or int64 bin keys): FIRST_VALUE + position in the
        vocabulary or the hash bucket, OOV for unseen values, MISSING for nulls. (N,) int64"""
        return lookup(keys, self)

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.spec.name,
            "offset": self.offset,
            "size": self.size,
            "mean": self.mean,
            "std": self.std,
            "edges": self.edges,
            "vocab_size": 0 if self.vocab is None else len(self.vocab),
        }


def lookup(keys: pa.Array | pa.ChunkedArray, st: FieldState) -> np.ndarray:
    """Local ids: FIRST_VALUE + position in the vocabulary, OOV for unseen, MISSING for nulls.

    pc.index_in hashes the whole vocabulary on every call: right for a chunk of a file, but
    most of the cost of scoring a few records (an HTTP request). Those go through a dict
    built once per field instead (memory: a Python dict of the vocabulary); same ids."""
    if st.spec.is_hashed:
        return hashed_ids(keys, st.spec.hash_buckets, FIRST_VALUE, MISSING)
    vocab = st.vocab
    assert vocab is not None
    if len(keys) <= DICT_LOOKUP_ROWS:
        index = st.index()
        found = (MISSING if k is None else index.get(k, OOV) for k in keys.to_pylist())
        return np.fromiter(found, dtype=np.int64, count=len(keys))
    pos = pc.index_in(keys, value_set=vocab)
    null = pc.is_null(keys).to_numpy(zero_copy_only=False)
    filled = pc.fill_null(pc.add(pc.cast(pos, pa.int64()), FIRST_VALUE), OOV)
    out = np.array(filled.to_numpy(zero_copy_only=False), dtype=np.int64)  # writable copy
    out[null] = MISSING
    return out
