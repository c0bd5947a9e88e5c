"""EncodedDataset: rows written in slices of chunks read back exactly (multi-hot CSR included);
shuffled batches are a deterministic permutation."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
import torch

from deepfm.data.encoded import DatasetWriter, EpochOrder
from deepfm.data.schema import FieldSpec, Schema
from deepfm.data.tables import TableSource
from deepfm.features.pipeline import FeaturePipeline


def _pipeline_and_chunks(n: int = 500, batch_rows: int = 70):
    rng = np.random.default_rng(0)
    schema = Schema(
        label="label",
        fields=(
            FieldSpec("c", min_count=1),
            FieldSpec("x", kind="numeric", mode="scaled", transform="none"),
            FieldSpec("m", kind="multi_hot", min_count=1),
            FieldSpec("m2", kind="multi_hot", min_count=1, pooling="sum"),
        ),
    )

    def bag() -> str | None:
        k = int(rng.integers(0, 4))
        return None if k == 0 else "|".join(f"t{int(t)}" for t in rng.integers(0, 20, k))

    table = pa.table(
        {
            "label": rng.integers(0, 2, n).astype(float),
            "c": [f"v{int(v)}" for v in rng.integers(0, 9, n)],
            "x": np.arange(n, dtype=float),
            "m": [bag() for _ in range(n)],
            "m2": [bag() for _ in range(n)],
        }
    )
    cols = ["label", *schema.names]
    pipe = FeaturePipeline(schema).fit(TableSource(table).chunks(cols))
    chunks = [pipe.encode(c) for c in TableSource(table).chunks(cols, batch_rows=batch_rows)]
    whole = pipe.encode(next(TableSource(table).chunks(cols, batch_rows=n)))
    return chunks, whole


def _bags(offsets: np.ndarray, ids: np.ndarray, rows) -> list[list[int]]:
    return [ids[offsets[r] : offsets[r + 1]].tolist() for r in rows]


@pytest.mark.parametrize("id_dtype", [np.int32, np.int64])
def test_writer_slices_round_trip(tmp_path: Path, id_dtype: type) -> None:
    chunks, whole = _pipeline_and_chunks()
    n = len(whole)
    # split at rows 333/420, boundaries that fall inside chunks of 70
    bounds = {"a": (0, 333), "b": (333, 420), "c": (420, n)}
    writers = {
        k: DatasetWriter(tmp_path / k, whole.ids.shape[1], whole.values.shape[1], 2, id_dtype=id_dtype) for k in bounds
    }
    row0 = 0
    for enc in chunks:
        for k, (lo, hi) in bounds.items():
            a, b = max(lo, row0), min(hi, row0 + len(enc))
            if b > a:
                writers[k].append(enc, slice(a - row0, b - row0))
        row0 += len(enc)
    parts = {k: w.close() for k, w in writers.items()}
    for k, (lo, hi) in bounds.items():
        ds = parts[k]
        assert len(ds) == hi - lo
        assert ds.ids.dtype == id_dtype  # stored narrow where asked ...
        assert np.array_equal(np.asarray(ds.ids), whole.ids[lo:hi])
        assert np.array_equal(np.asarray(ds.values), whole.values[lo:hi])
        assert np.array_equal(np.asarray(ds.labels), whole.labels[lo:hi])
        for j in range(2):
            offsets, ids = ds.multi_hot[j]
            wo, wi = whole.multi_hot[j]
            assert _bags(offsets, ids, range(hi - lo)) == _bags(wo, wi, range(lo, hi))
        # gathering arbitrary rows rebuilds the bags as embedding_bag wants them
        idx = np.array([0, 3, 4, 10, hi - lo - 1])
        batch = ds.batch(idx)
        assert batch.ids.dtype == torch.int64  # ... and handed to the model as int64
        assert np.array_equal(batch.ids.numpy(), whole.ids[lo + idx])
        for j in range(2):
            starts, flat = (t.numpy() for t in batch.multi_hot[j])
            ends = np.r_[starts[1:], flat.size]
            got = [flat[s:e].tolist() for s, e in zip(starts, ends)]
            wo, wi = whole.multi_hot[j]
            assert got == _bags(wo, wi, lo + idx)
        # and a slice batch
        sl = ds.batch(slice(5, 9))
        assert sl.ids.dtype == torch.int64 and np.array_equal(sl.ids.numpy(), whole.ids[lo + 5 : lo + 9])
        assert np.array_equal(sl.values.numpy(), whole.values[lo + 5 : lo + 9])


def test_batches_cover_every_row_once(tmp_path: Path) -> None:
    _, whole = _pipeline_and_chunks(n=300)
    w = DatasetWriter(tmp_path / "d", whole.ids.shape[1], whole.values.shape[1], 2)
    w.append(whole)
    ds = w.close()
    in_order = np.concatenate([b.values[:, 0].numpy() for b in ds.batches(64)])
    assert np.array_equal(in_order, np.arange(300))

    def shuffled(seed: int) -> np.ndarray:
        return np.concatenate([b.values[:, 0].numpy() for b in ds.batches(64, shuffle=True, seed=seed)])

    s1, s2, s3 = shuffled(1), shuffled(1), shuffled(2)
    assert np.array_equal(np.sort(s1), np.arange(300))
    assert np.array_equal(s1, s2) and not np.array_equal(s1, s3) and not np.array_equal(s1, in_order)
    assert sum(len(b) for b in ds.batches(64, drop_last=True)) == 256


@pytest.mark.parametrize("n", [100, 128, 1000, 1024])  # below, at and above a block; short last block
def test_epoch_order_is_a_permutation_of_whole_blocks(n: int) -> None:
    order = EpochOrder(n, seed=3, block=128)
    whole = order[0 : len(order)]
    assert len(order) == n and whole.dtype == np.int64
    assert np.array_equal(np.sort(whole), np.arange(n))
    # rows stay within their block of 128: consecutive runs of 128 (or the short last block)
    # hold the rows of one block, which is what releasing pages every block relies on
    pos = 0
    seen_blocks = []
    while pos < n:
        blk = whole[pos] // 128
        size = min(128, n - blk * 128)
        assert np.all(whole[pos : pos + size] // 128 == blk)
        seen_blocks.append(blk)
        pos += size
    assert sorted(seen_blocks) == list(range(-(-n // 128)))
    # slices of any size concatenate to the whole, whether read in turn (cached blocks) or
    # out of turn from a fresh order (blocks drawn again)
    for size in (1, 37, 128, 300):
        assert np.array_equal(np.concatenate([order[s : s + size] for s in range(0, n, size)]), whole)
    fresh = EpochOrder(n, seed=3, block=128)
    starts = np.random.default_rng(0).permutation(np.arange(0, n, 37))
    assert all(np.array_equal(fresh[s : s + 37], whole[s : s + 37]) for s in starts)
    assert order[n : n + 5].size == 0 and np.array_equal(order[-5:], whole[-5:])


def test_epoch_order_depends_on_the_seed_only() -> None:
    a, b, c = (EpochOrder(1000, seed, block=128)[0:1000] for seed in (4, 4, 5))
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    assert not np.array_equal(a, np.arange(1000))
    assert EpochOrder(0, seed=4)[0:10].size == 0


def test_epoch_order_at_criteo_1tb_scale_holds_only_the_block_order() -> None:
    """4.4B rows: an array of the order would be 35 GB; the lazy one keeps 16,785 blocks'
    order and ends, and a slice draws the blocks it reaches (2 MiB each)."""
    import tracemalloc

    n = 4_400_000_000
    tracemalloc.start()
    try:
        order = EpochOrder(n, seed=1)
        tail = order[n - 5000 : n]  # the last block of the epoch, and maybe the one before
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert len(order) == n and tail.size == 5000 and np.unique(tail).size == 5000
    assert 0 <= tail.min() and tail.max() < n
    assert peak < 16 * 2**20, peak  # numpy reports its buffers to tracemalloc


def _mapped_rss_kib(path: Path) -> int:
    """Resident KiB of this process's mappings of ``path`` (Linux /proc/self/smaps)."""
    total, inside = 0, False
    for line in Path("/proc/self/smaps").read_text().splitlines():
        head = line.split()
        if head and "-" in head[0] and len(head) >= 5 and ":" in head[3]:  # a mapping's first line
            inside = len(head) >= 6 and head[5] == str(path)
        elif inside and line.startswith("Rss:"):
            total += int(head[1])
    return total


@pytest.mark.skipif(not Path("/proc/self/smaps").exists(), reason="needs Linux /proc/self/smaps")
def test_epoch_keeps_mapped_pages_out_of_the_resident_set(tmp_path: Path) -> None:
    """A shuffled epoch over a 48 MB id file leaves at most a few shuffle blocks of it
    resident, and every row still comes back exactly once with its own values."""
    from deepfm.data.encoded import SHUFFLE_BLOCK, EncodedChunk

    n, s = 8 * SHUFFLE_BLOCK + 1000, 6  # 8 full blocks and a short one
    rows = np.arange(n, dtype=np.int32)
    chunk = EncodedChunk(
        ids=np.repeat(rows[:, None], s, axis=1),
        values=rows[:, None].astype(np.float32),
        multi_hot=[],
        labels=(rows % 2).astype(np.float32),
    )
    w = DatasetWriter(tmp_path / "d", s, 1, 0, id_dtype=np.int32)
    w.append(chunk)
    ds = w.close()
    ids_file = (tmp_path / "d" / "ids.bin").resolve()
    block_kib = SHUFFLE_BLOCK * s * 4 // 1024
    seen = np.zeros(n, dtype=np.int64)
    peak = 0
    for b in ds.batches(4096, shuffle=True, seed=5):
        ids = b.ids.numpy()
        assert np.array_equal(ids[:, 0], ids[:, -1]) and np.array_equal(ids[:, 0], b.values[:, 0].numpy())
        seen[ids[:, 0]] += 1
        peak = max(peak, _mapped_rss_kib(ids_file))
    assert np.all(seen == 1)
    file_kib = n * s * 4 // 1024
    assert peak > 0, "the id file was never seen mapped"  # the measure itself works
    assert peak <= 3 * block_kib < file_kib // 2, (peak, block_kib, file_kib)
    # reading in order (scoring) is bounded alike
    for _ in ds.batches(8192):
        peak = max(peak, _mapped_rss_kib(ids_file))
    assert peak <= 3 * block_kib


def test_truncated_file_names_the_file(tmp_path: Path) -> None:
    _, whole = _pipeline_and_chunks(n=100)
    w = DatasetWriter(tmp_path / "d", whole.ids.shape[1], whole.values.shape[1], 2)
    w.append(whole)
    w.close()
    ids = tmp_path / "d" / "ids.bin"
    ids.write_bytes(ids.read_bytes()[:-8])
    from deepfm.data.encoded import EncodedDataset

    with pytest.raises(ValueError, match=r"ids\.bin: .* expected at least"):
        EncodedDataset(tmp_path / "d")
