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
    """{"auc", "logloss", "rows", "ctr", "mean_prediction", "ece"} for one set of predictions
    (ece: expected calibration error over 10 equal-count bins, see :func:`calibration`)."""
    return {
        "auc": auc(labels, probs),
        "logloss": logloss(labels, probs),
        "rows": int(np.asarray(labels).size),
        "ctr": float(np.mean(labels)) if np.asarray(labels).size else float("nan"),
        "mean_prediction": float(np.mean(probs)) if np.asarray(probs).size else float("nan"),
        "ece": _ece(labels, probs),
    }


def roc_curve(labels: np.ndarray, scores: np.ndarray, max_points: int | None = 200) -> dict[str, list[float]]:
    """ROC points {"fpr", "tpr", "threshold"} from (0, 0) to (1, 1), one per distinct score
    (highest first), thinned to about ``max_points`` for plotting; the ends are always kept.
    Empty lists when only one class is present. (N,), (N,) -> dict"""
    y = np.asarray(labels).astype(bool).ravel()
    s = np.asarray(scores, dtype=np.float64).ravel()
    n_pos = int(y.sum())
    n_neg = y.size - n_pos
    if n_pos == 0 or n_neg == 0:
        return {"fpr": [], "tpr": [], "threshold": []}
    order = np.argsort(-s, kind="mergesort")
    s, y = s[order], y[order]
    # The curve moves only where the score changes: the last row of each run of ties.
    last = np.r_[np.flatnonzero(s[1:] != s[:-1]), s.size - 1]
    tp = np.cumsum(y)[last]
    fp = (last + 1) - tp
    fpr = np.r_[0.0, fp / n_neg]
    tpr = np.r_[0.0, tp / n_pos]
    threshold = np.r_[np.inf, s[last]]
    if max_points is not None and fpr.size > max_points:
        keep = np.unique(np.r_[np.linspace(0, fpr.size - 1, max_points).round().astype(int), fpr.size - 1])
        fpr, tpr, threshold = fpr[keep], tpr[keep], threshold[keep]
    return {"fpr": fpr.tolist(), "tpr": tpr.tolist(), "threshold": threshold.tolist()}


def calibration(labels: np.ndarray, probs: np.ndarray, bins: int = 10, histogram_bins: int = 50) -> dict[str, object]:
    """Reliability of predicted probabilities.

    ``bins``: rows sorted by prediction and cut into equal-count bins (CTR predictions crowd
    near 0, so equal-width bins would leave most of them empty), each with its range, count,
    mean prediction and observed positive rate. ``ece``: the count-weighted mean absolute gap
    between the two. ``histogram``: counts of predictions in equal-width bins on [0, 1].
    (N,), (N,) -> dict"""
    y = np.asarray(labels, dtype=np.float64).ravel()
    p = np.asarray(probs, dtype=np.float64).ravel()
    order = np.argsort(p, kind="mergesort")
    rows = []
    for part in np.array_split(order, min(bins, p.size)) if p.size else []:
        rows.append(
            {
                "lo": float(p[part[0]]),
                "hi": float(p[part[-1]]),
                "count": int(part.size),
                "mean_prediction": float(p[part].mean()),
                "positive_rate": float(y[part].mean()),
            }
        )
    counts, edges = np.histogram(p, bins=histogram_bins, range=(0.0, 1.0))
    return {
        "bins": rows,
        "ece": _ece(y, p, bins),
        "histogram": {"edges": edges.tolist(), "counts": counts.tolist()},
    }


def _ece(labels: np.ndarray, probs: np.ndarray, bins: int = 10) -> float:
    """Count-weighted mean |mean prediction - positive rate| over equal-count bins of the
    rows sorted by prediction. NaN for no rows. (N,), (N,) -> float"""
    y = np.asarray(labels, dtype=np.float64).ravel()
    p = np.asarray(probs, dtype=np.float64).ravel()
    if not p.size:
        return float("nan")
    order = np.argsort(p, kind="mergesort")
    gaps = [part.size * abs(p[part].mean() - y[part].mean()) for part in np.array_split(order, min(bins, p.size))]
    return float(sum(gaps) / p.size)
