"""deepfm 0.1's ``deepfm.predict``, kept for one release: its names now live in deepfm.features, deepfm.inference and deepfm.scoring."""

from deepfm._deprecated import deprecated_module

deprecated_module(__name__, "deepfm.features, deepfm.inference and deepfm.scoring")

from deepfm.features.records import CheckedRecords, json_type
from deepfm.inference.predictor import Predictor, calibrate, evaluate, open_input, predict_file, scores
from deepfm.scoring import Engine, TorchEngine

__all__ = [
    "CheckedRecords",
    "Engine",
    "Predictor",
    "TorchEngine",
    "calibrate",
    "evaluate",
    "json_type",
    "open_input",
    "predict_file",
    "scores",
]
