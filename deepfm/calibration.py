"""deepfm 0.1's ``deepfm.calibration``, kept for one release: its names now live in deepfm.model.calibration."""

from deepfm._deprecated import deprecated_module

deprecated_module(__name__, "deepfm.model.calibration")

from deepfm.model.calibration import FILE, METHODS, Calibration, describe, fit, fit_platt, postprocess

__all__ = ["Calibration", "FILE", "METHODS", "describe", "fit", "fit_platt", "postprocess"]
