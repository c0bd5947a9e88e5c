"""deepfm: DeepFM click-through-rate models (Guo et al., IJCAI 2017) on PyTorch.

    import deepfm
    bundle = deepfm.train(deepfm.RunConfig(schema=deepfm.criteo_schema()), "clicks.tsv", "runs/m",
                          split="0.8,0.1,0.1")
    probs = deepfm.Bundle.load("runs/m").predict([{"I1": 3, "C1": "68fd1e64"}])

``deepfm.DeepFMClassifier`` (scikit-learn estimator on DataFrames) needs ``pip install deepfm[sklearn]``.
"""

from typing import TYPE_CHECKING, Any

from deepfm._version import __version__
from deepfm.bundle import Bundle
from deepfm.config import ModelConfig, RunConfig, TrainConfig, load_config
from deepfm.data.column_split import ColumnSplit
from deepfm.data.schema import FieldSpec, Schema, criteo_schema
from deepfm.data.source import ReadOptions
from deepfm.errors import BundleError, ConfigError, DataError, DeepFMError
from deepfm.inference.predictor import Predictor, evaluate, predict_file
from deepfm.model.deepfm import DeepFM
from deepfm.training.job import resume, train

if TYPE_CHECKING:
    from deepfm.estimator import DeepFMClassifier as DeepFMClassifier


def __getattr__(name: str) -> Any:
    """``deepfm.DeepFMClassifier`` is imported on first use: scikit-learn is an optional extra."""
    if name == "DeepFMClassifier":
        from deepfm.estimator import DeepFMClassifier

        return DeepFMClassifier
    raise AttributeError(f"module 'deepfm' has no attribute {name!r}")


__all__ = [
    "Bundle",
    "BundleError",
    "ColumnSplit",
    "ConfigError",
    "DataError",
    "DeepFM",
    "DeepFMError",
    "FieldSpec",
    "ModelConfig",
    "Predictor",
    "ReadOptions",
    "RunConfig",
    "Schema",
    "TrainConfig",
    "criteo_schema",
    "evaluate",
    "load_config",
    "predict_file",
    "resume",
    "train",
    "__version__",
]
