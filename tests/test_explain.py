"""`deepfm explain`: a planted interaction is found, the numbers are the model's own maths,
streaming does not change them, and the figures and JSON are written."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pyarrow.csv as pacsv
import pytest

from deepfm.analysis.explain import _log_bin_label, explain, parse_pair
from deepfm.cli import main
from deepfm.data.source import ReadOptions
from deepfm.data.tables import TableSource
from deepfm.errors import ConfigError
from deepfm.features.encoders import log_bin_keys
from deepfm.model.calibration import postprocess
from deepfm.training import train

from helpers import (
    FLOAT32_ATOL,
    FLOAT32_RTOL,
    PLANTED,
    PNG,
    SIZES,
    assert_scores_close,
    planted_rows,
    planted_sign,
    simple_records,
    simple_schema,
    small_config,
    write_records_csv,
    write_rows,
)

pytest.importorskip("matplotlib")


# ---------------------------------------------------------------- the planted pair
def test_explain_ranks_the_planted_pair_first(planted) -> None:
    bundle, fresh, _ = planted
    expl = explain(bundle, fresh)
    top = expl.top_pairs(3)
    assert set(top[0]["fields"]) == set(PLANTED), top
    assert top[0]["mean_abs"] > 3 * top[1]["mean_abs"], top  # by far, not by a hair
    # The drill-down defaults to that pair and finds the planted signs: every combination
    # that raises the probability is one the teacher made positive, and the other way round.
    d = expl.drilldown
    assert d is not None and set(d.fields) == set(PLANTED)
    at = {name: k for k, name in enumerate(d.fields)}
    assert d.up and d.down
    for combos, sign in ((d.up, 1.0), (d.down, -1.0)):
        for c in combos:
            app, hour = c.values[at["app_category"]], c.values[at["hour"]]
            assert np.sign(planted_sign(app, hour)) == sign, (c, sign)
            assert c.count >= d.min_count and np.sign(c.mean_contribution) == sign
    # All 8 x 6 combinations occur in 2000 rows; the grid holds them with their counts.
    assert d.combinations == 48 and d.grid_count.sum() == 2000


def test_decomposition_adds_up_to_the_model_logit(planted) -> None:
    bundle, fresh, _ = planted
    expl = explain(bundle, fresh)
    assert list(expl.parts) == ["bias", "first_order", "fm_pairs", "dnn"]
    # The explained probabilities (from the parts) are the model's, by the forward pass.
    table = pacsv.read_csv(fresh, parse_options=pacsv.ParseOptions(delimiter="\t"))
    p = bundle.predict(table)
    assert_scores_close(expl.probabilities, p, "the parts' probabilities against the forward pass")
    # The parts add up to the model's own logit, before the calibration fitted in training.
    chunk = next(TableSource(table).chunks(bundle.config.schema.names, table.num_rows))
    raw = bundle.predict_encoded(bundle.pipeline.encode(chunk, with_labels=False), calibrated=False)
    logit = np.log(raw) - np.log1p(-raw)
    assert sum(s.mean for s in expl.parts.values()) == pytest.approx(logit.mean(), abs=1e-4)
    assert expl.parts["bias"].std == 0.0 and expl.parts["bias"].mean == pytest.approx(float(bundle.model.bias.detach()))
    # The pair matrix is symmetric with a zero diagonal, and its upper triangle is the FM term.
    m = expl.pair_mean
    assert m is not None and expl.pair_mean_abs is not None
    np.testing.assert_allclose(m, m.T, atol=1e-12)
    assert np.all(np.diag(expl.pair_mean_abs) == 0)
    assert np.triu(m, 1).sum() == pytest.approx(expl.parts["fm_pairs"].mean, rel=1e-6)
    assert np.all(expl.pair_mean_abs >= np.abs(m) - 1e-12)
    np.testing.assert_array_equal(expl.labels, table.column("label").to_numpy())


def test_pair_numbers_by_hand_for_single_rows(planted) -> None:
    """On one row, the drill-down's contribution is <v_i, v_j> from the weight table and its
    effect is p(logit) - p(logit - contribution), p the sigmoid and the bundle's calibration;
    the matrix holds |<v_i, v_j>|."""
    bundle, _, tmp = planted
    rows = planted_rows(3, seed=5)
    w = bundle.model.embedding.weight.detach().double().numpy()
    d = bundle.config.model.embedding_dim
    pipe = bundle.pipeline
    names = list(SIZES)
    for k, row in enumerate(rows):
        one = write_rows(tmp / f"one{k}.tsv", [row], ["label", *SIZES], "\t")
        expl = explain(bundle, one, pair=("gender", "device"), min_count=1)
        vec = {
            f: w[pipe.states[f].offset + 2 + list(pipe.states[f].vocab.to_pylist()).index(row[1 + i]), :d]
            for i, f in enumerate(names)
        }
        want = float(vec["gender"] @ vec["device"])
        (combo,) = expl.drilldown.up + expl.drilldown.down
        assert combo.values == (row[3], row[5]) and combo.count == 1
        assert combo.mean_contribution == pytest.approx(want, rel=1e-5, abs=1e-7)
        chunk = next(
            TableSource(pacsv.read_csv(one, parse_options=pacsv.ParseOptions(delimiter="\t"))).chunks(names, 1)
        )
        raw = bundle.predict_encoded(pipe.encode(chunk, with_labels=False), calibrated=False)[0]
        logit = math.log(raw / (1 - raw))
        p = [postprocess(np.array([1 / (1 + math.exp(-z))]), bundle.calibration)[0] for z in (logit, logit - want)]
        assert combo.mean_effect == pytest.approx(p[0] - p[1], rel=1e-4, abs=1e-8)
        brute = np.array([[abs(float(vec[a] @ vec[b])) if a != b else 0.0 for b in names] for a in names])
        np.testing.assert_allclose(expl.pair_mean_abs, brute, rtol=1e-5, atol=1e-7)


def test_streaming_and_row_limit_do_not_change_the_numbers(planted) -> None:
    bundle, fresh, tmp = planted
    whole = explain(bundle, fresh)
    chunked = explain(bundle, fresh, options=ReadOptions(block_size=4096))  # about 40 chunks
    # What comes from the table alone (pairs, first order, bias) is the same row by row, so only
    # the float64 summation order differs. The MLP's float32 matmul is not: BLAS picks its
    # kernel by the batch's shape, and a row's output can move by a few ulps when the chunks
    # cut the batches differently. So the logit's effect and the DNN part get float32's
    # tolerance (helpers.FLOAT32_RTOL), not float64's.
    np.testing.assert_allclose(chunked.pair_mean_abs, whole.pair_mean_abs, rtol=1e-9)
    for a, b in zip(
        chunked.drilldown.up + chunked.drilldown.down, whole.drilldown.up + whole.drilldown.down, strict=True
    ):
        assert (a.values, a.count) == (b.values, b.count)
        assert a.mean_contribution == pytest.approx(b.mean_contribution, rel=1e-9)
        assert a.mean_effect == pytest.approx(b.mean_effect, rel=FLOAT32_RTOL, abs=FLOAT32_ATOL)
    for name in whole.parts:
        rel, tol = (FLOAT32_RTOL, FLOAT32_ATOL) if name == "dnn" else (1e-9, 1e-12)
        assert chunked.parts[name].mean == pytest.approx(whole.parts[name].mean, rel=rel, abs=tol)
        assert chunked.parts[name].std == pytest.approx(whole.parts[name].std, rel=rel, abs=tol)
    # Naming the pair drills down in the same pass; the default finds it in a second one.
    named = explain(bundle, fresh, pair=whole.drilldown.fields)
    assert named.drilldown.up == whole.drilldown.up and named.drilldown.down == whole.drilldown.down
    np.testing.assert_array_equal(named.drilldown.grid_count, whole.drilldown.grid_count)
    first = explain(bundle, fresh, rows=150, options=ReadOptions(block_size=4096))
    head = write_rows(tmp / "head.tsv", planted_rows(2_000, seed=2)[:150], ["label", *SIZES], "\t")
    alone = explain(bundle, head)
    assert first.rows == alone.rows == 150
    np.testing.assert_allclose(first.pair_mean_abs, alone.pair_mean_abs, rtol=1e-9)
    assert_scores_close(first.probabilities, alone.probabilities, "the first 150 rows of chunks against the 150 alone")


def test_bad_pairs_and_options_are_refused(planted) -> None:
    bundle, fresh, _ = planted
    with pytest.raises(ConfigError, match=r"no field 'C1'.*app_category"):
        explain(bundle, fresh, pair=("C1", "hour"))
    with pytest.raises(ConfigError, match="two different fields"):
        explain(bundle, fresh, pair=("hour", "hour"))
    with pytest.raises(ConfigError, match="--rows"):
        explain(bundle, fresh, rows=0)
    with pytest.raises(ConfigError, match="C1,C2"):
        parse_pair("hour")
    assert parse_pair(" hour, age") == ("hour", "age")


# ---------------------------------------------------------------- other field kinds and models
def test_multi_hot_and_scaled_values_are_decoded(tmp_path: Path) -> None:
    records = simple_records(3000, seed=4)
    data = write_records_csv(tmp_path / "r.csv", records)
    bundle = train(small_config(simple_schema(price_mode="scaled")), data, tmp_path / "m", split="0.8,0.2")
    expl = explain(bundle, data, pair=("tags", "price"), min_count=1, grid_size=100)
    d = expl.drilldown
    assert d is not None and d.fields == ("tags", "price")
    # Every list seen decodes to its tokens (in some order); the order-free key merges orders.
    seen = {frozenset(r["tags"].split("|")) if r["tags"] else frozenset(["(missing)"]) for r in records}
    decoded = [frozenset(label.split("|")) for label in d.grid_rows]
    assert set(decoded) == seen and len(decoded) == len(seen)
    # Price bins cover the prices; the missing ones have their own row.
    assert "(missing)" in d.grid_columns
    assert all(c == "(missing)" or c.startswith(("[", "<", ">=")) for c in d.grid_columns)
    assert d.grid_count.sum() == 3000


def test_models_without_pairs_still_split_the_logit(tmp_path: Path) -> None:
    records = simple_records(1500, seed=5)
    data = write_records_csv(tmp_path / "r.csv", records)
    bundle = train(small_config(simple_schema(), model={"kind": "wide_deep"}), data, tmp_path / "m", split="0.8,0.2")
    expl = explain(bundle, data)
    assert list(expl.parts) == ["bias", "first_order", "dnn"]
    assert expl.pair_mean_abs is None and expl.drilldown is None and expl.top_pairs() == []
    with pytest.raises(ConfigError, match="no pairwise term"):
        explain(bundle, data, pair=("user", "item"))


def test_log_bin_labels_hold_their_values() -> None:
    x = np.array([-50.0, -3, -2.5, -2, -1.5, -1, 0, 0.5, 1, 1.7, 2, 2.1, 2.9, 3, 7.5, 100, 1e6])
    for value, key in zip(x, log_bin_keys(x)):
        label = _log_bin_label(int(key))
        if label == "2":
            assert value == 2
            continue
        lo, hi = (float(t) for t in label[1:-1].split(", "))
        assert lo <= value <= hi, (value, label)
        assert (label[0] == "[" or value != lo) and (label[-1] == "]" or value != hi), (value, label)


# ---------------------------------------------------------------- command line
def test_cli_explain_writes_json_and_figures(planted, capsys) -> None:
    bundle, fresh, tmp = planted
    out = tmp / "explained"
    code = main(
        [
            "explain",
            str(bundle.path),
            "--data",
            str(fresh),
            "--out",
            str(out),
            "--pair",
            "gender,age",
            "--rows",
            "500",
            "--quiet",
        ]
    )
    printed, err = capsys.readouterr()
    assert code == 0, err
    summary = json.loads(printed)
    assert set(summary["top_pairs"][0]["fields"]) == set(PLANTED) and summary["drilldown"] == ["gender", "age"]
    doc = json.loads((out / "explain.json").read_text())
    assert doc["rows"] == 500 and doc["fields"] == list(SIZES)
    assert doc["drilldown"]["fields"] == ["gender", "age"] and len(doc["pairs"]["mean_abs"]) == len(SIZES)
    assert set(doc["decomposition"]) == {"bias", "first_order", "fm_pairs", "dnn"}
    for name in ("pairs", "decomposition", "drilldown"):
        assert (out / f"{name}.png").read_bytes().startswith(PNG), name


def test_cli_explain_errors_name_the_problem(planted, capsys) -> None:
    bundle, fresh, tmp = planted
    code = main(
        ["explain", str(bundle.path), "--data", str(fresh), "--out", str(tmp / "x"), "--pair", "hour,nope", "--quiet"]
    )
    assert code == 2 and "no field 'nope'" in capsys.readouterr().err


def test_missing_matplotlib_names_the_extra(monkeypatch) -> None:
    import sys

    from deepfm.analysis import plots

    plots._pyplot.cache_clear()
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib now fails
    try:
        with pytest.raises(ConfigError, match=r"pip install 'deepfm\[report\]'"):
            plots.require_matplotlib()
    finally:
        plots._pyplot.cache_clear()
