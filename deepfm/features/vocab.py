"""Growing a fitted vocabulary with a new day's counts (warm start).

Known values keep their local ids, so their embedding rows carry over unchanged. Values new in
the new data join when they were seen at least ``min_count`` times there. Every value's count
becomes a recency-weighted count, ``DECAY * old count + new count``: a value seen only long ago
fades by half each retraining.

Eviction (``max_vocab`` > 0): when known and new values together exceed the cap, the values
with the lowest recency-weighted counts go (ties: newcomers go before known values, then by
key). New values take the freed ids first, then ids past the end; if the cap shrank and ids
are left free, the values after them move down so ids stay dense (their rows move with them).
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

DECAY = 0.5  # weight of yesterday's count against today's: a half-life of one retraining


def grow_vocabulary(
    old_keys: pa.Array,
    old_counts: np.ndarray,
    new_keys: pa.Array,
    new_counts: np.ndarray,
    min_count: int,
    max_vocab: int,
) -> tuple[pa.Array, np.ndarray, np.ndarray]:
    """Merge a field's fitted vocabulary with the keys counted in new data.

    old_keys (K,) with old_counts (K,): the vocabulary, local position = id - FIRST_VALUE.
    new_keys (M,) distinct, with new_counts (M,). Returns (vocabulary (K',), recency-weighted
    counts (K',), position in the new vocabulary of each new key (M,), -1 where it has none).
    """
    new_keys = pc.cast(new_keys, old_keys.type)
    n_old = len(old_keys)
    found = pc.index_in(new_keys, value_set=old_keys)
    known = pc.is_valid(found).to_numpy(zero_copy_only=False)
    pos = pc.fill_null(found, -1).to_numpy(zero_copy_only=False).astype(np.int64)
    score_old = DECAY * np.asarray(old_counts, dtype=np.float64)
    np.add.at(score_old, pos[known], np.asarray(new_counts, dtype=np.float64)[known])
    cand = np.flatnonzero(~known & (np.asarray(new_counts) >= min_count))
    score_new = np.asarray(new_counts, dtype=np.float64)[cand]

    # Every value that may stay: known ones (source < n_old) and candidates (n_old + j).
    source = np.concatenate([np.arange(n_old), n_old + cand])
    score = np.concatenate([score_old, score_new])
    if max_vocab and source.size > max_vocab:
        is_new = (source >= n_old).astype(np.int8)
        tiebreak = np.arange(source.size)  # known by position, newcomers in key-count order
        order = np.lexsort((tiebreak, is_new, -score))
        keep = np.zeros(source.size, dtype=bool)
        keep[order[:max_vocab]] = True
    else:
        keep = np.ones(source.size, dtype=bool)

    # Slots: known values stay put; newcomers (most counted first) fill freed slots, then append.
    slots = np.full(max(n_old, int(keep.sum())), -1, dtype=np.int64)  # slot -> index into source
    kept_old = np.flatnonzero(keep[:n_old])
    slots[kept_old] = kept_old
    newcomers = n_old + np.flatnonzero(keep[n_old:])
    newcomers = newcomers[np.argsort(-score[newcomers], kind="stable")]
    free = np.flatnonzero(slots < 0)
    slots[free[: newcomers.size]] = newcomers
    slots = slots[slots >= 0]  # only when the cap shrank: later values move down

    # Source i is old value i (i < n_old) or candidate i - n_old: its place in old + candidates.
    combined_keys = pa.concat_arrays([old_keys, new_keys.take(pa.array(cand, pa.int64()))])
    vocab = combined_keys.take(pa.array(slots, pa.int64()))
    counts = score[slots]
    # Position of each new key: through the slot its source landed in.
    slot_of_source = np.full(source.size, -1, dtype=np.int64)
    slot_of_source[slots] = np.arange(slots.size)
    new_pos = np.full(len(new_keys), -1, dtype=np.int64)
    new_pos[known] = slot_of_source[pos[known]]
    new_pos[cand] = slot_of_source[n_old + np.arange(cand.size)]
    # vocab.arrow holds integer counts: the weighted ones are rounded.
    return vocab, np.rint(counts).astype(np.int64), new_pos
