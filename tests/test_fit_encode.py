"""The single-parse training path (fit_encode) encodes exactly as fit + encode, which is the
path prediction uses: same vocabularies, ids, values, bags and labels."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from conftest import simple_records, simple_schema, write_records_csv  # type: ignore[import-not-found]

from deepfm.features import FeaturePipeline
from deepfm.io import Chunk, ReadOptions, Reader


@pytest.mark.parametrize("price_mode", ["scaled", "bucketized"])
def test_fit_encode_equals_fit_then_encode(tmp_path: Path, price_mode: str) -> None:
    schema = simple_schema(price_mode=price_mode, min_count=2)
    if price_mode == "bucketized":
        fields = tuple(replace(f, binning="quantile", bins=8) if f.name == "price" else f for f in schema.fields)
        schema = replace(schema, fields=fields)
    path = write_records_csv(tmp_path / "d.csv", simple_records(3000, seed=9))
    columns = [schema.label, *schema.names]
    n_fit = 2100  # the boundary falls inside a chunk
    reader = Reader(path, ReadOptions(block_size=4096))  # many chunks

    fast = FeaturePipeline(schema)
    fast_chunks = list(fast.fit_encode(reader.chunks(columns, schema.numeric_columns), n_fit, tmp_path / "spill"))
    assert len(fast_chunks) > 5

    def first_rows(chunks):
        for c in chunks:
            keep = min(max(n_fit - c.row0, 0), c.table.num_rows)
            if keep:
                yield Chunk(c.table.slice(0, keep), c.row0, c.reader)

    slow = FeaturePipeline(schema).fit(first_rows(reader.chunks(columns, schema.numeric_columns)))
    for spec in schema.fields:
        a, b = fast.states[spec.name], slow.states[spec.name]
        assert (a.offset, a.size, a.edges) == (b.offset, b.size, b.edges), spec.name
        assert a.mean == pytest.approx(b.mean) and a.std == pytest.approx(b.std)
        if a.vocab is not None:
            assert a.vocab.equals(b.vocab) and np.array_equal(a.counts, b.counts), spec.name
    for (row0, enc), chunk in zip(fast_chunks, reader.chunks(columns, schema.numeric_columns)):
        assert row0 == chunk.row0
        ref = slow.encode(chunk)
        assert np.array_equal(enc.ids, ref.ids)
        np.testing.assert_allclose(enc.values, ref.values, rtol=1e-6)
        assert np.array_equal(enc.labels, ref.labels)
        for (o1, i1), (o2, i2) in zip(enc.multi_hot, ref.multi_hot):
            assert np.array_equal(o1, o2) and np.array_equal(i1, i2)
