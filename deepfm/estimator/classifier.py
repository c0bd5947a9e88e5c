"""DeepFMClassifier: the scikit-learn estimator over pandas / polars DataFrames, Arrow tables
and 2-D arrays (X as a table: :mod:`.tables`; y: :mod:`.labels`).

    clf = deepfm.DeepFMClassifier(epochs=5).fit(df, y, eval_set=(df_valid, y_valid))
    clf.predict_proba(df)[:, 1]        # (N, 2): P(classes_[0]), P(classes_[1])
    clf.score(df, y)                   # ROC AUC
    clf.save("runs/m")                 # the bundle: safetensors + JSON, no pickle
    clf = deepfm.DeepFMClassifier.load("runs/m")

``fit`` writes X and y to a temporary Parquet file and runs the same :func:`deepfm.train` as
the command line, so the fitted model is an ordinary :class:`~deepfm.Bundle` (``bundle_``):
``deepfm predict`` and ``deepfm.Bundle.load`` read what ``save`` writes.

Column kinds are inferred from the column types: integers and floats are numeric (log bins
for integer values, quantile bins otherwise, as for files), strings, categoricals and bools
are categorical, lists are multi-hot. ``fields={"zip": "categorical", "price": {"kind":
"numeric", "mode": "scaled"}}`` overrides them. List columns reach the feature pipeline as
text joined with a separator that none of their values holds (recorded in the bundle's
schema), since the pipeline reads multi-hot fields as separator-joined text.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

try:
    from sklearn.base import BaseEstimator, ClassifierMixin
    from sklearn.metrics import roc_auc_score
    from sklearn.utils.validation import check_is_fitted
except ImportError as exc:  # the estimator is optional: `import deepfm` works without it
    raise ImportError("deepfm.DeepFMClassifier needs scikit-learn: pip install 'deepfm[sklearn]'") from exc

from deepfm.bundle import Bundle
from deepfm.config import ModelConfig, RunConfig, TrainConfig
from deepfm.data.schema import KINDS, FieldSpec, Schema
from deepfm.data.schema_inference import guess_field
from deepfm.errors import BundleError, ConfigError, DataError
from deepfm.estimator.labels import encode_labels, fit_labels, holdout
from deepfm.estimator.tables import (
    align,
    default_kind,
    eval_pair,
    integral,
    join_lists,
    list_separator,
    to_table,
    write_parquet,
)
from deepfm.training import train
from deepfm.util.validation import Auto

ESTIMATOR_FILE = "estimator.json"  # classes, feature names and parameters, beside the bundle
_MODEL, _TRAIN = ModelConfig(), TrainConfig()


class DeepFMClassifier(ClassifierMixin, BaseEstimator):
    """A DeepFM click-through-rate model with the scikit-learn estimator contract.

    Binary: ``y`` holds two classes (0/1, False/True or two strings); ``classes_[1]`` is the
    positive class. Missing values in X (NaN, None, null) are learned as missing.

    Parameters mirror :class:`~deepfm.ModelConfig` (kind, embedding_dim, hidden, activation,
    dropout, batch_norm, init_std, cross_layers) and :class:`~deepfm.TrainConfig` (epochs, batch_size,
    lr, embedding_lr, l2_embedding, weight_decay, patience, lr_decay, reset_embeddings, seed, device,
    threads),
    plus:

    fields : dict, optional
        Overrides of the inferred column kinds: ``{column: kind}`` or ``{column: {...}}`` with
        :class:`~deepfm.FieldSpec` options (``{"kind": "numeric", "mode": "scaled"}``).
    min_count : int or "auto"
        Values seen fewer times in training share their field's OOV row (inferred fields);
        "auto" grows from 2 to 10 with the training rows (:func:`deepfm.data.schema.auto_min_count`).
    validation_fraction : float
        Without ``eval_set``, this stratified random share of the rows is held out for early
        stopping; 0 trains on every row for ``epochs`` epochs.
    verbose : bool
        Show a progress bar while training.
    track : str or list of str, optional
        Track each fit in ``"tensorboard:DIR"`` or ``"mlflow[:URI]"``
        (:mod:`deepfm.training.tracking`; ``pip install deepfm[track]``).

    Attributes: ``classes_``, ``n_features_in_``, ``feature_names_in_`` (when X has string
    column names), ``bundle_`` (the fitted :class:`~deepfm.Bundle`; ``bundle_.metrics``
    holds the validation AUC and the per-epoch history).

    Pickling (which ``joblib`` and parallel grid searches use) keeps the bundle's files, not
    torch objects; to keep a model, ``save`` / ``load`` the bundle instead.
    """

    def __init__(
        self,
        *,
        fields: dict[str, Any] | None = None,
        kind: str = _MODEL.kind,
        embedding_dim: int = _MODEL.embedding_dim,
        hidden: tuple[int, ...] = _MODEL.hidden,
        activation: str = _MODEL.activation,
        dropout: float = _MODEL.dropout,
        batch_norm: bool | Auto = _MODEL.batch_norm,
        init_std: float | Auto = _MODEL.init_std,
        cross_layers: int = _MODEL.cross_layers,
        epochs: int = _TRAIN.epochs,
        batch_size: int | Auto = _TRAIN.batch_size,
        lr: float = _TRAIN.lr,
        embedding_lr: float | Auto = _TRAIN.embedding_lr,
        l2_embedding: float = _TRAIN.l2_embedding,
        weight_decay: float = _TRAIN.weight_decay,
        patience: int = _TRAIN.patience,
        lr_decay: float = _TRAIN.lr_decay,
        reset_embeddings: bool | Auto = _TRAIN.reset_embeddings,
        min_count: int | Auto = "auto",
        validation_fraction: float = 0.1,
        seed: int = _TRAIN.seed,
        device: str = _TRAIN.device,
        threads: int = _TRAIN.threads,
        verbose: bool = False,
        track: str | list[str] | None = None,
    ) -> None:
        # scikit-learn's contract: store every argument as given; fit validates them.
        self.fields = fields
        self.kind = kind
        self.embedding_dim = embedding_dim
        self.hidden = hidden
        self.activation = activation
        self.dropout = dropout
        self.batch_norm = batch_norm
        self.init_std = init_std
        self.cross_layers = cross_layers
        self.epochs = epochs
        self.batch_size = batch_size
        self.lr = lr
        self.embedding_lr = embedding_lr
        self.l2_embedding = l2_embedding
        self.weight_decay = weight_decay
        self.patience = patience
        self.lr_decay = lr_decay
        self.reset_embeddings = reset_embeddings
        self.min_count = min_count
        self.validation_fraction = validation_fraction
        self.seed = seed
        self.device = device
        self.threads = threads
        self.verbose = verbose
        self.track = track

    # ------------------------------------------------------------ fit
    def fit(self, X: Any, y: Any, eval_set: Any = None) -> DeepFMClassifier:
        """Fit on X (N rows) and y (N,). ``eval_set``: ``(X_valid, y_valid)`` (or a list holding
        one such pair) for early stopping on its AUC, in place of ``validation_fraction``."""
        model_config, train_config = self._model_config(), self._train_config()  # bad parameters fail first
        table, named = to_table(X, "X")
        shape = tuple(getattr(X, "shape", None) or table.shape)  # a table of no columns has no rows
        # Worded as scikit-learn's own checks word it, which its estimator checks look for.
        if shape[1] == 0:
            raise DataError(f"X has 0 feature(s) (shape={shape}) while a minimum of 1 is required.")
        if shape[0] == 0:
            raise DataError(f"X has 0 sample(s) (shape={shape}) while a minimum of 1 is required.")
        labels, classes = fit_labels(y, table.num_rows)
        valid: tuple[pa.Table, np.ndarray] | None = None
        if eval_set is not None:
            vx, vy = eval_pair(eval_set)
            vtable = align(to_table(vx, "eval_set X"), table.column_names, named, "eval_set X")
            valid = vtable, encode_labels(vy, vtable.num_rows, classes, "eval_set y")
        schema = self._schema(table, [] if valid is None else [valid[0]])
        config = RunConfig(schema=schema, model=model_config, train=train_config, track=self.track)  # type: ignore[arg-type]
        if valid is None:
            (table, labels), valid = holdout(table, labels, self._validation_fraction(), config.train.seed)
        with tempfile.TemporaryDirectory(prefix="deepfm-fit-") as tmp:
            data = write_parquet(Path(tmp) / "train.parquet", table, labels, schema)
            valid_path = None if valid is None else write_parquet(Path(tmp) / "valid.parquet", *valid, schema)
            # Without validation rows, train on them all: "1,0" is a split with an empty valid part.
            split = None if valid_path is not None else (1.0, 0.0, 0.0)
            bundle = train(config, data, Path(tmp) / "model", valid=valid_path, split=split, cache=False)
        bundle.path = None  # the temporary folder is gone; the bundle lives in memory
        self._set_fitted(bundle, classes, table.column_names if named else None, table.num_columns)
        return self

    def _set_fitted(self, bundle: Bundle, classes: np.ndarray, names: list[str] | None, n_features: int) -> None:
        self.bundle_ = bundle
        self.classes_ = classes
        self.n_features_in_ = n_features
        if names is not None:
            self.feature_names_in_ = np.asarray(names, dtype=object)
        elif hasattr(self, "feature_names_in_"):
            del self.feature_names_in_  # a refit on an array has no names

    def _model_config(self) -> ModelConfig:
        hidden = (self.hidden,) if isinstance(self.hidden, int) else tuple(self.hidden)
        return ModelConfig(
            kind=self.kind,
            embedding_dim=self.embedding_dim,
            hidden=hidden,
            activation=self.activation,
            dropout=self.dropout,
            batch_norm=self.batch_norm,
            init_std=self.init_std,
            cross_layers=self.cross_layers,
        )

    def _train_config(self) -> TrainConfig:
        return TrainConfig(
            epochs=self.epochs,
            batch_size=self.batch_size,
            lr=self.lr,
            embedding_lr=self.embedding_lr,
            l2_embedding=self.l2_embedding,
            weight_decay=self.weight_decay,
            patience=self.patience,
            lr_decay=self.lr_decay,
            reset_embeddings=self.reset_embeddings,
            seed=self.seed,
            device=self.device,
            threads=self.threads,
            progress=bool(self.verbose),
        )

    def _validation_fraction(self) -> float:
        f = self.validation_fraction
        if isinstance(f, bool) or not isinstance(f, (int, float)) or not 0 <= f < 1:
            raise ConfigError(f"validation_fraction must be a number in [0, 1), got {f!r}")
        return float(f)

    def _schema(self, table: pa.Table, others: list[pa.Table]) -> Schema:
        """Field specs for every column of ``table``: inferred, then ``fields`` overrides.
        ``others`` (the eval set) share the columns; a list separator must suit them too."""
        overrides = self.fields or {}
        if not isinstance(overrides, dict):
            raise ConfigError(f"fields must be a dict {{column: kind or options}}, got {type(overrides).__name__}")
        unknown = [c for c in overrides if c not in table.column_names]
        if unknown:
            raise ConfigError(f"fields names column(s) {unknown} that X lacks; X has {table.column_names}")
        specs = [
            self._field(name, [table.column(name), *(t.column(name) for t in others)], overrides.get(name))
            for name in table.column_names
        ]
        label = "label"
        while label in table.column_names:  # the label column of the temporary file
            label = f"_{label}_"
        return Schema(label=label, fields=tuple(specs))

    def _field(self, name: str, columns: list[pa.ChunkedArray], override: Any) -> FieldSpec:
        """One column's spec. ``columns``: its values in X, then in the eval set."""
        kind_of_type = default_kind(columns[0].type)
        options: dict[str, Any] = {"min_count": self.min_count}
        if isinstance(override, FieldSpec):
            options.update({k: v for k, v in override.to_dict().items() if k != "name"})
        elif isinstance(override, dict):
            options.update(override)
        elif isinstance(override, str):
            options["kind"] = override
        elif override is not None:
            raise ConfigError(
                f"fields[{name!r}]: expected a kind {list(KINDS)} or a dict of field options, got {override!r}"
            )
        if kind_of_type is None and "kind" not in options:
            raise ConfigError(
                f"column {name!r} has Arrow type {columns[0].type}, which has no default kind; "
                f"convert it or name its kind with fields={{{name!r}: 'categorical'}}"
            )
        if kind_of_type == "multi_hot":
            if options.setdefault("kind", "multi_hot") != "multi_hot":
                raise ConfigError(
                    f"column {name!r} holds lists: it can only be a multi_hot field, not {options['kind']!r}"
                )
            options["separator"] = list_separator(name, columns, options.get("separator"))
        else:
            # The rules files get (deepfm.schema_inference), on X's values: kind, binning, separator.
            guess = guess_field(name, columns[0]).spec
            if options.setdefault("kind", guess.kind) == guess.kind == "numeric":
                options.setdefault("binning", guess.binning)
            elif options["kind"] == "numeric" and not {"mode", "binning"} & options.keys():
                options["binning"] = "log" if integral(columns[0]) else "quantile"
            elif options["kind"] == guess.kind == "multi_hot":
                options.setdefault("separator", guess.separator)
        return FieldSpec.from_dict({**options, "name": name}, where=f"fields[{name!r}]")

    # ------------------------------------------------------------ predict
    def predict_proba(self, X: Any) -> np.ndarray:
        """Class probabilities. -> (N, 2) float64: columns follow ``classes_``."""
        p = self._positive_proba(X)
        return np.column_stack([1.0 - p, p])

    def predict(self, X: Any) -> np.ndarray:
        """The more probable class of each row. -> (N,) of ``classes_``'s type"""
        p = self._positive_proba(X)  # first: it checks that the model is fitted
        return self.classes_[(p > 0.5).astype(np.intp)]

    def score(self, X: Any, y: Any, sample_weight: Any = None) -> float:
        """ROC AUC of ``predict_proba(X)[:, 1]`` against y (the usual CTR model measure)."""
        p = self._positive_proba(X)
        truth = encode_labels(y, len(p), self.classes_, "y")
        if np.unique(truth).size < 2:
            raise DataError("y holds a single class: AUC needs rows of both classes")
        return float(roc_auc_score(truth, p, sample_weight=sample_weight))

    def _positive_proba(self, X: Any) -> np.ndarray:
        """P(classes_[1]) for each row. -> (N,) float64"""
        check_is_fitted(self, "bundle_")
        table, named = to_table(X, "X")
        schema = self.bundle_.config.schema
        table = align((table, named), schema.names, hasattr(self, "feature_names_in_"), "X")
        return self.bundle_.predict(join_lists(table, schema, self.bundle_))

    # ------------------------------------------------------------ keep
    def save(self, folder: str | Path) -> Path:
        """Write the model as a bundle (safetensors + JSON), the recommended way to keep it;
        ``estimator.json`` beside it holds the classes, feature names and parameters."""
        check_is_fitted(self, "bundle_")
        return self.bundle_.save(folder, extra={ESTIMATOR_FILE: self._estimator_json()})

    @classmethod
    def load(cls, folder: str | Path, device: str = "cpu") -> DeepFMClassifier:
        """A fitted classifier from a folder written by :meth:`save`."""
        bundle = Bundle.load(folder, device=device)  # checks every file against the manifest
        path = Path(folder) / ESTIMATOR_FILE
        if not path.is_file():
            raise BundleError(
                f"{folder}: no {ESTIMATOR_FILE}, so not saved by DeepFMClassifier.save; use deepfm.Bundle.load"
            )
        try:
            meta = json.loads(path.read_text())
            params = dict(meta["params"])
            params["hidden"] = tuple(params["hidden"]) if isinstance(params["hidden"], list) else params["hidden"]
            est = cls(**params)
            classes = np.asarray(
                meta["classes"], dtype=object if meta["classes_dtype"] == "object" else meta["classes_dtype"]
            )
            est._set_fitted(bundle, classes, meta["feature_names_in"], int(meta["n_features_in"]))
        except (KeyError, TypeError, ValueError) as exc:
            raise BundleError(f"{path}: not what DeepFMClassifier.save writes ({exc!r})") from None
        bundle.path = Path(folder)
        return est

    def _estimator_json(self) -> bytes:
        params = self.get_params()
        if isinstance(params["fields"], dict):
            params["fields"] = {k: v.to_dict() if isinstance(v, FieldSpec) else v for k, v in params["fields"].items()}
        params["hidden"] = list(params["hidden"]) if not isinstance(params["hidden"], int) else params["hidden"]
        names = getattr(self, "feature_names_in_", None)
        meta = {
            "classes": self.classes_.tolist(),
            "classes_dtype": str(self.classes_.dtype),
            "feature_names_in": None if names is None else [str(n) for n in names],
            "n_features_in": self.n_features_in_,
            "params": params,
        }
        return json.dumps(meta, indent=1).encode()

    def __getstate__(self) -> dict[str, Any]:
        # Pickle the bundle's files (JSON, Arrow, safetensors bytes), never torch objects.
        state = dict(super().__getstate__())  # a copy: object's state is the live __dict__
        bundle = state.pop("bundle_", None)
        if bundle is not None:
            state["_bundle_files"] = _bundle_files(bundle)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        state = dict(state)
        files = state.pop("_bundle_files", None)
        super().__setstate__(state)
        if files is not None:
            self.bundle_ = _bundle_from_files(files)

    def __sklearn_tags__(self) -> Any:
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = True  # a missing value has its own learned row
        tags.input_tags.categorical = True
        tags.input_tags.string = True
        tags.classifier_tags.multi_class = False
        return tags


def _bundle_files(bundle: Bundle) -> dict[str, bytes]:
    """The bundle's files as bytes: what a pickle of the estimator holds."""
    path = bundle.path
    with tempfile.TemporaryDirectory(prefix="deepfm-pickle-") as tmp:
        bundle.save(tmp)
        files = {p.name: p.read_bytes() for p in Path(tmp).iterdir() if p.is_file()}
    bundle.path = path  # saving to a temporary folder does not move the model
    return files


def _bundle_from_files(files: dict[str, bytes]) -> Bundle:
    with tempfile.TemporaryDirectory(prefix="deepfm-pickle-") as tmp:
        for name, content in files.items():
            (Path(tmp) / Path(name).name).write_bytes(content)
        bundle = Bundle.load(tmp)  # reads everything into memory, checking the manifest
    bundle.path = None
    return bundle
