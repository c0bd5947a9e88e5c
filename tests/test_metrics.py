"""metrics: auc, logloss, ROC points and calibration bins against scikit-learn."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn.metrics import log_loss, roc_auc_score

from deepfm.util.metrics import auc, calibration, logloss, roc_curve, summary


@pytest.mark.parametrize("seed", range(6))
def test_auc_matches_sklearn_with_many_ties(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = int(rng.integers(50, 2000))
    y = (rng.random(n) < rng.uniform(0.05, 0.6)).astype(np.float32)
    levels = int(rng.integers(2, 12))  # few distinct scores: ties everywhere
    s = rng.integers(0, levels, n) / levels + 0.1 * y * rng.integers(0, 2, n)
    assert np.unique(s).size < n / 3
    assert auc(y, s) == pytest.approx(roc_auc_score(y, s), abs=1e-12)


def test_auc_matches_sklearn_continuous_and_extremes() -> None:
    rng = np.random.default_rng(42)
    y = rng.integers(0, 2, 5000)
    s = rng.normal(size=5000) + y * 0.5
    assert auc(y, s) == pytest.approx(roc_auc_score(y, s), abs=1e-12)
    assert auc(y, y.astype(float)) == 1.0
    assert auc(y, -y.astype(float)) == 0.0
    assert auc(y, np.zeros(5000)) == 0.5  # all tied
    assert auc(np.array([0, 1, 1, 0]), np.array([0.3, 0.3, 0.7, 0.1])) == pytest.approx(
        roc_auc_score([0, 1, 1, 0], [0.3, 0.3, 0.7, 0.1])
    )


@pytest.mark.parametrize("labels", [np.zeros(10), np.ones(10)])
def test_auc_nan_for_one_class(labels: np.ndarray) -> None:
    assert math.isnan(auc(labels, np.linspace(0, 1, 10)))


@pytest.mark.parametrize("seed", range(4))
def test_logloss_matches_sklearn(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = 3000
    y = rng.integers(0, 2, n)
    p = rng.random(n)
    p[:20] = 0.0  # extremes are clipped, not infinite
    p[20:40] = 1.0
    p[40:200] = np.round(p[40:200], 1)  # ties
    want = log_loss(y, np.clip(p, 1e-7, 1 - 1e-7), labels=[0, 1])
    assert logloss(y, p) == pytest.approx(want, rel=1e-10)
    assert math.isfinite(logloss(y, p))


def test_logloss_known_value() -> None:
    assert logloss(np.array([1, 0]), np.array([0.8, 0.4])) == pytest.approx(-(math.log(0.8) + math.log(0.6)) / 2)


def test_summary_keys() -> None:
    y = np.array([0, 1, 1, 0, 1])
    p = np.array([0.1, 0.9, 0.6, 0.4, 0.3])
    s = summary(y, p)
    assert s["auc"] == pytest.approx(roc_auc_score(y, p))
    assert s["logloss"] == pytest.approx(log_loss(y, p))
    assert s["rows"] == 5 and s["ctr"] == pytest.approx(0.6) and s["mean_prediction"] == pytest.approx(0.46)


def test_roc_curve_matches_scikit_learn_and_its_area_is_the_auc() -> None:
    from sklearn.metrics import roc_curve as sk_roc

    rng = np.random.default_rng(3)
    y = rng.integers(0, 2, 3000)
    s = np.round(rng.normal(size=3000) + y, 2)  # rounded: many ties
    ours = roc_curve(y, s, max_points=None)
    fpr, tpr, thr = sk_roc(y, s, drop_intermediate=False)
    np.testing.assert_allclose(ours["fpr"], fpr)
    np.testing.assert_allclose(ours["tpr"], tpr)
    np.testing.assert_allclose(ours["threshold"][1:], thr[1:])
    assert np.trapezoid(ours["tpr"], ours["fpr"]) == pytest.approx(auc(y, s), abs=1e-12)
    thin = roc_curve(y, s, max_points=50)
    assert (
        len(thin["fpr"]) <= 51
        and (thin["fpr"][0], thin["tpr"][0]) == (0.0, 0.0)
        and (thin["fpr"][-1], thin["tpr"][-1]) == (1.0, 1.0)
    )
    assert np.all(np.diff(thin["fpr"]) >= 0) and np.all(np.diff(thin["tpr"]) >= 0)
    assert roc_curve(np.ones(5), np.arange(5)) == {"fpr": [], "tpr": [], "threshold": []}


def test_calibration_bins_against_scikit_learn_quantile_bins() -> None:
    from sklearn.calibration import calibration_curve

    rng = np.random.default_rng(4)
    p = rng.beta(1, 6, 5000)  # CTR-like: most predictions near 0
    y = (rng.random(5000) < np.clip(1.3 * p, 0, 1)).astype(int)  # the model under-predicts by 30%
    cal = calibration(y, p, bins=10)
    bins = cal["bins"]
    assert [b["count"] for b in bins] == [500] * 10
    prob_true, prob_pred = calibration_curve(y, p, n_bins=10, strategy="quantile")
    np.testing.assert_allclose([b["mean_prediction"] for b in bins], prob_pred, rtol=1e-9)
    np.testing.assert_allclose([b["positive_rate"] for b in bins], prob_true, rtol=1e-9)
    # ECE by its definition, and the planted under-prediction shows in the top bins
    want = sum(b["count"] * abs(b["mean_prediction"] - b["positive_rate"]) for b in bins) / 5000
    assert cal["ece"] == pytest.approx(want) and cal["ece"] > 0.02
    assert all(b["positive_rate"] > b["mean_prediction"] + 0.05 for b in bins[7:])
    assert sum(cal["histogram"]["counts"]) == 5000 and len(cal["histogram"]["edges"]) == 51
