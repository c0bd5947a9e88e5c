"""DeepFMClassifier: the scikit-learn estimator over pandas / polars DataFrames, Arrow tables
and 2-D arrays.

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
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

try:
    from sklearn.base import BaseEstimator, ClassifierMixin
    from sklearn.metrics import roc_auc_score
    from sklearn.utils.multiclass import check_classification_targets
    from sklearn.utils.validation import check_is_fitted, column_or_1d
except ImportError as exc:  # the estimator is optional: `import deepfm` works without it
    raise ImportError("deepfm.DeepFMClassifier needs scikit-learn: pip install 'deepfm[sklearn]'") from exc

from deepfm.bundle import Bundle
from deepfm.config import RunConfig, TrainConfig
from deepfm.errors import BundleError, ConfigError, DataError
from deepfm.io import as_table
from deepfm.model import ModelConfig
from deepfm.schema import KINDS, FieldSpec, Schema
from deepfm.schema_inference import guess_field
from deepfm.train import train

ESTIMATOR_FILE = "estimator.json"  # classes, feature names and parameters, beside the bundle
# Tried in order for list columns; the pipeline trims whitespace around tokens, so no spaces.
SEPARATORS = ("|", ";", ",", "/", "\x1f", "\x1e", "\x1d", "\x1c")
_MODEL, _TRAIN = ModelConfig(), TrainConfig()


class DeepFMClassifier(ClassifierMixin, BaseEstimator):
    """A DeepFM click-through-rate model with the scikit-learn estimator contract.

    Binary: ``y`` holds two classes (0/1, False/True or two strings); ``classes_[1]`` is the
    positive class. Missing values in X (NaN, None, null) are learned as missing.

    Parameters mirror :class:`~deepfm.ModelConfig` (kind, embedding_dim, hidden, activation,
    dropout, batch_norm, cross_layers) and :class:`~deepfm.TrainConfig` (epochs, batch_size,
    lr, embedding_lr, l2_embedding, weight_decay, patience, lr_decay, seed, device, threads),
    plus:

    fields : dict, optional
        Overrides of the inferred column kinds: ``{column: kind}`` or ``{column: {...}}`` with
        :class:`~deepfm.FieldSpec` options (``{"kind": "numeric", "mode": "scaled"}``).
    min_count : int
        Values seen fewer times in training share their field's OOV row (inferred fields).
    validation_fraction : float
        Without ``eval_set``, this stratified random share of the rows is held out for early
        stopping; 0 trains on every row for ``epochs`` epochs.
    verbose : bool
        Show a progress bar while training.
    track : str or list of str, optional
        Track each fit in ``"tensorboard:DIR"`` or ``"mlflow[:URI]"`` (:mod:`deepfm.tracking`;
        ``pip install deepfm[track]``).

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
        batch_norm: bool | str = _MODEL.batch_norm,
        cross_layers: int = _MODEL.cross_layers,
        epochs: int = _TRAIN.epochs,
        batch_size: int | str = _TRAIN.batch_size,
        lr: float = _TRAIN.lr,
        embedding_lr: float | str = _TRAIN.embedding_lr,
        l2_embedding: float = _TRAIN.l2_embedding,
        weight_decay: float = _TRAIN.weight_decay,
        patience: int = _TRAIN.patience,
        lr_decay: float = _TRAIN.lr_decay,
        min_count: int = 2,
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
        self.cross_layers = cross_layers
        self.epochs = epochs
        self.batch_size = batch_size
        self.lr = lr
        self.embedding_lr = embedding_lr
        self.l2_embedding = l2_embedding
        self.weight_decay = weight_decay
        self.patience = patience
        self.lr_decay = lr_decay
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
        table, named = _to_table(X, "X")
        shape = tuple(getattr(X, "shape", None) or table.shape)  # a table of no columns has no rows
        # Worded as scikit-learn's own checks word it, which its estimator checks look for.
        if shape[1] == 0:
            raise DataError(f"X has 0 feature(s) (shape={shape}) while a minimum of 1 is required.")
        if shape[0] == 0:
            raise DataError(f"X has 0 sample(s) (shape={shape}) while a minimum of 1 is required.")
        labels, classes = _fit_labels(y, table.num_rows)
        valid: tuple[pa.Table, np.ndarray] | None = None
        if eval_set is not None:
            vx, vy = _eval_pair(eval_set)
            vtable = _align(_to_table(vx, "eval_set X"), table.column_names, named, "eval_set X")
            valid = vtable, _encode_labels(vy, vtable.num_rows, classes, "eval_set y")
        schema = self._schema(table, [] if valid is None else [valid[0]])
        config = RunConfig(schema=schema, model=model_config, train=train_config, track=self.track)  # type: ignore[arg-type]
        if valid is None:
            (table, labels), valid = _holdout(table, labels, self._validation_fraction(), config.train.seed)
        with tempfile.TemporaryDirectory(prefix="deepfm-fit-") as tmp:
            data = _write(Path(tmp) / "train.parquet", table, labels, schema)
            valid_path = None if valid is None else _write(Path(tmp) / "valid.parquet", *valid, schema)
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
            kind=self.kind, embedding_dim=self.embedding_dim, hidden=hidden, activation=self.activation,
            dropout=self.dropout, batch_norm=self.batch_norm, cross_layers=self.cross_layers,
        )  # fmt: skip

    def _train_config(self) -> TrainConfig:
        return TrainConfig(
            epochs=self.epochs, batch_size=self.batch_size, lr=self.lr, embedding_lr=self.embedding_lr,
            l2_embedding=self.l2_embedding, weight_decay=self.weight_decay, patience=self.patience,
            lr_decay=self.lr_decay, seed=self.seed, device=self.device, threads=self.threads,
            progress=bool(self.verbose),
        )  # fmt: skip

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
        kind_of_type = _kind(columns[0].type)
        options: dict[str, Any] = {"min_count": self.min_count}
        if isinstance(override, FieldSpec):
            options.update({k: v for k, v in override.to_dict().items() if k != "name"})
        elif isinstance(override, dict):
            options.update(override)
        elif isinstance(override, str):
            options["kind"] = override
        elif override is not None:
            raise ConfigError(f"fields[{name!r}]: expected a kind {list(KINDS)} or a dict of field options, got {override!r}")
        if kind_of_type is None and "kind" not in options:
            raise ConfigError(
                f"column {name!r} has Arrow type {columns[0].type}, which has no default kind; "
                f"convert it or name its kind with fields={{{name!r}: 'categorical'}}"
            )
        if kind_of_type == "multi_hot":
            if options.setdefault("kind", "multi_hot") != "multi_hot":
                raise ConfigError(f"column {name!r} holds lists: it can only be a multi_hot field, not {options['kind']!r}")
            options["separator"] = _separator(name, columns, options.get("separator"))
        else:
            # The rules files get (deepfm.schema_inference), on X's values: kind, binning, separator.
            guess = guess_field(name, columns[0]).spec
            if options.setdefault("kind", guess.kind) == guess.kind == "numeric":
                options.setdefault("binning", guess.binning)
            elif options["kind"] == "numeric" and not {"mode", "binning"} & options.keys():
                options["binning"] = "log" if _integral(columns[0]) else "quantile"
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
        truth = _encode_labels(y, len(p), self.classes_, "y")
        if np.unique(truth).size < 2:
            raise DataError("y holds a single class: AUC needs rows of both classes")
        return float(roc_auc_score(truth, p, sample_weight=sample_weight))

    def _positive_proba(self, X: Any) -> np.ndarray:
        """P(classes_[1]) for each row. -> (N,) float64"""
        check_is_fitted(self, "bundle_")
        table, named = _to_table(X, "X")
        schema = self.bundle_.config.schema
        table = _align((table, named), schema.names, hasattr(self, "feature_names_in_"), "X")
        return self.bundle_.predict(_join_lists(table, schema, self.bundle_))

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
            raise BundleError(f"{folder}: no {ESTIMATOR_FILE}, so not saved by DeepFMClassifier.save; use deepfm.Bundle.load")
        try:
            meta = json.loads(path.read_text())
            params = dict(meta["params"])
            params["hidden"] = tuple(params["hidden"]) if isinstance(params["hidden"], list) else params["hidden"]
            est = cls(**params)
            classes = np.asarray(meta["classes"], dtype=object if meta["classes_dtype"] == "object" else meta["classes_dtype"])
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


# ---------------------------------------------------------------- inputs
def _to_table(X: Any, what: str) -> tuple[pa.Table, bool]:
    """X as an Arrow table with plain types, and whether its column names are real names
    (a DataFrame's or table's string names; arrays get x0, x1, ...)."""
    module = type(X).__module__
    if module.startswith("scipy.sparse") or hasattr(X, "tocsr"):
        raise TypeError(f"{what}: sparse matrices are not supported; pass a DataFrame, an Arrow table or a dense array")
    if module.startswith(("pandas", "polars")) and type(X).__name__ != "DataFrame":
        raise ValueError(f"{what}: expected 2-D data (a DataFrame), got a {type(X).__name__}. Reshape your data")
    if isinstance(X, (pa.Table, pa.RecordBatch)) or module.startswith("polars"):
        table, named = as_table(X), True
    elif module.startswith("pandas"):
        named = all(isinstance(c, str) for c in X.columns)
        table = _from_pandas(X, what)
    else:
        table, named = _from_array(X, what), False
    if not named:
        table = table.rename_columns([f"x{i}" for i in range(table.num_columns)])
    dupes = sorted({c for c in table.column_names if table.column_names.count(c) > 1})
    if dupes:
        raise DataError(f"{what} names columns more than once: {dupes}")
    return pa.table([_plain(c) for c in table.columns], names=table.column_names), named


def _from_pandas(df: Any, what: str) -> pa.Table:
    try:
        return as_table(df)
    except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
        for name in df.columns:  # error path only: find the column Arrow could not convert
            try:
                pa.array(df[name], from_pandas=True)
            except (pa.ArrowInvalid, pa.ArrowTypeError) as col_exc:
                raise _mixed_types(df[name].tolist(), str(name), what, col_exc) from None
        raise DataError(f"{what}: cannot convert the DataFrame to Arrow ({exc})") from None


def _from_array(X: Any, what: str) -> pa.Table:
    arr = np.asarray(X)
    if np.iscomplexobj(arr):
        raise ValueError(f"{what}: Complex data not supported")
    if arr.ndim != 2:
        raise ValueError(
            f"{what}: expected 2-D data (a DataFrame, an Arrow table or a 2-D array), got {arr.ndim}-D. "
            "Reshape your data, e.g. with array.reshape(-1, 1) for a single feature"
        )
    columns = []
    for j in range(arr.shape[1]):
        try:
            columns.append(pa.array(arr[:, j], from_pandas=True))  # from_pandas: NaN in objects is null
        except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
            raise _mixed_types(arr[:, j].tolist(), f"x{j}", what, exc) from None
    return pa.table(columns, names=[f"x{j}" for j in range(arr.shape[1])])


def _mixed_types(values: list[Any], name: str, what: str, exc: Exception) -> DataError:
    """The error for a column Arrow cannot convert: the first record whose type differs from
    the column's first value (text among numbers, say)."""
    def sort(v: Any) -> str:
        is_number = isinstance(v, (int, float, np.number)) and not isinstance(v, (bool, np.bool_))
        return "a number" if is_number else "text" if isinstance(v, str) else type(v).__name__

    present = [(i, v) for i, v in enumerate(values) if not _is_missing(v)]
    for i, v in present:
        if sort(v) != sort(present[0][1]):
            return DataError(f"{what}: expected {sort(present[0][1])} as in record {present[0][0]}, got {v!r}", line=f"record {i}", field=name)
    return DataError(f"{what}: cannot convert the column ({exc})", field=name)


def _plain(col: pa.ChunkedArray) -> pa.ChunkedArray:
    """Types the pipeline reads: categoricals decoded, large and view strings as strings,
    decimals as floats; list columns keep their lists (joined later, see ``_join_lists``)."""
    t = col.type
    if pa.types.is_dictionary(t):
        col, t = col.cast(t.value_type), t.value_type
    if pa.types.is_large_string(t) or _is_string_view(t):
        return col.cast(pa.string())
    if pa.types.is_decimal(t):
        return col.cast(pa.float64())
    return col


def _is_string_view(t: pa.DataType) -> bool:
    return bool(getattr(pa.types, "is_string_view", lambda _: False)(t))


def _is_list(t: pa.DataType) -> bool:
    views = (getattr(pa.types, "is_list_view", None), getattr(pa.types, "is_large_list_view", None))
    plain = pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t)
    return plain or any(f is not None and f(t) for f in views)


def _integral(column: pa.ChunkedArray) -> bool:
    """Every value a whole number (counts: log bins), for a column declared numeric."""
    if not (pa.types.is_integer(column.type) or pa.types.is_floating(column.type)):
        return False
    x = pc.cast(column, pa.float64()).to_numpy(zero_copy_only=False)
    x = x[~np.isnan(x)]
    return bool(x.size) and bool(np.all(x == np.round(x)))


def _kind(t: pa.DataType) -> str | None:
    """The default kind of an Arrow column type; None where there is no sensible one."""
    if pa.types.is_integer(t) or pa.types.is_floating(t):
        return "numeric"
    if pa.types.is_string(t) or pa.types.is_boolean(t) or pa.types.is_null(t):
        return "categorical"
    if _is_list(t) and _is_scalar(t.value_type):
        return "multi_hot"
    return None


def _is_scalar(t: pa.DataType) -> bool:
    """A type whose values read as one token of a list: text, numbers, bools, categoricals."""
    if pa.types.is_dictionary(t):
        t = t.value_type
    return any(
        check(t) for check in (pa.types.is_string, pa.types.is_large_string, _is_string_view, pa.types.is_integer,
                               pa.types.is_floating, pa.types.is_boolean, pa.types.is_null)
    )  # fmt: skip


def _align(data: tuple[pa.Table, bool], names: list[str], fitted_named: bool, what: str) -> pa.Table:
    """``data`` with the training columns ``names``, in that order: by name when both have
    names, by position otherwise (with scikit-learn's warning when only one side has them)."""
    table, named = data
    if named and fitted_named:
        missing = [c for c in names if c not in table.column_names]
        extra = [c for c in table.column_names if c not in names]
        if missing or extra:
            raise DataError(
                f"{what}: the columns differ from those seen in fit: missing {missing}, not seen in fit {extra}"
            )
        return table.select(names)
    if table.num_columns != len(names):
        raise ValueError(f"{what} has {table.num_columns} features, but DeepFMClassifier is expecting {len(names)} features as input")
    if named:
        warnings.warn(f"{what} has feature names, but DeepFMClassifier was fitted without feature names", UserWarning)
    elif fitted_named:
        warnings.warn(f"{what} does not have valid feature names, but DeepFMClassifier was fitted with feature names", UserWarning)
    return table.rename_columns(names)


def _eval_pair(eval_set: Any) -> tuple[Any, Any]:
    """``(X, y)`` or ``[(X, y)]`` (the form other libraries take) -> (X, y)."""
    if isinstance(eval_set, list) and len(eval_set) == 1:
        eval_set = eval_set[0]
    if not isinstance(eval_set, tuple) or len(eval_set) != 2:
        raise ValueError("eval_set must be a pair (X_valid, y_valid) or a list holding one such pair")
    return eval_set


# ---------------------------------------------------------------- labels
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
        missing = np.fromiter((_is_missing(v) for v in arr), dtype=bool, count=len(arr))
    else:
        missing = np.zeros(len(arr), dtype=bool)
    if missing.any():
        i = int(np.flatnonzero(missing)[0])
        raise DataError(f"Input {what} contains NaN or None (first at row {i}): every row needs a label")
    return arr


def _is_missing(v: Any) -> bool:
    if v is None:
        return True
    try:
        return bool(v != v)  # NaN
    except TypeError:  # pandas.NA refuses to be a bool: it is missing
        return True


def _fit_labels(y: Any, n: int) -> tuple[np.ndarray, np.ndarray]:
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


def _encode_labels(y: Any, n: int, classes: np.ndarray, what: str) -> np.ndarray:
    """y as 0/1 against the fitted classes. -> (n,) float64"""
    arr = _label_array(y, n, what)
    known = np.isin(arr, classes)
    if not known.all():
        unseen = sorted({repr(v) for v in arr[~known].tolist()})[:5]
        raise DataError(f"{what} holds label(s) {', '.join(unseen)} not seen in fit; classes_ = {classes.tolist()}")
    return (arr == classes[1]).astype(np.float64)


def _holdout(
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


# ---------------------------------------------------------------- multi-hot lists
def _separator(name: str, columns: list[pa.ChunkedArray], given: str | None) -> str:
    """A separator that no value of the list column holds (or the given one, checked)."""
    values = [_list_values(chunk) for col in columns for chunk in col.chunks]
    def occurs(sep: str) -> bool:
        return any(pc.any(pc.match_substring(v, sep)).as_py() for v in values if len(v))

    if given is not None:
        if not isinstance(given, str) or not given:
            raise ConfigError(f"fields[{name!r}]: separator must be a non-empty string, got {given!r}")
        if occurs(given):
            raise ConfigError(f"fields[{name!r}]: separator {given!r} occurs in the values of list column {name!r}")
        return given
    for sep in SEPARATORS:
        if not occurs(sep):
            return sep
    raise ConfigError(f"column {name!r}: its list values hold every separator tried {list(SEPARATORS)}; give one with fields")


def _list_values(chunk: pa.Array) -> pa.Array:
    """The elements of a list array chunk as strings, row after row (null lists hold none;
    null elements kept). Integral floats read like integers, so 3.0 and 3 are one value."""
    values = pc.list_flatten(chunk)  # flatten first: casting a list view makes a broken array
    if not pa.types.is_floating(values.type):
        return values.cast(pa.string())
    values = values.cast(pa.float64())
    as_int = pc.cast(values, pa.int64(), safe=False)
    integral = pc.equal(pc.cast(as_int, pa.float64()), values)
    return pc.if_else(integral, pc.cast(as_int, pa.string()), pc.cast(values, pa.string()))


def _join_lists(table: pa.Table, schema: Schema, bundle: Bundle | None = None) -> pa.Table:
    """List columns of multi-hot fields as text joined with the field's separator (the form
    the feature pipeline reads). With a fitted ``bundle``, a list value holding the separator
    (so never seen in training) becomes one unseen token rather than being split in two."""
    for i, name in enumerate(table.column_names):
        col = table.column(name)
        if not _is_list(col.type):
            continue
        spec = schema.field(name)
        joined = []
        for chunk in col.chunks:
            values = pc.fill_null(_list_values(chunk), "")  # a null element is no element
            holds = pc.match_substring(values, spec.separator)
            if pc.any(holds).as_py():
                if bundle is None:
                    raise DataError(f"a list value holds the separator {spec.separator!r}", field=name)
                values = pc.if_else(holds, _unseen_token(bundle.pipeline.states[name].vocab, spec.separator), values)
            # Offsets from the lengths (a null list has none): right for every list layout.
            lengths = pc.fill_null(pc.list_value_length(chunk), 0).to_numpy(zero_copy_only=False)
            offsets = pa.array(np.concatenate([[0], np.cumsum(lengths)]), pa.int64())
            lists = pa.LargeListArray.from_arrays(offsets, values, mask=chunk.is_null())
            joined.append(pc.binary_join(lists, spec.separator))
        table = table.set_column(i, name, pa.chunked_array(joined, pa.string()))
    return table


def _unseen_token(vocab: pa.Array | None, separator: str) -> str:
    """A token that holds no separator and is not in the field's vocabulary: it encodes as OOV."""
    known = set() if vocab is None else set(vocab.to_pylist())
    for i in range(2 * len(known) + 2):
        for token in (f"<unseen {i}>", f"#{i}"):
            if separator not in token and token not in known:
                return token
    raise DataError(f"no token free of the separator {separator!r} outside the vocabulary")


# ---------------------------------------------------------------- files
def _write(path: Path, table: pa.Table, labels: np.ndarray, schema: Schema) -> Path:
    """X (lists joined) and the 0/1 labels as one Parquet file for :func:`deepfm.train`."""
    table = _join_lists(table, schema).append_column(schema.label, pa.array(labels, pa.float64()))
    pq.write_table(table, path)
    return path


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
