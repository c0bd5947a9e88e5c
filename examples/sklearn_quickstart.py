"""DeepFMClassifier in a notebook: a pandas DataFrame with a multi-hot column, fit with an
eval set, predict, score, a Pipeline, cross-validation, save and load.

    pip install -e ".[sklearn]"        # polars too, for the polars cell
    python examples/sklearn_quickstart.py

The data are generated with known click probabilities, so the AUC of the truth (the best
any model can reach on these rows) is printed beside the model's. Each ``# %%`` cell runs
as is in Jupyter or VS Code.
"""

# %% imports
from __future__ import annotations

import sys
import tempfile
import time

import numpy as np
import pandas as pd
from sklearn.compose import ColumnTransformer
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import cross_val_score, train_test_split
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import FunctionTransformer

from deepfm import DeepFMClassifier

GENRES = ["action", "comedy", "drama", "horror", "romance", "sci-fi", "documentary", "anime"]


def make_data(rows: int, seed: int = 0) -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
    """Ad impressions: (X, clicked (rows,) int, true click probability (rows,)).

    The click log-odds add a per-genre effect (averaged over the user's genres, a multi-hot
    list), a device x hour interaction (phones at night), a per-site effect and a weak price
    effect; age is noise. Missing values: some ages and prices are NaN, some lists empty.
    """
    rng = np.random.default_rng(seed)
    n_genres = rng.integers(0, 4, rows)
    genres = [list(rng.choice(GENRES, size=k, replace=False)) for k in n_genres]
    genre_effect = dict(zip(GENRES, np.linspace(-1.2, 1.2, len(GENRES))))
    site = rng.choice([f"site{i:02d}" for i in range(30)], rows)
    site_effect = {f"site{i:02d}": e for i, e in enumerate(np.random.default_rng(1).normal(0, 0.7, 30))}
    device = rng.choice(["phone", "desktop", "tablet"], rows, p=[0.6, 0.3, 0.1])
    hour = rng.integers(0, 24, rows)
    price = rng.lognormal(3.0, 1.0, rows)
    age = rng.integers(18, 75, rows).astype(float)
    night = (hour >= 22) | (hour < 6)
    logit = (
        -1.5
        + np.array([np.mean([genre_effect[g] for g in gs]) if gs else -0.5 for gs in genres])
        + np.array([site_effect[s] for s in site])
        + 1.2 * ((device == "phone") & night)
        - 0.6 * ((device == "desktop") & night)
        - 0.15 * np.log(price)
    )
    p_true = 1.0 / (1.0 + np.exp(-logit))
    clicked = (rng.random(rows) < p_true).astype(int)
    age[rng.random(rows) < 0.05] = np.nan
    price[rng.random(rows) < 0.05] = np.nan
    X = pd.DataFrame({"site": site, "device": device, "hour": hour, "price": price, "age": age, "genres": genres})
    return X, clicked, p_true


def main(rows: int = 20_000, epochs: int = 10, cv: int = 3) -> None:
    t0 = time.perf_counter()
    # %% data: a DataFrame with a list column (multi-hot) and missing values
    X, y, p_true = make_data(rows, seed=0)
    X_train, X_rest, y_train, y_rest, _, p_rest = train_test_split(X, y, p_true, test_size=0.3, random_state=0)
    X_valid, X_test, y_valid, y_test, _, p_test = train_test_split(
        X_rest, y_rest, p_rest, test_size=0.5, random_state=0
    )
    print(X.head(3).to_string())
    print(f"{len(X_train)} train, {len(X_valid)} valid, {len(X_test)} test rows; click rate {y.mean():.3f}")

    # %% fit with an eval set (early stopping on its AUC). Column kinds are inferred from the
    # dtypes; `fields` overrides them: hour is an integer (numeric, log-binned by default), but
    # as a categorical each hour gets its own vector, so the device x hour interaction shows.
    params = dict(fields={"hour": "categorical"}, embedding_dim=8, hidden=(64, 64), epochs=epochs, lr=3e-3, seed=0)
    clf = DeepFMClassifier(**params).fit(X_train, y_train, eval_set=(X_valid, y_valid))
    print("fields:", ", ".join(f"{f.name}={f.kind}" for f in clf.bundle_.config.schema.fields))
    m = clf.bundle_.metrics
    print(f"best epoch {m['best_epoch']} of {m['epochs']}, valid AUC {m['valid_auc']:.4f}")

    # %% predict_proba, predict, score (ROC AUC)
    print("predict_proba(first 3 test rows):", np.round(clf.predict_proba(X_test[:3]), 3).tolist())
    print("predict(first 3 test rows):", clf.predict(X_test[:3]).tolist())
    print(f"test AUC {clf.score(X_test, y_test):.4f} (the true probabilities: {roc_auc_score(y_test, p_test):.4f})")

    # %% the same model scores polars DataFrames and Arrow tables
    try:
        import polars as pl

        print(f"test AUC from polars {clf.score(pl.from_pandas(X_test), y_test):.4f}")
    except ImportError:
        print("polars is not installed: skipping the polars cell")

    # %% in a Pipeline: a step adds a feature (night), then the classifier
    add_night = FunctionTransformer(lambda df: df.assign(night=(df["hour"] >= 22) | (df["hour"] < 6)))
    pipe = make_pipeline(add_night, DeepFMClassifier(**params)).fit(X_train, y_train)
    print(f"Pipeline test AUC {pipe.score(X_test, y_test):.4f}")
    drop_age = ColumnTransformer(
        [("drop_age", "drop", ["age"])], remainder="passthrough", verbose_feature_names_out=False
    )
    pipe = make_pipeline(drop_age.set_output(transform="pandas"), DeepFMClassifier(**params)).fit(X_train, y_train)
    print(f"Pipeline without age, test AUC {pipe.score(X_test, y_test):.4f}")

    # %% cross-validation
    scores = cross_val_score(DeepFMClassifier(**params), X_train, y_train, cv=cv, scoring="roc_auc")
    print(f"{cv}-fold cross-validated AUC {scores.mean():.4f} ± {scores.std():.4f}")

    # %% save / load: a bundle of safetensors + JSON (the way to keep a model; no pickle)
    with tempfile.TemporaryDirectory() as folder:
        clf.save(folder)
        loaded = DeepFMClassifier.load(folder)
        same = np.array_equal(loaded.predict_proba(X_test), clf.predict_proba(X_test))
        print(f"saved and loaded: same predictions {same}")
    print(f"done in {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main(*(int(a) for a in sys.argv[1:]))
