"""deepfm 0.1's ``deepfm.optim``, kept for one release: its names now live in deepfm.model.optim."""

from deepfm._deprecated import deprecated_module

deprecated_module(__name__, "deepfm.model.optim")

from deepfm.model.optim import RowAdam, deterministic

__all__ = ["RowAdam", "deterministic"]
