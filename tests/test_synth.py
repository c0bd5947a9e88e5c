"""Tests for deepfm.synth: Criteo layout, determinism, and realism of the synthetic logs."""

from __future__ import annotations

import copy
import re
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest
from sklearn.metrics import roc_auc_score

from deepfm.data import synth, synth_world
from deepfm.data.synth import CRITEO_COLUMNS, SynthResult, generate_table, write_synth

SPECS = {s.name: s for s in (*synth.NUMERIC_SPECS, *synth.CATEGORICAL_SPECS)}
HEX8 = re.compile(r"^[0-9a-f]{8}$")
INT_OR_EMPTY = re.compile(r"^(-?[0-9]+)?$")


@pytest.fixture(scope="module")
def big() -> tuple[pa.Table, np.ndarray]:
    """50k rows of seed 0, shared by the statistical tests."""
    return generate_table(50_000, seed=0)


def _lines(path: Path) -> list[bytes]:
    data = path.read_bytes()
    assert data.endswith(b"\n") and b"\r" not in data
    return data[:-1].split(b"\n")


# ---- shape ---------------------------------------------------------------------------------


def test_columns_and_types() -> None:
    assert len(CRITEO_COLUMNS) == 40
    assert CRITEO_COLUMNS[:3] == ["label", "I1", "I2"] and CRITEO_COLUMNS[-1] == "C26"
    table, p = generate_table(3_000, seed=0)
    assert table.column_names == CRITEO_COLUMNS
    assert table.num_rows == 3_000
    assert pa.types.is_integer(table.schema.field("label").type)
    assert set(np.unique(table.column("label").to_numpy())) <= {0, 1}
    for name in CRITEO_COLUMNS[1:14]:
        assert pa.types.is_integer(table.schema.field(name).type), name
    for name in CRITEO_COLUMNS[14:]:
        assert pa.types.is_string(table.schema.field(name).type), name
    assert p.shape == (3_000,) and p.dtype == np.float64
    assert np.all((p > 0) & (p < 1))


def test_written_layout_matches_table(tmp_path: Path) -> None:
    rows = 3_000
    res = write_synth(rows, tmp_path / "train.txt", seed=0)
    assert isinstance(res, SynthResult)
    assert res.path == tmp_path / "train.txt"
    assert res.truth_path == tmp_path / "train.truth.csv"
    assert res.rows == rows
    assert not list(tmp_path.glob("*.partial"))

    lines = _lines(res.path)
    assert len(lines) == rows
    fields = [line.decode("ascii").split("\t") for line in lines]
    assert all(len(f) == 40 for f in fields)
    assert fields[0][0] in {"0", "1"}  # no header line
    for f in fields:
        assert f[0] in {"0", "1"}
        assert all(INT_OR_EMPTY.match(v) for v in f[1:14]), f[1:14]  # no ".0", no "nan"
        assert all(v == "" or HEX8.match(v) for v in f[14:]), f[14:]

    table, p = generate_table(rows, seed=0)
    labels = np.array([int(f[0]) for f in fields])
    np.testing.assert_array_equal(labels, table.column("label").to_numpy())
    assert res.positive_rate == pytest.approx(labels.mean())
    # Nulls are written as empty fields, values as-is.
    i12 = [f[12] for f in fields]
    assert [v == "" for v in i12] == table.column("I12").is_null().to_pylist()
    assert [f[14 + 2] or None for f in fields] == table.column("C3").to_pylist()

    truth = _lines(res.truth_path)
    assert truth[0] == b"p_true"
    p_file = np.array([float(v) for v in truth[1:]])
    assert p_file.shape == (rows,)
    assert np.all((p_file >= 0) & (p_file <= 1))
    np.testing.assert_array_equal(p_file, p)  # exact round trip of the float64 truth


def test_zero_rows_and_bad_arguments(tmp_path: Path) -> None:
    res = write_synth(0, tmp_path / "empty.tsv")
    assert res.path.read_bytes() == b""
    assert res.truth_path.read_bytes() == b"p_true\n"
    table, p = generate_table(0)
    assert table.column_names == CRITEO_COLUMNS and table.num_rows == 0 and p.size == 0
    with pytest.raises(ValueError):
        generate_table(-1)
    with pytest.raises(ValueError):
        write_synth(10, tmp_path / "x.tsv", chunk_rows=0)


# ---- determinism ---------------------------------------------------------------------------


def test_same_seed_is_byte_identical_and_seeds_differ(tmp_path: Path) -> None:
    a = write_synth(4_000, tmp_path / "a.txt", seed=0)
    b = write_synth(4_000, tmp_path / "b.txt", seed=0)
    c = write_synth(4_000, tmp_path / "c.txt", seed=1)
    assert a.path.read_bytes() == b.path.read_bytes()
    assert a.truth_path.read_bytes() == b.truth_path.read_bytes()
    assert a.path.read_bytes() != c.path.read_bytes()
    # A different seed also means different vocabularies, not just different draws.
    assert not set(_lines(a.path)[0].split(b"\t")[14:]) & set(_lines(c.path)[0].split(b"\t")[14:]) - {b""}


def test_smaller_run_is_prefix_of_larger(tmp_path: Path) -> None:
    small = write_synth(2_000, tmp_path / "small.txt", seed=0)
    large = write_synth(5_000, tmp_path / "large.txt", seed=0)
    assert _lines(large.path)[:2_000] == _lines(small.path)
    assert _lines(large.truth_path)[:2_001] == _lines(small.truth_path)


def test_prefix_across_internal_block_boundary() -> None:
    n_small, n_large = synth.BLOCK_ROWS + 100, synth.BLOCK_ROWS + 900
    t_small, p_small = generate_table(n_small, seed=0)
    t_large, p_large = generate_table(n_large, seed=0)
    assert t_large.slice(0, n_small).equals(t_small)
    np.testing.assert_array_equal(p_large[:n_small], p_small)


def test_chunk_rows_does_not_change_output(tmp_path: Path) -> None:
    rows = synth.BLOCK_ROWS + 3_000  # spans a block boundary; 7_000 does not divide a block
    ref = write_synth(rows, tmp_path / "ref.txt", seed=0)
    ref_bytes, ref_truth = ref.path.read_bytes(), ref.truth_path.read_bytes()
    out = write_synth(rows, tmp_path / "c7000.txt", seed=0, chunk_rows=7_000)
    assert out.path.read_bytes() == ref_bytes
    assert out.truth_path.read_bytes() == ref_truth
    small = [write_synth(5_000, tmp_path / f"s{c}.txt", chunk_rows=c).path.read_bytes() for c in (777, 5_000)]
    assert small[0] == small[1]


# ---- realism -------------------------------------------------------------------------------


def test_categoricals_are_hex_and_vocabularies_distinct(big: tuple[pa.Table, np.ndarray]) -> None:
    table, _ = big
    for name in CRITEO_COLUMNS[14:]:
        col = table.column(name).drop_null()
        assert pc.all(pc.match_substring_regex(col, r"^[0-9a-f]{8}$")).as_py(), name
    # The largest vocabulary has one distinct string per rank, and it is reproducible.
    spec = synth.CATEGORICAL_SPECS[2]
    vocab = synth_world._hex_vocab(0, 2, spec.cardinality)
    assert len(pc.unique(vocab)) == spec.cardinality
    assert vocab.equals(synth_world._hex_vocab(0, 2, spec.cardinality))
    assert not vocab.slice(0, 1000).equals(synth_world._hex_vocab(0, 3, 1000))


def test_missing_rates_follow_configuration(big: tuple[pa.Table, np.ndarray]) -> None:
    table, _ = big
    for name in ("I1", "I2", "I12", "I5", "C1", "C3", "C19", "C22", "C26"):
        rate = table.column(name).null_count / table.num_rows
        assert rate == pytest.approx(SPECS[name].missing, abs=0.015), name
    # Spread like real Criteo: fields range from never missing to mostly missing.
    rates = [table.column(n).null_count / table.num_rows for n in CRITEO_COLUMNS[1:]]
    assert min(rates) == 0.0 and max(rates) > 0.7


def test_numeric_values_are_count_like(big: tuple[pa.Table, np.ndarray]) -> None:
    table, _ = big
    for name in CRITEO_COLUMNS[1:14]:
        v = table.column(name).drop_null().to_numpy()
        if name == "I2":
            assert v.min() >= -3 and 0 < (v < 0).mean() < 0.1
        else:
            assert v.min() >= 0, name
        assert (v == 0).mean() < 0.9, name
    i5 = table.column("I5").drop_null().to_numpy()
    assert np.median(i5) > 100 and i5.max() > 10 * np.median(i5)  # heavy right tail


def test_zipf_skew_in_high_cardinality_field(big: tuple[pa.Table, np.ndarray]) -> None:
    table, _ = big
    counts = pc.value_counts(table.column("C3").drop_null()).field("counts").to_numpy()
    share = np.sort(counts)[::-1] / counts.sum()
    assert share[0] > 50 * np.median(share)
    assert (counts == 1).sum() > 0.5 * counts.size  # most seen values are seen once
    assert share[:100].sum() > 0.3  # and a handful of values dominate the traffic
    # Low-cardinality fields are also skewed but use most of their vocabulary.
    c9 = pc.value_counts(table.column("C9")).field("counts").to_numpy()
    assert c9.size == SPECS["C9"].cardinality and c9.max() > 2 * c9.min()


def test_click_rate_and_bayes_auc(big: tuple[pa.Table, np.ndarray]) -> None:
    table, p = big
    labels = table.column("label").to_numpy()
    assert 0.15 <= labels.mean() <= 0.35
    assert abs(labels.mean() - p.mean()) < 0.01  # labels are drawn from p_true
    auc = roc_auc_score(labels, p)
    assert 0.72 <= auc <= 0.9
    # Labels carry real information but not everything: shuffled truth is at chance.
    shuffled = np.random.default_rng(0).permutation(p)
    assert abs(roc_auc_score(labels, shuffled) - 0.5) < 0.02


def test_teacher_signal_lives_in_frequent_values() -> None:
    for spec in synth.CATEGORICAL_SPECS:
        if spec.cardinality <= 20_000:
            continue
        norms = synth._teacher_value_norms(spec.name, seed=0)
        assert norms.shape == (spec.cardinality,)
        assert norms[:100].mean() > 10 * norms[10_000:].mean(), spec.name


def test_rare_values_barely_move_the_click_probability() -> None:
    # Behavioural check on the teacher: resetting a high-cardinality field to other frequent
    # values moves p_true far more than resetting it to other rare values.
    world = synth_world.world_for(0)
    rng = np.random.default_rng(123)
    x = world.sample(rng, 4_000)
    x.cat_missing[:] = False
    moves = {}
    for label, lo, hi in (("head", 0, 100), ("tail", 10_000, 100_000)):
        ps = []
        for _ in range(2):
            x.cat_idx[:, 2] = rng.integers(lo, hi, size=x.cat_idx.shape[0])  # C3
            x.cat_idx[:, 3] = rng.integers(lo, hi, size=x.cat_idx.shape[0])  # C4
            ps.append(world.p_true(x))
        moves[label] = np.abs(ps[0] - ps[1]).mean()
    assert moves["head"] > 5 * moves["tail"]


def test_days_drift_as_documented() -> None:
    """Day 1 is the plain data; later days bring new values, drop old ones and move the CTR."""
    rows = 20_000
    t1, p1 = synth.generate_table(rows, seed=0, day=1)
    t0, p0 = synth.generate_table(rows, seed=0)
    assert t1.equals(t0) and np.array_equal(p1, p0)
    w1, w3 = synth_world.world_for(0, 1), synth_world.world_for(0, 3)
    f = [s.name for s in synth.CATEGORICAL_SPECS].index("C3")
    v1 = set(w1.vocabs[f].to_pylist())
    v3 = w3.vocabs[f].to_pylist()
    new = sum(v not in v1 for v in v3) / len(v3)
    # Two days of 10% churn: 1 - 0.9^2 = 19% of the slots hold a new value.
    assert abs(new - 0.19) < 0.01
    assert len(set(v3)) == len(v3)  # new values never collide with old or each other
    small = [s.name for s in synth.CATEGORICAL_SPECS].index("C9")
    assert w3.vocabs[small].equals(w1.vocabs[small])  # small fields keep their values
    t3, p3 = synth.generate_table(rows, seed=0, day=3)
    c3_day3 = set(t3.column("C3").drop_null().to_pylist())
    assert c3_day3 - v1  # rows of day 3 use values day 1 never had
    assert abs(float(np.mean(p3)) - float(np.mean(p1))) > 0.03  # the base CTR moved
    assert float(np.mean(p3)) < float(np.mean(p1))
    t3b, _ = synth.generate_table(rows, seed=0, day=3)
    assert t3.equals(t3b)  # deterministic
    with pytest.raises(ValueError, match="day"):
        synth.generate_table(10, seed=0, day=0)


# ---- settings ------------------------------------------------------------------------------


def test_criteo_setting_is_the_default_generator() -> None:
    table, p = generate_table(3_000, seed=0)
    for setting in ("criteo", synth.SynthSetting(), synth.SETTINGS["criteo"]):
        t, q = generate_table(3_000, seed=0, setting=setting)
        assert t.equals(table) and np.array_equal(q, p)


@pytest.mark.parametrize("name", [n for n in synth.SETTINGS if n != "criteo"])
def test_named_setting_is_deterministic_and_hits_its_targets(name: str) -> None:
    setting = synth.SETTINGS[name]
    table, p = generate_table(20_000, seed=0, setting=name)
    again, q = generate_table(20_000, seed=0, setting=setting)
    assert table.equals(again) and np.array_equal(p, q)
    base, _ = generate_table(20_000, seed=0)
    assert not table.column("C1").equals(base.column("C1"))
    labels = table.column("label").to_numpy()
    assert abs(labels.mean() - synth.TARGET_CTR) < 0.015
    # The calibration aims the expected AUC of p_true at the target; 20k rows measure it to ~0.005.
    assert roc_auc_score(labels, p) == pytest.approx(setting.bayes_auc, abs=0.015)
    # Every setting keeps pairwise and higher-order parts in its teacher.
    assert setting.fm_weight > 0 and setting.mlp_weight > 0
    differing = [k for k, v in setting.knobs().items() if k != "name" and v != synth.SETTINGS["criteo"].knobs()[k]]
    assert len(differing) >= 3, differing


def test_setting_knobs_change_what_they_say() -> None:
    # Small vocabularies keep the worlds built here cheap; C9's 3 values become the minimum 2.
    small = synth_world.World(0, synth.SynthSetting("c", card_scale=0.01, numeric_share=0.6))
    assert [int(c) for c in small.cards] == [max(2, round(s.cardinality * 0.01)) for s in synth.CATEGORICAL_SPECS]
    table, _ = generate_table(5_000, seed=0, setting=small.setting)
    assert len(pc.unique(table.column("C9"))) == 2 and len(pc.unique(table.column("C3").drop_null())) > 5_000 // 4

    # numeric_share: I1..I13's share of the squared field importances, the draw otherwise kept.
    rng = np.random.default_rng([0, synth_world._TEACHER_TAG, 0])
    drawn = np.exp(rng.normal(0.0, 0.6, 39)) * np.where(rng.random(39) < 0.2, 0.15, 1.0)
    num = (small.num_importance**2).sum()
    assert num / (num + (drawn[13:] ** 2).sum()) == pytest.approx(0.6)
    base = synth_world.world_for(0)
    np.testing.assert_allclose(base.num_importance, drawn[:13])

    flat = synth_world.World(0, synth.SynthSetting("z", card_scale=0.1, zipf_shift=-0.15))
    steep = synth_world.World(0, synth.SynthSetting("z", card_scale=0.1))
    assert flat.cdfs[2][99] < steep.cdfs[2][99] - 0.05  # the 100 most frequent C3 values get less traffic

    # The FM weight moves the logit towards the pairwise part (same teacher, other weights).
    strong = copy.copy(steep)
    strong.setting = synth.SynthSetting("f", card_scale=0.1, fm_weight=2.0, mlp_weight=0.1)
    x = steep.sample(np.random.default_rng(5), 20_000)
    parts = (steep._parts(x) - steep.part_mean) / steep.part_std
    corr = [np.corrcoef(w._mix(w._parts(x)), parts[:, 1])[0, 1] for w in (steep, strong)]
    assert corr[1] > corr[0] + 0.2


def test_setting_arguments_are_checked() -> None:
    for bad in (
        {"fm_weight": -1},
        {"card_scale": 0},
        {"zipf_shift": -1.0},
        {"numeric_share": 1.0},
        {"bayes_auc": 0.99},
    ):
        with pytest.raises(ValueError):
            synth.SynthSetting("bad", **bad)
    with pytest.raises(ValueError, match="unknown synth setting"):
        generate_table(10, setting="nope")


def test_header_line_then_the_same_rows(tmp_path: Path) -> None:
    plain = write_synth(1_000, tmp_path / "plain.tsv", seed=0)
    headed = write_synth(1_000, tmp_path / "headed.tsv", seed=0, header=True)
    lines = _lines(headed.path)
    assert lines[0].decode().split("\t") == CRITEO_COLUMNS
    assert lines[1:] == _lines(plain.path)
    assert headed.truth_path.read_bytes() == plain.truth_path.read_bytes()
