"""deepfm 0.1's ``deepfm.metrics``, kept for one release: its names now live in deepfm.util.metrics."""

from deepfm._deprecated import deprecated_module

deprecated_module(__name__, "deepfm.util.metrics")

from deepfm.util.metrics import EPS, auc, calibration, logloss, roc_curve, summary

__all__ = ["EPS", "auc", "calibration", "logloss", "roc_curve", "summary"]
