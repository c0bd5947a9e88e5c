"""Daily retraining: negative downsampling with corrected probabilities, calibration and
drift checks (warm start: tests/test_warm_start.py). Data: the generator's simulated days
(tests/retrain_days.py)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pyarrow.csv as pacsv
import pytest

from deepfm.bundle import Bundle
from deepfm.cli import main
from deepfm.data.sampling import BLOCK, keep_mask
from deepfm.errors import BundleError
from deepfm.inference.predictor import calibrate, evaluate, predict_file
from deepfm.model.calibration import Calibration, fit, postprocess
from deepfm.util.metrics import logloss

from retrain_days import TRAIN


# ---------------------------------------------------------------- downsampling
def test_keep_mask_is_seeded_and_independent_of_chunking() -> None:
    labels = (np.random.default_rng(0).random(3 * BLOCK + 123) < 0.2).astype(np.float32)
    whole = keep_mask(labels, 0, 0.3, seed=5)
    # The same rows cut at other places (within blocks) give the same coins.
    pieces = np.concatenate([keep_mask(labels[a : a + 1000], a, 0.3, seed=5) for a in range(0, labels.size, 1000)])
    assert np.array_equal(whole, pieces)
    assert whole[labels > 0.5].all()  # every positive is kept
    kept_neg = whole[labels < 0.5].mean()
    assert abs(kept_neg - 0.3) < 0.01
    assert not np.array_equal(whole, keep_mask(labels, 0, 0.3, seed=6))


def test_correction_formula() -> None:
    p = np.array([0.0, 0.2, 0.5, 0.9, 1.0])
    w = 0.1
    got = postprocess(p, Calibration(neg_sample_rate=w))
    assert np.allclose(got, p / (p + (1 - p) / w))
    assert np.array_equal(postprocess(p, Calibration()), p)  # the default changes nothing


def test_downsampled_model_predicts_the_real_click_rate(
    full_and_sampled: tuple[Bundle, Bundle], days: dict[int, dict[str, Path]]
) -> None:
    full, sampled = full_and_sampled
    m = sampled.metrics
    assert m["neg_sample_rate"] == 0.25 and m["train_rows_before_downsampling"] == TRAIN
    # about 0.25 of the ~77% negatives plus every positive
    assert 0.35 * TRAIN < m["train_rows"] < 0.45 * TRAIN
    test = days[1]["test"]
    ev_full, ev = evaluate(full, test), evaluate(sampled, test)
    # Corrected: the mean prediction is the observed CTR (0.22) within 0.02, no further off than
    # the model trained on every row (0.011 off here, 40k rows) by more than 0.01; the log loss
    # within 0.01 of that model's (measured: 0.0046 above).
    gap, gap_full = abs(ev["mean_prediction"] - ev["ctr"]), abs(ev_full["mean_prediction"] - ev_full["ctr"])
    assert gap < 0.02 and gap < gap_full + 0.01, (ev, ev_full)
    assert ev["logloss"] < ev_full["logloss"] + 0.01, (ev, ev_full)
    # The Python path on raw records gives the same corrected figures; uncorrected, the model
    # would be far off: it saw 4x the negatives' share of positives.
    table = pacsv.read_csv(
        test,
        parse_options=pacsv.ParseOptions(delimiter="\t"),
        read_options=pacsv.ReadOptions(column_names=list(sampled.config.schema.columns)),
    )
    p = sampled.predict(table)
    assert abs(float(p.mean()) - ev["mean_prediction"]) < 1e-9
    raw = np.concatenate([sampled.predict_encoded(c, calibrated=False) for c in _chunks(sampled, test)])
    assert float(raw.mean()) > ev["ctr"] + 0.15
    assert Bundle.load(sampled.path).calibration.neg_sample_rate == 0.25  # recorded in the bundle


def test_every_path_returns_corrected_probabilities(
    full_and_sampled: tuple[Bundle, Bundle], days: dict[int, dict[str, Path]], tmp_path: Path
) -> None:
    _, sampled = full_and_sampled
    loaded = Bundle.load(sampled.path)
    test = days[1]["test"]
    out = tmp_path / "p.csv"
    predict_file(loaded, test, out)
    from_file = pacsv.read_csv(out).column("probability").to_numpy()
    assert main(["predict", str(sampled.path), "--data", str(test), "--out", str(tmp_path / "cli.csv"), "--quiet"]) == 0
    from_cli = pacsv.read_csv(tmp_path / "cli.csv").column("probability").to_numpy()
    assert np.allclose(from_file, from_cli)
    assert abs(from_file.mean() - evaluate(loaded, test)["mean_prediction"]) < 1e-9
    enc_chunk = next(iter(_chunks(loaded, test)))
    raw = loaded.predict_encoded(enc_chunk, calibrated=False)
    assert np.allclose(loaded.predict_encoded(enc_chunk), postprocess(raw, Calibration(neg_sample_rate=0.25)))
    assert np.allclose(from_file[: len(raw)], postprocess(raw, Calibration(neg_sample_rate=0.25)))
    # The report's reliability diagram and ROC come from explain's probabilities: the same ones.
    from deepfm.analysis.explain import explain

    assert np.allclose(explain(loaded, test, rows=2000).probabilities, from_file[:2000], atol=1e-6)


def _chunks(bundle: Bundle, path: Path):  # type: ignore[no-untyped-def]
    from deepfm.inference.predictor import open_input

    schema = bundle.config.schema
    reader = open_input(bundle, path)
    for chunk in reader.chunks(schema.names, schema.numeric_columns):
        yield bundle.pipeline.encode(chunk, with_labels=False)


# ---------------------------------------------------------------- calibration
def test_fits_recover_a_known_distortion() -> None:
    """Labels drawn from q, predictions a monotone distortion of q: both fits undo it."""
    rng = np.random.default_rng(0)
    q = rng.beta(2, 6, 50_000)
    y = (rng.random(q.size) < q).astype(float)
    p = q**0.5  # over-confident towards 1
    for method in ("platt", "isotonic"):
        state = fit(p, y, method)
        back = Calibration.from_json(state.to_json())
        assert back == state
        fixed = postprocess(p, back)
        assert logloss(y, fixed) < logloss(y, p) - 0.05
        assert abs(fixed.mean() - y.mean()) < 0.005
    # Platt's sigmoid(a * logit(p) + b) reproduces a logit-linear distortion almost exactly.
    z = np.log(q / (1 - q))
    p2 = 1 / (1 + np.exp(-(0.5 * z + 0.3)))
    a, b = fit(p2, y, "platt").platt
    assert abs(a - 2.0) < 0.1 and abs(b + 0.6) < 0.1


def test_calibrate_command_stores_and_applies(
    full_and_sampled: tuple[Bundle, Bundle],
    days: dict[int, dict[str, Path]],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    _, sampled = full_and_sampled
    folder = tmp_path / "m"
    shutil.copytree(sampled.path, folder)
    before = evaluate(Bundle.load(folder), days[1]["test"])
    assert main(["calibrate", str(folder), "--data", str(days[1]["valid"]), "--method", "isotonic", "--quiet"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["ece_after"] < printed["ece_before"]
    bundle = Bundle.load(folder)
    assert bundle.calibration.method == "isotonic" and bundle.calibration.neg_sample_rate == 0.25
    assert bundle.metrics["calibration_fit"]["after"]["calibration"]["bins"]
    # On the valid rows it was fitted on, the mean prediction is their CTR (isotonic keeps it).
    fit_after = bundle.metrics["calibration_fit"]["after"]
    assert abs(fit_after["mean_prediction"] - fit_after["ctr"]) < 1e-6
    after = evaluate(bundle, days[1]["test"])  # held-out rows: better calibrated, no worse log loss
    assert after["ece"] < before["ece"]
    assert after["logloss"] < before["logloss"] + 0.002
    # The report shows the reliability diagram before and after, and the ECE row.
    from deepfm.analysis.report import build_report

    page = build_report(bundle)
    assert "data-figure='reliability_before'" in page and "data-figure='reliability_after'" in page and ">ECE<" in page
    # Platt (the default) replaces the isotonic fit (not stacked on it).
    calibrate(bundle, days[1]["valid"])
    platt = Bundle.load(folder)
    assert platt.calibration.method == "platt" and platt.calibration.neg_sample_rate == 0.25
    assert evaluate(platt, days[1]["test"])["ece"] < before["ece"]
    # calibration.json is signed like the other files
    (folder / "calibration.json").write_text(Calibration().to_json())
    with pytest.raises(BundleError, match="calibration.json"):
        Bundle.load(folder)


# ---------------------------------------------------------------- drift
def test_psi_formula() -> None:
    from deepfm.analysis.drift import psi

    e, a = np.array([50, 30, 20]), np.array([20, 30, 50])
    pe, pa_ = e / e.sum(), a / a.sum()
    assert psi(e, a) == pytest.approx(float(np.sum((pa_ - pe) * np.log(pa_ / pe))))
    assert psi(e, e * 3) == pytest.approx(0.0)
    assert np.isfinite(psi(np.array([10, 0]), np.array([0, 10])))  # empty buckets are floored


def test_drift_check_sees_the_simulated_days(
    full_and_sampled: tuple[Bundle, Bundle],
    days: dict[int, dict[str, Path]],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    full, _ = full_and_sampled
    model = tmp_path / "m"
    shutil.copytree(full.path, model)
    # Same day, held-out rows: stable, exit 0.
    assert main(["drift", str(model), "--data", str(days[1]["test"]), "--fail-on", "psi>0.25", "--quiet"]) == 0
    same = json.loads((model / "drift.json").read_text())
    assert same["max_psi"] < 0.1 and same["failed"] == []
    assert same["reference_part"] == "valid"  # held-out rows of day 1: OOV rates agree
    assert abs(same["fields"]["C3"]["oov"] - same["fields"]["C3"]["oov_train"]) < 0.02
    capsys.readouterr()
    # Day 2: new ids in the large fields, none in the small ones; the base CTR fell.
    out = tmp_path / "d2.json"
    thresholds = ["--fail-on", "psi>0.25", "--fail-on", "oov_change>0.05"]
    code = main(
        ["drift", str(model), "--data", str(days[2]["test"]), "--out", str(out), *thresholds, "--report", "--quiet"]
    )
    assert code == 1
    assert "threshold crossed: psi>0.25" in capsys.readouterr().err
    d2 = json.loads(out.read_text())
    from deepfm.data.synth_world import CATEGORICAL_SPECS, CHURN_MIN_CARD

    churned = [d2["fields"][c.name] for c in CATEGORICAL_SPECS if c.cardinality >= CHURN_MIN_CARD]
    kept = [d2["fields"][c.name] for c in CATEGORICAL_SPECS if c.cardinality < CHURN_MIN_CARD]
    assert np.median([f["psi"] for f in churned]) > 0.25 and np.median([f["oov_change"] for f in churned]) > 0.04
    assert max(f["psi"] for f in kept) < 0.05 and max(f["oov"] for f in kept) == 0.0
    assert d2["fields"]["I1"]["missing_change"] < 0.02 and d2["fields"]["I1"]["psi"] < 0.05
    assert d2["labels"]["ctr"] < same["labels"]["ctr"]
    lab = d2["labels"]
    assert lab["ctr_gap"] == pytest.approx(abs(d2["mean_prediction"] - lab["ctr"]) / lab["ctr"])
    assert lab["auc"] == pytest.approx(evaluate(full, days[2]["test"])["auc"])
    assert any(f.startswith("psi>0.25") for f in d2["failed"]) and any(
        f.startswith("oov_change>0.05") for f in d2["failed"]
    )
    # The report shows the last check written into the model folder (with --report above:
    # drift.json there is the day-1 check; the day-2 one went to --out).
    assert "<h2>Drift</h2>" in (model / "report.html").read_text()


def test_drift_check_of_rows_without_labels(
    full_and_sampled: tuple[Bundle, Bundle], days: dict[int, dict[str, Path]], tmp_path: Path
) -> None:
    """No CTR comparison; a label threshold says why it cannot pass; a malformed one is a usage error."""
    model = tmp_path / "m"
    shutil.copytree(full_and_sampled[0].path, model)
    unlabelled = tmp_path / "nolabel.tsv"
    unlabelled.write_text(
        "".join(line.split("\t", 1)[1] for line in days[2]["test"].read_text().splitlines(keepends=True)[:500])
    )
    assert main(["drift", str(model), "--data", str(unlabelled), "--fail-on", "ctr_gap>0.1", "--quiet"]) == 1
    nl = json.loads((model / "drift.json").read_text())
    assert "labels" not in nl and "no labels" in nl["failed"][0]
    assert main(["drift", str(model), "--data", str(unlabelled), "--fail-on", "psi>>1", "--quiet"]) == 2
