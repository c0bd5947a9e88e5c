"""Per-field hashing: a stable hash (the formula, the same in every process), ids in range, a
fixed table whatever the number of distinct values, and every path that encodes or reads
vocabularies (fit_encode, encode, save/load, predict, explain, drift) on a hashed field."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from test_fit_encode import assert_fit_encode_matches, spill_to  # noqa: F401

from deepfm.bundle import Bundle
from deepfm.data.schema import FieldSpec, Schema
from deepfm.data.source import ReadOptions
from deepfm.data.tables import TableSource, as_table
from deepfm.errors import ConfigError
from deepfm.features.hashing import hash64, hashed_ids
from deepfm.features.pipeline import FIRST_VALUE, MISSING, FeaturePipeline
from deepfm.training import train

from helpers import REPO, simple_records, simple_schema, small_config, write_records_csv

MASK = 2**64 - 1


def reference_hash(text: str) -> int:
    """FNV-1a 64 over UTF-8, then splitmix64's finalizer, one byte at a time in Python."""
    h = 0xCBF29CE484222325
    for byte in text.encode("utf-8"):
        h = ((h ^ byte) * 0x100000001B3) & MASK
    h ^= h >> 30
    h = (h * 0xBF58476D1CE4E5B9) & MASK
    h ^= h >> 27
    h = (h * 0x94D049BB133111EB) & MASK
    return h ^ (h >> 31)


def hashed_schema(buckets: int = 16) -> Schema:
    """simple_schema with 'user' and the multi-hot 'tags' hashed."""
    fields = tuple(
        replace(f, hash_buckets=buckets) if f.name in ("user", "tags") else f for f in simple_schema(min_count=2).fields
    )
    return replace(simple_schema(), fields=fields)


def test_hash_is_the_formula_on_any_layout() -> None:
    values = ["", "a", "héllo wörld", "漢字", "x" * 300, "8e2f1a9c", None]
    expected = [reference_hash(v or "") for v in values]
    for arr in (pa.array(values), pa.array(values, pa.large_string()), pa.chunked_array([values[:3], values[3:]])):
        assert hash64(arr).tolist() == expected
    sliced = pa.array(["pad", *values]).slice(1)  # an Arrow slice starts inside its buffers
    assert hash64(sliced).tolist() == expected


def test_hashed_ids_in_range_and_missing() -> None:
    values = pa.array([f"v{i}" for i in range(20_000)] + [None])
    ids = hashed_ids(values, 37, FIRST_VALUE, MISSING)
    assert ids[-1] == MISSING
    assert ids[:-1].min() >= FIRST_VALUE and ids[:-1].max() < FIRST_VALUE + 37
    counts = np.bincount(ids[:-1] - FIRST_VALUE, minlength=37)
    assert counts.min() > 0.8 * counts.mean() and counts.max() < 1.2 * counts.mean()  # spread evenly


def test_same_ids_in_every_process() -> None:
    """Python's hash() of a str changes with PYTHONHASHSEED; this one must not."""
    code = "import pyarrow as pa; from deepfm.features.hashing import hashed_ids; print(hashed_ids(pa.array(['a','b7','ccc','été']), 1000, 2, 1).tolist())"
    outs = set()
    for seed in ("1", "2", "random"):
        env = {**os.environ, "PYTHONHASHSEED": seed, "PYTHONPATH": str(REPO)}
        outs.add(
            subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout
        )
    assert len(outs) == 1
    assert json.loads(outs.pop()) == [2 + reference_hash(v) % 1000 for v in ("a", "b7", "ccc", "été")]


def test_fixed_table_size_with_many_distinct_values() -> None:
    schema = Schema(label="label", fields=(FieldSpec(name="u", hash_buckets=64), FieldSpec(name="item")))
    n = 200_000  # every 'u' value distinct
    table = as_table([{"label": i % 2, "u": f"user{i}", "item": f"i{i % 5}"} for i in range(n)], numeric={"label"})
    pipe = FeaturePipeline(schema).fit(TableSource(table).chunks(["label", "u", "item"]))
    st = pipe.states["u"]
    assert st.vocab is None and st.size == FIRST_VALUE + 64 and pipe.states["item"].offset == st.offset + st.size
    ids = np.concatenate([enc.ids[:, 0] for enc in map(pipe.encode, TableSource(table).chunks(["label", "u", "item"]))])
    assert ids.min() >= st.offset + FIRST_VALUE and ids.max() < st.offset + st.size
    assert np.unique(ids).size == 64


def test_hash_buckets_only_on_categorical_and_multi_hot() -> None:
    with pytest.raises(ConfigError, match="hash_buckets applies to categorical and multi_hot"):
        FieldSpec(name="x", kind="numeric", hash_buckets=8)
    with pytest.raises(ConfigError, match="hash_buckets must be an integer >= 0"):
        FieldSpec(name="x", hash_buckets=-1)
    spec = FieldSpec.from_dict({"name": "c", "kind": "multi_hot", "hash_buckets": 8})
    assert FieldSpec.from_dict(FieldSpec(name="c").to_dict()).min_count == "auto"
    for bad in (0, True, "many", 2.5):
        with pytest.raises(ConfigError, match='min_count must be an integer >= 1 or "auto"'):
            FieldSpec(name="x", min_count=bad)
    assert spec.is_hashed and not spec.has_vocabulary and FieldSpec.from_dict(spec.to_dict()) == spec


def test_fit_encode_equals_encode_with_hashed_fields(tmp_path: Path, spill_to: str) -> None:  # noqa: F811
    records = simple_records(3000, seed=4)
    for i, r in enumerate(records):
        r["user"] = f"u{i}"  # high cardinality: no vocabulary could hold it within min_count
    path = write_records_csv(tmp_path / "d.csv", records)
    assert_fit_encode_matches(tmp_path, path, hashed_schema(), ReadOptions(block_size=4096), n_fit=2000)


def test_hashed_bundle_trains_saves_loads_predicts_explains(tmp_path: Path) -> None:
    records = simple_records(2000, seed=5)
    data = write_records_csv(tmp_path / "d.csv", records)
    run = tmp_path / "run"
    train(small_config(hashed_schema(buckets=8)), data, run, split="0.8,0.2")
    bundle = Bundle.load(run)
    for name in ("user", "tags"):
        st = bundle.pipeline.states[name]
        assert st.vocab is None and st.size == FIRST_VALUE + 8
    probe = records[:50] + [{"user": "never seen", "item": "item3", "price": 1.0, "tags": "red|never"}]
    p = bundle.predict(probe)
    assert p.shape == (51,) and np.all((p > 0) & (p < 1))
    assert np.allclose(bundle.predictor().predict(probe), p)  # the Predictor path
    # the pipeline saved with the bundle encodes as the one that trained
    again = FeaturePipeline.load(run)
    chunk = next(TableSource(as_table(probe, numeric={"price"}, multi_hot={"tags": "|"})).chunks(again.input_columns))
    assert np.array_equal(
        again.encode(chunk, with_labels=False).ids, bundle.pipeline.encode(chunk, with_labels=False).ids
    )
    assert bundle.predictor().example_record()["user"] == "a"  # no vocabulary to take a typical value from
    described = {f["name"]: f for f in bundle.predictor().describe()["fields"]}
    assert described["user"]["hash_buckets"] == 8 and "hash_buckets" not in described["item"]


def test_explain_and_drift_read_a_hashed_field(tmp_path: Path) -> None:
    from deepfm.analysis import drift
    from deepfm.analysis.explain import explain

    data = write_records_csv(tmp_path / "d.csv", simple_records(2000, seed=6))
    bundle = train(small_config(hashed_schema(buckets=8)), data, tmp_path / "run", split="0.8,0.2")
    d = explain(bundle, data, pair=("user", "item"), min_count=1).drilldown
    assert d is not None and d.fields == ("user", "item")
    assert all(r == "(missing)" or r.startswith("(hash bucket ") and r.endswith(" of 8)") for r in d.grid_rows)
    tags = explain(bundle, data, pair=("tags", "item"), min_count=1).drilldown
    assert tags is not None and any("(hash bucket" in r for r in tags.grid_rows)
    report = drift.check(bundle, data)  # the training file itself: the buckets' shares match
    assert report["failed"] == []
    assert json.dumps(report)


def test_cli_hash_buckets_hashes_every_categorical(tmp_path: Path) -> None:
    from deepfm.cli import main

    from helpers import write_criteo_tsv

    data = write_criteo_tsv(tmp_path / "c.tsv", 600, seed=2)
    out = tmp_path / "m"
    assert (
        main(
            [
                "train",
                "--data",
                str(data),
                "--preset",
                "criteo",
                "--out",
                str(out),
                "--epochs",
                "1",
                "--embedding-dim",
                "4",
                "--hidden",
                "8",
                "--hash-buckets",
                "32",
                "--threads",
                "1",
                "--quiet",
            ]
        )
        == 0
    )
    pipeline = Bundle.load(out).pipeline
    assert all(
        pipeline.states[f"C{i}"].size == FIRST_VALUE + 32 and pipeline.states[f"C{i}"].vocab is None
        for i in range(1, 27)
    )
    assert pipeline.states["I1"].vocab is not None  # numerics keep their bins
