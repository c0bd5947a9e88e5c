"""The labels y of the estimator: two classes of any type, as 0/1, and the rows held out."""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import column_or_1d

from deepfm.errors import DataError


def _label_array(y: Any, n: int, what: str) -> np.ndarray:
    """y as a 1-D NumPy array of length ``n``, with a clear error for a missing label."""
    if isinstance(y, (pa.Array, pa.ChunkedArray)):
        y = y.to_numpy(zero_copy_only=False) if isinstance(y, pa.Array) else y.to_numpy()
    elif hasattr(y, "to_numpy"):  # pandas / polars Series
        y = y.to_numpy()
    arr = column_or_1d(np.asarray(y), warn=True)
    if len(arr) != n:
        raise ValueError(f"X has {n} rows but {what} has {len(arr)} labels")
    if arr.dtype.kind == "f":
        missing = np.isnan(arr)
    elif arr.dtype.kind == "O":
        missing = np.fromiter((is_missing(v) for v in arr), dtype=bool, count=len(arr))
    else:
        missing = np.zeros(len(arr), dtype=bool)
    if missing.any():
        i = int(np.flatnonzero(missing)[0])
        raise DataError(f"Input {what} contains NaN or None (first at row {i}): every row needs a label")
    return arr


def is_missing(v: Any) -> bool:
    if v is None:
        return True
    try:
        return bool(v != v)  # NaN
    except TypeError:  # pandas.NA refuses to be a bool: it is missing
        return True


def fit_labels(y: Any, n: int) -> tuple[np.ndarray, np.ndarray]:
    """-> (labels (n,) float64 0/1, classes_ (2,)): classes_[1] is the positive class."""
    arr = _label_array(y, n, "y")
    check_classification_targets(arr)  # refuses continuous targets, as every classifier does
    try:
        classes = np.unique(arr)
    except TypeError:
        raise DataError(f"y mixes label types ({sorted({type(v).__name__ for v in arr})}); use one type") from None
    if len(classes) != 2:
        shown = ", ".join(repr(c) for c in classes[:5].tolist()) + (", ..." if len(classes) > 5 else "")
        if len(classes) == 1:
            raise DataError(f"y holds one class ({shown}): a classifier needs rows of two classes")
        raise DataError(
            f"y holds {len(classes)} classes ({shown}). Only binary classification is supported by "
            "DeepFMClassifier: two classes, e.g. 0/1, False/True or two strings"
        )
    return (arr == classes[1]).astype(np.float64), classes


def encode_labels(y: Any, n: int, classes: np.ndarray, what: str) -> np.ndarray:
    """y as 0/1 against the fitted classes. -> (n,) float64"""
    arr = _label_array(y, n, what)
    known = np.isin(arr, classes)
    if not known.all():
        unseen = sorted({repr(v) for v in arr[~known].tolist()})[:5]
        raise DataError(f"{what} holds label(s) {', '.join(unseen)} not seen in fit; classes_ = {classes.tolist()}")
    return (arr == classes[1]).astype(np.float64)


def holdout(
    table: pa.Table, labels: np.ndarray, fraction: float, seed: int
) -> tuple[tuple[pa.Table, np.ndarray], tuple[pa.Table, np.ndarray] | None]:
    """Split off a stratified random ``fraction`` of the rows (each class in proportion) for
    early stopping. Rows keep their order within each part."""
    rng = np.random.default_rng(seed)
    by_class = (np.flatnonzero(labels == c) for c in (0.0, 1.0))
    held = [rng.permutation(idx)[: int(round(fraction * idx.size))] for idx in by_class]
    valid = np.sort(np.concatenate(held))
    if valid.size == 0 or valid.size == labels.size:
        return (table, labels), None
    keep = np.setdiff1d(np.arange(labels.size), valid)
    return (table.take(keep), labels[keep]), (table.take(valid), labels[valid])
