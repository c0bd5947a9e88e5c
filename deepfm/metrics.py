"""AUC and logloss on NumPy arrays (checked against scikit-learn in the tests)."""

from __future__ import annotations

import numpy as np

EPS = 1e-7


def auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """Area under the ROC curve by the rank-sum (Mann-Whitney) formula; ties share their
    average rank. NaN when only one class is present. (N,), (N,) -> float"""
    y = np.asarray(labels).astype(bool).ravel()
    s = np.asarray(scores, dtype=np.float64).ravel()
    n_pos = int(y.sum())
    n_neg = y.size - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    order = np.argsort(s, kind="mergesort")
    sorted_s = s[order]
    # Average 1-based rank of each run of equal scores.
    starts = np.flatnonzero(np.r_[True, sorted_s[1:] != sorted_s[:-1]])
    ends = np.r_[starts[1:], s.size]
    avg_rank = (starts + ends + 1) / 2.0
    ranks = np.empty(s.size, dtype=np.float64)
    ranks[order] = np.repeat(avg_rank, ends - starts)
    return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def logloss(labels: np.ndarray, probs: np.ndarray) -> float:
    """Mean binary cross-entropy, probabilities clipped to [1e-7, 1 - 1e-7]. (N,), (N,) -> float"""
    y = np.asarray(labels, dtype=np.float64).ravel()
    p = np.clip(np.asarray(probs, dtype=np.float64).ravel(), EPS, 1 - EPS)
    if y.size == 0:
        return float("nan")
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log1p(-p)))


def summary(labels: np.ndarray, probs: np.ndarray) -> dict[str, float]:
    """{"auc", "logloss", "rows", "ctr", "mean_prediction"} for one set of predictions."""
    return {
        "auc": auc(labels, probs),
        "logloss": logloss(labels, probs),
        "rows": int(np.asarray(labels).size),
        "ctr": float(np.mean(labels)) if np.asarray(labels).size else float("nan"),
        "mean_prediction": float(np.mean(probs)) if np.asarray(probs).size else float("nan"),
    }
