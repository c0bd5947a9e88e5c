"""deepfm 0.1's ``deepfm.serve``, kept for one release: its names now live in deepfm.inference.serve."""

from deepfm._deprecated import deprecated_module

deprecated_module(__name__, "deepfm.inference.serve")

from deepfm.inference import serve as _serve  # noqa: E402
from deepfm.inference.serve import *  # noqa: E402, F403  (the same names, one list of them)

__all__ = list(_serve.__all__)
