"""FeaturePipeline: vocabularies, OOV/missing rows, offsets, numeric transforms and bins,
multi-hot bags, and the JSON + Arrow save/load round trip."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.ipc as ipc
import pytest
import torch

from deepfm.data.encoded import Batch
from deepfm.data.readers import open_reader
from deepfm.data.schema import FieldSpec, Schema, auto_min_count
from deepfm.data.source import ReadOptions
from deepfm.data.tables import TableSource, as_table
from deepfm.features.pipeline import MISSING, OOV, FeaturePipeline
from deepfm.model.layers import FieldEmbedding

from helpers import write_rows


def fit(schema: Schema, table: pa.Table) -> FeaturePipeline:
    return FeaturePipeline(schema).fit(TableSource(table).chunks(schema.names))


def encode(pipe: FeaturePipeline, table: pa.Table):
    chunks = list(TableSource(table).chunks(pipe.schema.names))
    assert len(chunks) == 1
    return pipe.encode(chunks[0], with_labels=False)


def cat_schema(*specs: FieldSpec) -> Schema:
    return Schema(label="label", fields=specs)


# ---------------------------------------------------------------- categorical vocabularies
def test_vocabulary_order_oov_and_missing() -> None:
    schema = cat_schema(FieldSpec("c", min_count=2))
    train = pa.table({"c": ["b", "a", "a", "c", "a", "b", "c", "c", "c", "rare", None]})
    pipe = fit(schema, train)
    st = pipe.states["c"]
    # c:4, a:3, b:2 (rare:1 < min_count) -> most frequent first after OOV and MISSING
    assert st.vocab.to_pylist() == ["c", "a", "b"]
    assert st.size == 2 + 3
    enc = encode(pipe, pa.table({"c": ["c", "a", "b", "rare", "never-seen", None]}))
    off = st.offset
    assert enc.ids[:, 0].tolist() == [off + 2, off + 3, off + 4, off + OOV, off + OOV, off + MISSING]
    assert OOV == 0 and MISSING == 1
    assert enc.ids.dtype == np.int64


def test_min_count_threshold() -> None:
    values = ["x"] * 5 + ["y"] * 3 + ["z"] * 2 + ["w"]
    for min_count, kept in [(1, ["x", "y", "z", "w"]), (2, ["x", "y", "z"]), (3, ["x", "y"]), (6, [])]:
        pipe = fit(cat_schema(FieldSpec("c", min_count=min_count)), pa.table({"c": values}))
        assert pipe.states["c"].vocab.to_pylist() == kept
        ids = encode(pipe, pa.table({"c": ["x", "y", "z", "w"]})).ids[:, 0]
        expect = [2 + kept.index(v) if v in kept else OOV for v in ["x", "y", "z", "w"]]
        assert ids.tolist() == expect


def test_auto_min_count_grows_with_the_training_rows() -> None:
    assert [auto_min_count(n) for n in (1, 99_999, 100_000, 150_000, 200_000, 10**9)] == [2, 2, 2, 6, 10, 10]
    ramp = [auto_min_count(n) for n in range(90_000, 210_000, 1_000)]
    assert ramp == sorted(ramp)  # never falls as rows grow


@pytest.mark.parametrize(
    ("rows", "min_count", "kept"), [(1_000, 2, ["common", "six", "five", "two"]), (150_000, 6, ["common", "six"])]
)
def test_auto_min_count_is_resolved_when_fitting(rows: int, min_count: int, kept: list[str]) -> None:
    values = ["six"] * 6 + ["five"] * 5 + ["two"] * 2 + ["once"]
    values += ["common"] * (rows - len(values))
    pipe = fit(cat_schema(FieldSpec("c")), pa.table({"c": values}))
    assert FieldSpec("c").min_count == "auto"
    assert pipe.schema.field("c").min_count == min_count  # the number used, saved with the pipeline
    assert pipe.states["c"].spec.min_count == min_count
    assert pipe.states["c"].vocab.to_pylist() == kept


def test_ties_in_counts_are_deterministic() -> None:
    pipe = fit(cat_schema(FieldSpec("c", min_count=1)), pa.table({"c": ["q", "p", "r", "p", "q", "r"]}))
    assert pipe.states["c"].vocab.to_pylist() == ["p", "q", "r"]  # equal counts: ordered by key


def test_vocabulary_fitted_on_training_rows_only(tmp_path: Path) -> None:
    """Through prepare(): a value present only in the valid/test part is OOV there."""
    from deepfm.training import prepare

    from helpers import small_config

    rows = [[str(i % 2), "common" if i % 3 else "other", str(i)] for i in range(100)]
    for i in range(80, 100):
        rows[i][1] = "late"  # only in the last 20% (valid + test)
    path = write_rows(tmp_path / "d.csv", rows, ["label", "c", "n"])
    schema = Schema(
        label="label",
        fields=(FieldSpec("c", min_count=1), FieldSpec("n", kind="numeric", mode="scaled", transform="none")),
    )
    pipe, parts = prepare(small_config(schema), path, tmp_path / "work", split=(0.8, 0.1, 0.1))
    assert "late" not in pipe.states["c"].vocab.to_pylist()
    off = pipe.states["c"].offset
    assert np.all(np.asarray(parts.valid.ids[:, 0]) == off + OOV)
    assert np.all(np.asarray(parts.test.ids[:, 0]) == off + OOV)
    assert not np.any(np.asarray(parts.train.ids[:, 0]) == off + OOV)
    # numeric statistics come from the training rows only too (0..79 -> values unscaled here)
    assert np.array_equal(np.asarray(parts.train.values[:, 0]), np.arange(80, dtype=np.float32))


def test_offsets_disjoint_and_contiguous() -> None:
    schema = cat_schema(
        FieldSpec("a", min_count=1),
        FieldSpec("x", kind="numeric", mode="scaled", transform="log1p"),
        FieldSpec("m", kind="multi_hot", min_count=1),
        FieldSpec("b", min_count=1),
        FieldSpec("n", kind="numeric", mode="bucketized", binning="log", min_count=1),
    )
    train = pa.table(
        {
            "a": ["1", "2", "3", "1"],
            "x": [1.0, None, 3.0, 4.0],
            "m": ["1|2", "3", None, "4|1"],
            "b": ["1", "1", "9", None],
            "n": [0.0, 5.0, 100.0, None],
        }
    )
    pipe = fit(schema, train)
    offset = 0
    ranges = {}
    for spec in schema.fields:
        st = pipe.states[spec.name]
        assert st.offset == offset, spec.name
        ranges[spec.name] = (st.offset, st.offset + st.size)
        offset += st.size
    assert pipe.num_embeddings == offset
    assert pipe.states["x"].size == 2  # scaled: value row + missing row
    # the same raw string "1" gets a different id in each field
    enc = encode(pipe, train)
    for j, spec in enumerate(pipe.single_fields):
        lo, hi = ranges[spec.name]
        assert np.all((enc.ids[:, j] >= lo) & (enc.ids[:, j] < hi)), spec.name
    lo, hi = ranges["m"]
    assert np.all((enc.multi_hot[0][1] >= lo) & (enc.multi_hot[0][1] < hi))
    assert enc.ids[0, 0] != enc.ids[0, 2]  # a="1" vs b="1"
    assert enc.ids.dtype == np.int64 and enc.multi_hot[0][0].dtype == np.int64 and enc.multi_hot[0][1].dtype == np.int64


def test_unseen_values_at_predict_time_never_raise() -> None:
    schema = cat_schema(
        FieldSpec("c", min_count=1),
        FieldSpec("m", kind="multi_hot", min_count=1),
        FieldSpec("n", kind="numeric", mode="bucketized", binning="log", min_count=1),
        FieldSpec("q", kind="numeric", mode="bucketized", binning="quantile", bins=4),
    )
    pipe = fit(schema, pa.table({"c": ["a", "b"], "m": ["x|y", "y"], "n": [1.0, 2.0], "q": [1.0, 2.0]}))
    new = pa.table({"c": ["zzz", None], "m": ["new|other", "x|brand-new"], "n": [1e9, -7.0], "q": [1e9, -1e9]})
    enc = encode(pipe, new)
    st = pipe.states
    assert enc.ids[:, 0].tolist() == [st["c"].offset + OOV, st["c"].offset + MISSING]
    assert enc.ids[:, 1].tolist() == [st["n"].offset + OOV, st["n"].offset + OOV]
    offsets, ids = enc.multi_hot[0]
    assert ids.tolist() == [st["m"].offset + OOV] * 2 + [
        st["m"].offset + 2 + st["m"].vocab.to_pylist().index("x"),
        st["m"].offset + OOV,
    ]
    assert offsets.tolist() == [0, 2, 4]
    # quantile bins cover the whole line: extremes fall in the first / last bin, not OOV
    assert enc.ids[0, 2] == st["q"].offset + 2 + len(st["q"].edges)
    assert enc.ids[1, 2] == st["q"].offset + 2


def test_missing_from_a_file_reader(tmp_path: Path) -> None:
    """Empty fields of a CSV are missing values (row offset+1), for every kind."""
    path = write_rows(
        tmp_path / "m.csv",
        [["1", "a", "2.5", "x|y", "3"], ["0", "", "", "", ""], ["1", "a", "1", "x", "4"]],
        ["label", "c", "s", "m", "n"],
    )
    schema = cat_schema(
        FieldSpec("c", min_count=1),
        FieldSpec("s", kind="numeric", mode="scaled", transform="none"),
        FieldSpec("m", kind="multi_hot", min_count=1),
        FieldSpec("n", kind="numeric", mode="bucketized", binning="log", min_count=1),
    )
    reader = open_reader(path)
    pipe = FeaturePipeline(schema).fit(reader.chunks(["label", *schema.names]))
    enc = pipe.encode(next(reader.chunks(["label", *schema.names])))
    st = pipe.states
    assert enc.ids[1].tolist() == [st["c"].offset + MISSING, st["s"].offset + MISSING, st["n"].offset + MISSING]
    assert enc.values[1, 0] == 1.0
    offsets, ids = enc.multi_hot[0]
    assert ids[offsets[1] : offsets[2]].tolist() == [st["m"].offset + MISSING]
    assert enc.labels.tolist() == [1.0, 0.0, 1.0]


def test_empty_string_record_is_missing_like_an_empty_field() -> None:
    """An empty field in a file is missing (offset+1); an empty string given in a record (or an
    Arrow/Parquet string column) must encode the same way, or serving skews from training."""
    schema = cat_schema(FieldSpec("c", min_count=1))
    pipe = fit(schema, pa.table({"c": ["a", "a", None, ""]}))
    assert "" not in pipe.states["c"].vocab.to_pylist()
    table = as_table([{"c": ""}, {"c": None}, {"c": "a"}])
    ids = encode(pipe, table).ids[:, 0]
    off = pipe.states["c"].offset
    assert ids.tolist() == [off + MISSING, off + MISSING, off + 2]


# ---------------------------------------------------------------- numerics
TRAIN_X = np.array([-3.0, 0.0, 0.5, 1.0, 2.0, 7.5, 40.0, 1000.0, -0.25, 12.0])
TEST_X = np.array([5.0, -20.0, 0.0, 3.3, 1e6])


def _scaled_pipe(transform: str) -> FeaturePipeline:
    schema = cat_schema(FieldSpec("x", kind="numeric", mode="scaled", transform=transform))
    return fit(schema, pa.table({"x": np.concatenate([TRAIN_X, [np.nan]])}))


def test_scaled_log1p_is_signed() -> None:
    pipe = _scaled_pipe("log1p")
    st = pipe.states["x"]
    assert (st.mean, st.std) == (0.0, 1.0)
    enc = encode(pipe, pa.table({"x": TEST_X}))
    want = np.sign(TEST_X) * np.log1p(np.abs(TEST_X))
    np.testing.assert_allclose(enc.values[:, 0], want, rtol=1e-6)
    assert enc.values.dtype == np.float32
    assert enc.values[1, 0] < 0  # negative stays negative
    assert np.all(enc.ids[:, 0] == st.offset)  # present values use the value row (row 0)


def test_scaled_standardize() -> None:
    pipe = _scaled_pipe("standardize")
    st = pipe.states["x"]
    mean, std = TRAIN_X.mean(), TRAIN_X.std()  # NaN (missing) rows excluded
    assert st.mean == pytest.approx(mean) and st.std == pytest.approx(std)
    enc = encode(pipe, pa.table({"x": TEST_X}))
    np.testing.assert_allclose(enc.values[:, 0], (TEST_X - mean) / std, rtol=1e-5)


def test_scaled_log1p_standardize() -> None:
    pipe = _scaled_pipe("log1p_standardize")
    st = pipe.states["x"]
    t = np.sign(TRAIN_X) * np.log1p(np.abs(TRAIN_X))
    assert st.mean == pytest.approx(t.mean()) and st.std == pytest.approx(t.std())
    enc = encode(pipe, pa.table({"x": TEST_X}))
    want = (np.sign(TEST_X) * np.log1p(np.abs(TEST_X)) - t.mean()) / t.std()
    np.testing.assert_allclose(enc.values[:, 0], want, rtol=1e-5)


def test_scaled_none_is_identity() -> None:
    pipe = _scaled_pipe("none")
    np.testing.assert_allclose(encode(pipe, pa.table({"x": TEST_X})).values[:, 0], TEST_X.astype(np.float32))


def test_scaled_missing_value() -> None:
    pipe = _scaled_pipe("log1p_standardize")
    st = pipe.states["x"]
    enc = encode(pipe, pa.table({"x": pa.array([None, 2.0, None], pa.float64())}))
    assert enc.ids[:, 0].tolist() == [st.offset + 1, st.offset, st.offset + 1]
    assert enc.values[0, 0] == 1.0 and enc.values[2, 0] == 1.0


def test_bucketized_log_bins() -> None:
    big = np.arange(3, 3000, dtype=np.float64)
    small = np.array([0.0, 0.5, 1.0, 1.7, 2.0, -1.0, -2.0])
    x = np.concatenate([small, big])
    schema = cat_schema(FieldSpec("n", kind="numeric", mode="bucketized", binning="log", min_count=1))
    pipe = fit(schema, pa.table({"n": x}))
    ids = encode(pipe, pa.table({"n": x})).ids[:, 0]
    sid = dict(zip(small.tolist(), ids[: small.size].tolist()))
    # small values keep their integer part: 0 and 0.5 share, 1 and 1.7 share, 0/1/2/-1/-2 differ
    assert sid[0.0] == sid[0.5]
    assert sid[1.0] == sid[1.7]
    assert len({sid[v] for v in (0.0, 1.0, 2.0, -1.0, -2.0)}) == 5
    # large values: same floor(log(x)^2) <=> same id
    group = np.floor(np.log(big) ** 2)
    big_ids = ids[small.size :]
    for g in np.unique(group):
        in_g = big_ids[group == g]
        assert np.unique(in_g).size == 1, g
    assert np.unique(big_ids).size == np.unique(group).size
    assert not set(big_ids.tolist()) & set(sid.values())
    assert np.all(ids >= pipe.states["n"].offset + 2)  # every value seen in training: no OOV


def test_bucketized_quantile_bins_equal_frequency() -> None:
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 100, 20_000)
    schema = cat_schema(FieldSpec("q", kind="numeric", mode="bucketized", binning="quantile", bins=10))
    pipe = fit(schema, pa.table({"q": x}))
    st = pipe.states["q"]
    assert len(st.edges) == 9
    np.testing.assert_allclose(st.edges, np.linspace(10, 90, 9), atol=2.0)
    ids = encode(pipe, pa.table({"q": x})).ids[:, 0]
    counts = np.bincount(ids - st.offset - 2)
    assert counts.size == 10
    assert np.all(np.abs(counts - 2000) < 200), counts
    # bins are ordered like the values
    order = np.argsort(x)
    assert np.all(np.diff(ids[order]) >= 0)
    fresh = rng.uniform(0, 100, 5000)
    counts = np.bincount(encode(pipe, pa.table({"q": fresh})).ids[:, 0] - st.offset - 2, minlength=10)
    assert np.all(np.abs(counts - 500) < 120), counts


# ---------------------------------------------------------------- multi-hot
def _mh_pipe(pooling: str = "mean") -> FeaturePipeline:
    schema = cat_schema(
        FieldSpec("c", min_count=1), FieldSpec("m", kind="multi_hot", separator="|", pooling=pooling, min_count=1)
    )
    # token counts: a 3, b 2, c 1 -> ids a=+2, b=+3, c=+4
    return fit(schema, pa.table({"c": ["k", "k", "k"], "m": ["a|b", "a|c", "b|a"]}))


def test_multi_hot_tokens_and_missing() -> None:
    pipe = _mh_pipe()
    off = pipe.states["m"].offset
    assert pipe.states["m"].vocab.to_pylist() == ["a", "b", "c"]
    rows = ["a|b", "", None, "|", "a||b", "c", "|c|", "zz|a", "||"]
    enc = encode(pipe, pa.table({"c": ["k"] * len(rows), "m": pa.array(rows, pa.string())}))
    offsets, ids = enc.multi_hot[0]
    assert offsets.dtype == np.int64 and ids.dtype == np.int64 and offsets.size == len(rows) + 1
    bags = [(ids[offsets[i] : offsets[i + 1]] - off).tolist() for i in range(len(rows))]
    a, b, c = 2, 3, 4
    assert bags == [[a, b], [MISSING], [MISSING], [MISSING], [a, b], [c], [c], [OOV, a], [MISSING]]


@pytest.mark.parametrize("pooling", ["mean", "sum"])
def test_multi_hot_pooling_through_field_embedding(pooling: str) -> None:
    pipe = _mh_pipe(pooling)
    rows = ["a|b", "c", None, "a|b|c", "b||zz"]
    enc = encode(pipe, pa.table({"c": ["k"] * len(rows), "m": pa.array(rows, pa.string())}))
    torch.manual_seed(0)
    emb = FieldEmbedding(pipe.num_embeddings, 3, pipe.scaled_positions, [pooling], init_std=1.0).double()
    with torch.no_grad():
        emb.weight.normal_()
    batch = Batch.from_chunk(enc)
    e = emb(batch.ids, batch.values.double(), batch.multi_hot).detach().numpy()
    w = emb.weight.detach().numpy()
    off = pipe.states["m"].offset
    local = {"a": 2, "b": 3, "c": 4, "zz": OOV}
    for r, text in enumerate(rows):
        tokens = [t for t in (text or "").split("|") if t]
        rws = w[[off + local[t] for t in tokens]] if tokens else w[[off + MISSING]]
        want = rws.mean(0) if pooling == "mean" else rws.sum(0)
        np.testing.assert_allclose(e[r, 1], want, rtol=1e-12)
    # the single field is a plain lookup of "k"
    np.testing.assert_allclose(e[:, 0], np.repeat(w[[pipe.states["c"].offset + 2]], len(rows), 0))


# ---------------------------------------------------------------- save / load
def test_save_load_round_trip(tmp_path: Path) -> None:
    n = 400
    schema = cat_schema(
        FieldSpec("c", min_count=2),
        FieldSpec("s", kind="numeric", mode="scaled", transform="log1p_standardize"),
        FieldSpec("lg", kind="numeric", mode="bucketized", binning="log", min_count=2),
        FieldSpec("q", kind="numeric", mode="bucketized", binning="quantile", bins=7),
        FieldSpec("m", kind="multi_hot", pooling="sum", separator=";", min_count=1),
    )

    def table(seed: int) -> pa.Table:
        r = np.random.default_rng(seed)
        return pa.table(
            {
                "c": [None if v == 0 else f"v{v}" for v in r.integers(0, 30, n)],
                "s": r.lognormal(1, 2, n) * r.choice([-1, 1], n),
                "lg": r.geometric(0.01, n).astype(float),
                "q": r.normal(size=n),
                "m": [";".join(f"t{t}" for t in r.integers(0, 9, r.integers(0, 4))) for _ in range(n)],
            }
        )

    pipe = fit(schema, table(1))
    folder = tmp_path / "pipe"
    folder.mkdir()
    names = pipe.save(folder)
    assert sorted(names) == ["pipeline.json", "vocab.arrow"]
    assert sorted(p.name for p in folder.iterdir()) == ["pipeline.json", "vocab.arrow"]
    json.loads((folder / "pipeline.json").read_text())  # plain JSON
    assert (folder / "vocab.arrow").read_bytes()[:6] == b"ARROW1"  # Arrow IPC file
    with ipc.open_file(folder / "vocab.arrow") as r:
        assert r.read_all().num_rows > 0
    for p in folder.iterdir():
        assert not p.read_bytes().startswith(b"\x80"), p  # no pickle protocol header
    loaded = FeaturePipeline.load(folder)
    assert loaded.num_embeddings == pipe.num_embeddings
    new = table(2)
    a, b = encode(pipe, new), encode(loaded, new)
    assert np.array_equal(a.ids, b.ids)
    assert np.array_equal(a.values, b.values)
    for (oa, ia), (ob, ib) in zip(a.multi_hot, b.multi_hot):
        assert np.array_equal(oa, ob) and np.array_equal(ia, ib)
    assert loaded.states["q"].edges == pipe.states["q"].edges
    assert loaded.states["s"].mean == pipe.states["s"].mean


def test_reader_block_size_chunks_encode_the_same(tmp_path: Path) -> None:
    """Fitting and encoding in many small chunks gives the same result as in one."""
    rng = np.random.default_rng(3)
    rows = [
        [str(int(rng.integers(0, 2))), f"c{int(rng.integers(0, 50))}", str(int(rng.integers(0, 500)))]
        for _ in range(3000)
    ]
    path = write_rows(tmp_path / "d.csv", rows, ["label", "c", "n"])
    schema = cat_schema(
        FieldSpec("c", min_count=3), FieldSpec("n", kind="numeric", mode="bucketized", binning="log", min_count=2)
    )
    cols = ["label", "c", "n"]
    out = []
    for block in (1 << 20, 1024):
        reader = open_reader(path, ReadOptions(block_size=block))
        pipe = FeaturePipeline(schema).fit(reader.chunks(cols))
        chunks = list(reader.chunks(cols))
        assert (len(chunks) > 5) == (block == 1024)
        out.append((pipe.states["c"].vocab.to_pylist(), np.concatenate([pipe.encode(c).ids for c in chunks])))
    assert out[0][0] == out[1][0]
    assert np.array_equal(out[0][1], out[1][1])
