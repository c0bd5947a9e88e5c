"""The deepfm MLflow model flavor: a bundle as an MLflow pyfunc model (``pip install 'deepfm[track]'``).

    from deepfm.integrations.mlflow import log_model
    uri = log_model(bundle, "model", run_id=run_id, registered_model_name="ctr")
    mlflow.pyfunc.load_model(uri).predict(df)      # the same probabilities as bundle.predict(df)

The model folder holds the bundle's signed files under ``bundle/`` and names this module as
its ``loader_module``: MLflow calls :func:`_load_pyfunc`, which opens the folder with
:meth:`Bundle.load` (every file checked against the manifest). Nothing is pickled, in saving or
in loading: no ``python_model`` object, no cloudpickle. ``mlflow models serve`` (with
``--env-manager local``, or an environment that has deepfm) serves it the same way.

The input signature comes from the schema: numeric fields as double, categorical and
multi-hot fields (values joined by the field's separator) as string, none required (a missing
column is a missing value). The output is one click probability per row.
"""

from __future__ import annotations

import shutil
import tempfile
import warnings
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
from mlflow.models import Model, ModelSignature
from mlflow.types import ColSpec, Schema, TensorSpec

from deepfm._version import __version__
from deepfm.bundle import Bundle
from deepfm.errors import ConfigError

FLAVOR = "deepfm"
DATA = "bundle"  # the bundle's folder inside the model folder


def signature(bundle: Bundle) -> ModelSignature:
    """Input columns from the bundle's schema; output: (N,) float64 probabilities."""
    cols: list[ColSpec | TensorSpec] = [
        ColSpec("double" if f.kind == "numeric" else "string", f.name, required=False)
        for f in bundle.config.schema.fields
    ]
    return ModelSignature(inputs=Schema(cols), outputs=Schema([TensorSpec(np.dtype("float64"), (-1,))]))


def save_model(bundle: Bundle, path: str | Path) -> Path:
    """Write ``bundle`` as an MLflow model folder at ``path`` (which must not exist yet)."""
    with tempfile.TemporaryDirectory(prefix="deepfm-mlflow-") as tmp:
        # Only the bundle's own signed files travel, not a report or drift check beside them.
        data = Path(tmp) / DATA
        source = _saved(bundle, Path(tmp))
        data.mkdir(exist_ok=True)
        for name in [*_signed(source), "manifest.json"]:
            shutil.copy2(source / name, data / name)
        model = Model()
        model.add_flavor(FLAVOR, data=f"data/{DATA}", deepfm_version=__version__, model_id=bundle.model_id)
        with warnings.catch_warnings():  # "no input example": a bundle has no rows to give one
            warnings.filterwarnings("ignore", message=".*input example.*", category=UserWarning)
            mlflow.pyfunc.save_model(
                str(path), loader_module=__name__, data_path=str(data), mlflow_model=model, signature=signature(bundle),
                pip_requirements=[f"deepfm=={__version__}", f"mlflow=={mlflow.__version__}"],
            )  # fmt: skip
    return Path(path)


def log_model(
    bundle: Bundle, artifact_path: str = "model", *, run_id: str | None = None, tracking_uri: str | None = None,
    registered_model_name: str | None = None,
) -> str:  # fmt: skip
    """Log ``bundle`` as a pyfunc model at ``artifact_path`` of run ``run_id`` (default: the
    active run of ``mlflow.start_run``), registering it under ``registered_model_name`` when
    given. Returns the model's URI (``models:/NAME/VERSION`` when registered, else ``runs:/...``)."""
    client = mlflow.MlflowClient(tracking_uri=tracking_uri)
    if run_id is None:
        active = mlflow.active_run()
        if active is None:
            raise ConfigError("log_model needs a run: pass run_id=..., or call it inside mlflow.start_run()")
        run_id = active.info.run_id
    with tempfile.TemporaryDirectory(prefix="deepfm-mlflow-") as tmp:
        save_model(bundle, Path(tmp) / "model")
        client.log_artifacts(run_id, str(Path(tmp) / "model"), artifact_path)
    uri = f"runs:/{run_id}/{artifact_path}"
    if registered_model_name is None:
        return uri
    if not client.search_registered_models(filter_string=f"name = '{registered_model_name}'"):
        client.create_registered_model(registered_model_name)
    source = f"{client.get_run(run_id).info.artifact_uri.rstrip('/')}/{artifact_path}"
    version = client.create_model_version(registered_model_name, source, run_id=run_id)
    return f"models:/{registered_model_name}/{version.version}"


class DeepFMPyfunc:
    """What ``mlflow.pyfunc.load_model`` wraps: probabilities for a DataFrame's rows."""

    def __init__(self, bundle: Bundle) -> None:
        self.bundle = bundle

    def predict(self, model_input: Any, params: dict[str, Any] | None = None) -> np.ndarray:
        """(N,) float64 click probabilities, as :meth:`Bundle.predict` gives them."""
        return self.bundle.predict(model_input)

    def get_raw_model(self) -> Bundle:
        return self.bundle


def _load_pyfunc(path: str) -> DeepFMPyfunc:
    """MLflow's loader hook: ``path`` is the model's ``bundle`` folder, opened with its manifest check."""
    return DeepFMPyfunc(Bundle.load(path))


def _saved(bundle: Bundle, tmp: Path) -> Path:
    """The bundle's folder (saved into ``tmp`` first when it lives only in memory)."""
    if bundle.path is not None and (Path(bundle.path) / "manifest.json").is_file():
        return Path(bundle.path)
    where = bundle.path
    saved = bundle.save(tmp / "unsaved")
    bundle.path = where  # the copy is gone with tmp; the bundle stays as it was
    return saved


def _signed(folder: Path) -> list[str]:
    import json

    return list(json.loads((folder / "manifest.json").read_text())["sha256"])
