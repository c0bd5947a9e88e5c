"""The single-parse training path (fit_encode) encodes exactly as fit + encode, which is the
path prediction uses: same vocabularies, ids, values, bags and labels."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from deepfm.data.readers import open_reader
from deepfm.data.schema import Schema, criteo_schema
from deepfm.data.source import Chunk, ReadOptions
from deepfm.features import counting
from deepfm.features.pipeline import FeaturePipeline

from helpers import simple_records, simple_schema, write_criteo_tsv, write_records_csv


@pytest.fixture(params=["memory", "disk"])
def spill_to(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Run each test with the spill in memory, and mostly on disk with dictionaries merged
    after every chunk (the paths large files take)."""
    if request.param == "disk":
        monkeypatch.setattr(counting, "SPILL_MEMORY", 20_000)
        monkeypatch.setattr(counting.Dictionary, "MIN_PENDING", 1)
    return request.param


@pytest.mark.parametrize("price", ["scaled", "log", "quantile"])
def test_fit_encode_equals_fit_then_encode(tmp_path: Path, price: str, spill_to: str) -> None:
    schema = simple_schema(price_mode="scaled" if price == "scaled" else "bucketized", min_count=2)
    if price == "quantile":
        fields = tuple(replace(f, binning="quantile", bins=8) if f.name == "price" else f for f in schema.fields)
        schema = replace(schema, fields=fields)
    records = simple_records(3000, seed=9)
    for i, r in enumerate(records[::7]):  # negative, huge and tiny prices: log bins on both sides of 0
        r["price"] = (-1) ** i * 10.0 ** (i % 9 - 3) if r["price"] is not None else None
    path = write_records_csv(tmp_path / "d.csv", records)
    assert_fit_encode_matches(tmp_path, path, schema, ReadOptions(block_size=4096), n_fit=2100)
    assert any((tmp_path / "spill").glob("*.bin")) == (spill_to == "disk")


def test_fit_encode_criteo_layout_with_split_after_parse(tmp_path: Path, spill_to: str) -> None:
    """Criteo rows (13 log-binned numerics, some negative; 26 categoricals), with the number
    of fitted rows decided from the row count only once the parse is done."""
    path = write_criteo_tsv(tmp_path / "c.tsv", 2500, seed=3)
    seen = []

    def n_fit(n: int) -> int:
        seen.append(n)
        return int(0.7 * n)

    assert_fit_encode_matches(tmp_path, path, criteo_schema(), ReadOptions(block_size=16384), n_fit=n_fit)
    assert any((tmp_path / "spill").glob("*.bin")) == (spill_to == "disk")
    assert seen[0] == 2500  # the pipeline asked once, after the parse (the helper asks again)


def assert_fit_encode_matches(tmp_path: Path, path: Path, schema: Schema, options: ReadOptions, n_fit) -> None:  # type: ignore[no-untyped-def]
    columns = [schema.label, *schema.names]
    reader = open_reader(path, options, column_names=schema.columns)

    fast = FeaturePipeline(schema)
    fast_chunks = list(fast.fit_encode(reader.chunks(columns, schema.numeric_columns), n_fit, tmp_path / "spill"))
    assert len(fast_chunks) > 5  # the boundary falls inside one of many chunks
    if callable(n_fit):
        n_fit = n_fit(sum(len(enc) for _, enc in fast_chunks))
    assert fast.id_dtype is np.int32 and all(enc.ids.dtype == np.int32 for _, enc in fast_chunks)

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
        assert np.array_equal(enc.ids, ref.ids)  # int32 against int64: same values
        np.testing.assert_allclose(enc.values, ref.values, rtol=1e-6)
        assert np.array_equal(enc.labels, ref.labels)
        for (o1, i1), (o2, i2) in zip(enc.multi_hot, ref.multi_hot):
            assert np.array_equal(o1, o2) and np.array_equal(i1, i2)
