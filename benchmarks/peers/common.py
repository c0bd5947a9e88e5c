"""What the peer runners share: arguments, the split, the pandas + LabelEncoder
preprocessing, metrics and the one JSON line each runner prints.

Runs inside the peers' virtual environment (benchmarks/.venv-peers), never in deepfm's.
The preprocessing here is the pandas path DeepCTR-Torch documents (read_csv, fillna,
one sklearn LabelEncoder per sparse field), tightened to the benchmark's common rules so
that every library sees the same inputs as deepfm --preset criteo:

- all 39 fields are categorical; I1..I13 are bucketized with the Criteo log trick;
- vocabularies are fitted on the training rows only (the docs fit on everything, which
  leaks the test vocabulary into training);
- values seen fewer than min_count times in training, and values never seen there, share
  one OOV index per field; a missing value is a value of its own.

Two protocols use it. speed.py: each runner reads the raw TSV itself (timed) and trains a
fixed number of epochs (--data, --epochs). accuracy.py: encode.py applies the same rules
once per data set (any fields, libFM too) and saves arrays; each runner loads them and
trains until early stopping (--encoded, --max-epochs, --patience).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np

if TYPE_CHECKING:  # pandas is imported inside the functions that use it
    import pandas as pd

T = TypeVar("T")

NUMERIC = [f"I{i}" for i in range(1, 14)]
CATEGORICAL = [f"C{i}" for i in range(1, 27)]
FIELDS = NUMERIC + CATEGORICAL
COLUMNS = ["label", *FIELDS]
MISSING_NUMBER = -1_000_000  # bucket key of a missing count: far from every real key
MISSING_STRING = "-1"  # DeepCTR-Torch's docs fill missing sparse values with '-1'


def parse_args(description: str) -> argparse.Namespace:
    """The same flags for every runner; speed.py passes one set of hyperparameters to all."""
    p = argparse.ArgumentParser(description=description)
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--data", help="speed protocol: raw Criteo-layout TSV (no header)")
    source.add_argument("--encoded", help="accuracy protocol: a folder written by encode.py")
    p.add_argument("--workdir", required=True, help="scratch folder for this run")
    p.add_argument("--epochs", type=int, default=1, help="speed protocol: epochs to train")
    p.add_argument("--max-epochs", type=int, default=50, help="accuracy protocol: the most epochs")
    p.add_argument("--patience", type=int, default=2, help="accuracy protocol: epochs without a better valid AUC")
    p.add_argument("--batch-size", type=int, default=4096)
    p.add_argument("--predict-batch", type=int, default=16384)
    p.add_argument("--embedding-dim", type=int, default=10)
    p.add_argument("--hidden", default="400,400,400")
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--min-count", type=int, default=2)
    p.add_argument("--split", default="0.8,0.1,0.1")
    p.add_argument("--seed", type=int, default=2024)
    args = p.parse_args()
    args.hidden = [int(h) for h in args.hidden.split(",")]
    args.split = [float(s) for s in args.split.split(",")]
    os.makedirs(args.workdir, exist_ok=True)
    return args


def split_bounds(n: int, split: list[float]) -> dict[str, tuple[int, int]]:
    """Row ranges of train/valid/test, rounded exactly as deepfm's --split rounds them
    (two fractions: validation takes every row after training, the test part is empty)."""
    n_train = int(round(split[0] * n))
    if len(split) == 2 or split[2] == 0:
        return {"train": (0, n_train), "valid": (n_train, n), "test": (n, n)}
    n_valid = int(round(split[1] * n))
    return {"train": (0, n_train), "valid": (n_train, n_train + n_valid), "test": (n_train + n_valid, n)}


def log_bucket(x: np.ndarray) -> np.ndarray:
    """The Criteo winners' trick for counts: v > 2 -> floor(log(v)^2), else v itself.

    The two ranges would collide (log(3)^2 floors to 1); the winners kept them apart by
    prefixing small values, here the bins are shifted by 100 instead (deepfm does the same).
    NaN (missing) becomes its own key.
    """
    with np.errstate(invalid="ignore", divide="ignore"):
        keys = np.where(x > 2, 100 + np.floor(np.log(np.where(x > 2, x, 1.0)) ** 2), np.floor(x))
    keys[np.isnan(x)] = MISSING_NUMBER
    return keys.astype(np.int64)


@dataclass
class Encoded:
    """Per-field indices in [0, vocab_sizes[f]); the last index of a field is its OOV."""

    x: dict[str, np.ndarray]  # part -> (rows, 39) int64
    y: dict[str, np.ndarray]  # part -> (rows,) float32
    vocab_sizes: list[int]
    rows: int
    seconds: float


def pandas_label_encode(path: str, split: list[float], min_count: int) -> Encoded:
    """Raw TSV -> encoded train/valid/test with pandas and sklearn's LabelEncoder (timed)."""
    import pandas as pd
    import sklearn.preprocessing  # noqa: F401 (imported before the clock starts; encode_columns uses it)

    t0 = time.perf_counter()
    # Hashes are read as strings: a hash made only of digits (or like '8e123456') must not
    # turn into a number in one chunk and stay a string in another.
    dtypes = {c: str for c in CATEGORICAL} | {c: "float64" for c in NUMERIC}
    df = pd.read_csv(path, sep="\t", header=None, names=COLUMNS, dtype=dtypes)
    bounds = split_bounds(len(df), split)
    matrix, vocab_sizes = encode_columns(criteo_values(df), slice(*bounds["train"]), min_count)
    labels = df["label"].to_numpy(dtype=np.float32)
    x = {part: matrix[a:b] for part, (a, b) in bounds.items()}
    y = {part: labels[a:b] for part, (a, b) in bounds.items()}
    return Encoded(x, y, vocab_sizes, len(df), time.perf_counter() - t0)


def criteo_values(df: pd.DataFrame) -> list[np.ndarray]:
    """The 39 Criteo columns of a DataFrame as values to encode: I1..I13 log-bucketized
    (missing its own key), C1..C26 strings (missing as '-1')."""
    values = []
    for name in FIELDS:
        if name in NUMERIC:
            values.append(log_bucket(df[name].to_numpy(dtype=np.float64)))
        else:
            values.append(df[name].fillna(MISSING_STRING).to_numpy(dtype=object))
    return values


def encode_columns(values: list[np.ndarray], train: slice, min_count: int) -> tuple[np.ndarray, list[int]]:
    """Per-field ids (rows, fields) int64 and vocabulary sizes, by sklearn's LabelEncoder fitted
    on the training rows' values seen at least min_count times; everything else (rare in
    training, or unseen) goes to one OOV index at the end of each field."""
    import pandas as pd
    from sklearn.preprocessing import LabelEncoder

    columns, vocab_sizes = [], []
    for field in values:
        column = pd.Series(field)
        counts = column.iloc[train].value_counts()
        kept = counts.index[counts >= min_count].to_numpy()
        encoder = LabelEncoder().fit(kept)
        known = column.isin(kept).to_numpy()
        ids = np.full(len(field), len(encoder.classes_), dtype=np.int64)
        ids[known] = encoder.transform(field[known])
        columns.append(ids)
        vocab_sizes.append(len(encoder.classes_) + 1)
    return np.stack(columns, axis=1), vocab_sizes


@dataclass
class EncodedSet:
    """A data set encoded once by encode.py (accuracy protocol)."""

    fields: list[str]
    x: dict[str, np.ndarray]  # part -> (rows, fields) int64, ids in [0, vocab_sizes[f])
    y: dict[str, np.ndarray]  # part -> (rows,) float32, 0/1
    vocab_sizes: list[int]
    fingerprint: str


def load_encoded(folder: str) -> EncodedSet:
    meta = json.loads(open(os.path.join(folder, "meta.json")).read())
    x = {part: np.load(os.path.join(folder, f"{part}_x.npy")) for part in ("train", "valid", "test")}
    y = {part: np.load(os.path.join(folder, f"{part}_y.npy")) for part in ("train", "valid", "test")}
    return EncodedSet(meta["fields"], x, y, meta["vocab_sizes"], meta["fingerprint"])


def accuracy_result(
    library: str,
    version: str,
    torch_version: str,
    data: EncodedSet,
    args: argparse.Namespace,
    valid_aucs: list[float],
    train_seconds: float,
    scores: np.ndarray,
) -> dict:
    """The one JSON line of an accuracy run: the epochs, the validation AUC of each, and the
    test metrics of the best epoch's weights (which the runner has restored)."""
    test_auc, test_logloss = auc_logloss(data.y["test"], scores)
    epochs = len(valid_aucs)
    best = int(np.argmax(valid_aucs)) + 1
    return {
        "library": library,
        "version": version,
        "torch": torch_version,
        "fingerprint": data.fingerprint,
        "seed": args.seed,
        "batch_size": args.batch_size,
        "train_rows": len(data.y["train"]),
        "test_rows": len(data.y["test"]),
        "epochs": epochs,
        "best_epoch": best,
        "stopped_early": epochs < args.max_epochs,
        "valid_auc": float(valid_aucs[best - 1]),
        "valid_aucs": [round(float(a), 6) for a in valid_aucs],
        "train_seconds": train_seconds,
        "train_samples_per_s": len(data.y["train"]) * epochs / train_seconds,
        "test_auc": test_auc,
        "test_logloss": test_logloss,
    }


def auc_logloss(y: np.ndarray, p: np.ndarray) -> tuple[float, float]:
    from sklearn.metrics import log_loss, roc_auc_score

    p = np.clip(np.asarray(p, dtype=np.float64).reshape(-1), 1e-7, 1 - 1e-7)
    return float(roc_auc_score(y, p)), float(log_loss(y, p, labels=[0, 1]))


def result(
    library: str,
    version: str,
    torch_version: str,
    rows: int,
    n_train: int,
    n_test: int,
    epochs: int,
    embedding_rows: int,
    parameters: int,
    preprocess_seconds: float,
    train_seconds: float,
    predict_seconds: float,
    t_start: float,
    y_test: np.ndarray,
    scores: np.ndarray,
) -> dict:
    """The one JSON line every runner prints: times, rates derived from them, test metrics.
    End to end runs from ``t_start`` to the test metrics, which are computed here."""
    test_auc, test_logloss = auc_logloss(y_test, scores)
    total_seconds = time.perf_counter() - t_start
    return {
        "library": library,
        "version": version,
        "torch": torch_version,
        "rows": rows,
        "train_rows": n_train,
        "test_rows": n_test,
        "embedding_rows": embedding_rows,
        "parameters": parameters,
        "preprocess_seconds": preprocess_seconds,
        "preprocess_rows_per_s": rows / preprocess_seconds,
        "train_seconds": train_seconds,
        "train_samples_per_s": n_train * epochs / train_seconds,
        "predict_seconds": predict_seconds,
        "test_predict_samples_per_s": n_test / predict_seconds,
        "total_seconds": total_seconds,
        "test_auc": test_auc,
        "test_logloss": test_logloss,
    }


def peak_rss_mib() -> float:
    """Peak RSS of this process (the driver also reads it for the whole process tree)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def emit(result: dict) -> None:
    """The runner's one line of output for speed.py, on the process's real stdout (the runners
    send sys.stdout to stderr meanwhile, where the libraries print)."""
    import torch

    out = sys.__stdout__
    assert out is not None, "the runner has no stdout to print its result to"
    result.setdefault("threads", torch.get_num_threads())
    result.setdefault("self_peak_rss_mib", peak_rss_mib())
    out.write(json.dumps(result) + "\n")
    out.flush()


class Timer:
    """Adds up the time spent in a wrapped callable (used to take evaluation out of fit)."""

    def __init__(self) -> None:
        self.seconds = 0.0

    def wrap(self, fn: Callable[..., T]) -> Callable[..., T]:
        def timed(*args: Any, **kwargs: Any) -> T:
            t0 = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self.seconds += time.perf_counter() - t0

        return timed
