"""deepfm: DeepFM click-through-rate models (Guo et al., IJCAI 2017) on PyTorch.

    import deepfm
    bundle = deepfm.train(deepfm.RunConfig(schema=deepfm.criteo_schema()), "clicks.tsv", "runs/m",
                          split="0.8,0.1,0.1")
    probs = deepfm.Bundle.load("runs/m").predict([{"I1": 3, "C1": "68fd1e64"}])
"""

from deepfm.bundle import Bundle
from deepfm.config import RunConfig, TrainConfig, load_config
from deepfm.errors import BundleError, ConfigError, DataError, DeepFMError
from deepfm.io import ReadOptions
from deepfm.model import DeepFM, ModelConfig
from deepfm.predict import Predictor, evaluate, predict_file
from deepfm.schema import FieldSpec, Schema, criteo_schema
from deepfm.train import train

__version__ = "0.1.0"
__all__ = [
    "Bundle", "BundleError", "ConfigError", "DataError", "DeepFM", "DeepFMError", "FieldSpec", "ModelConfig",
    "Predictor", "ReadOptions", "RunConfig", "Schema", "TrainConfig", "criteo_schema", "evaluate", "load_config",
    "predict_file", "train",
]  # fmt: skip
