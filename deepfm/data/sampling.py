"""Negative downsampling of an encoded training part: streamed, seeded, one pass.

Every positive is kept; each negative is kept with probability ``rate``. The coin of row ``i``
comes from a generator seeded by (seed, i // BLOCK), drawn for the whole block, so the rows
kept depend only on (seed, rate, row order) -- not on chunk sizes or on how many rows there
are -- and nothing is shuffled or held in memory beyond one block. The model trained on the
kept rows over-predicts by odds 1/rate; deepfm.calibration.postprocess undoes that.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from deepfm.data.encoded import DatasetWriter, EncodedChunk, EncodedDataset

BLOCK = 65_536
_TAG = 0x5A3D  # keeps these coins apart from other seeded streams of the same seed


def keep_mask(labels: np.ndarray, start: int, rate: float, seed: int) -> np.ndarray:
    """Which rows ``start .. start + len(labels) - 1`` of a part to keep: the same answer for
    a row however the part is cut into pieces. (N,) -> (N,) bool"""
    n = len(labels)
    coins = np.empty(n, dtype=np.float64)
    first = start // BLOCK
    for b in range(first, (start + max(n, 1) - 1) // BLOCK + 1):
        block = np.random.default_rng([seed, _TAG, b]).random(BLOCK)
        lo, hi = max(start, b * BLOCK), min(start + n, (b + 1) * BLOCK)
        coins[lo - start : hi - start] = block[lo - b * BLOCK : hi - b * BLOCK]
    return (labels > 0.5) | (coins < rate)


def downsample(part: EncodedDataset, rate: float, seed: int, folder: Path) -> EncodedDataset:
    """Write the kept rows of ``part`` (in order) to a new dataset in ``folder``."""
    writer = DatasetWriter(folder, part.n_single, part.n_values, part.n_multi_hot, id_dtype=part.id_dtype.type)
    for start in range(0, len(part), BLOCK):
        stop = min(start + BLOCK, len(part))
        labels = np.asarray(part.labels[start:stop])
        keep = np.flatnonzero(keep_mask(labels, start, rate, seed)) + start
        if not keep.size:
            continue
        b = part.batch(keep)
        chunk = EncodedChunk(
            ids=b.ids.numpy(),
            values=b.values.numpy(),
            labels=b.labels.numpy() if b.labels is not None else None,
            multi_hot=[(offsets_with_end(o.numpy(), len(keep), i.numpy().size), i.numpy()) for o, i in b.multi_hot],
        )
        writer.append(chunk)
    return writer.close()


def offsets_with_end(starts: np.ndarray, rows: int, nnz: int) -> np.ndarray:
    """A Batch's bag starts (rows,) -> CSR offsets (rows + 1,) as an EncodedChunk has them."""
    out = np.empty(rows + 1, dtype=np.int64)
    out[:rows], out[rows] = starts, nnz
    return out
