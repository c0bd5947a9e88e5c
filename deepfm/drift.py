"""deepfm 0.1's ``deepfm.drift``, kept for one release: its names now live in deepfm.analysis and deepfm.features."""

from deepfm._deprecated import deprecated_module

deprecated_module(__name__, "deepfm.analysis and deepfm.features")

from deepfm.analysis.drift import FIELD_METRICS, GLOBAL_METRICS, Threshold, check, load_profile, psi
from deepfm.features.profile import NUMERIC_BINS, PROFILE_FILE, TOP, profile

__all__ = [
    "FIELD_METRICS",
    "GLOBAL_METRICS",
    "NUMERIC_BINS",
    "PROFILE_FILE",
    "TOP",
    "Threshold",
    "check",
    "load_profile",
    "profile",
    "psi",
]
