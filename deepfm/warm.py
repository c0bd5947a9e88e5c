"""deepfm 0.1's ``deepfm.warm``, kept for one release: its names now live in deepfm.training.warm."""

from deepfm._deprecated import deprecated_module

deprecated_module(__name__, "deepfm.training.warm")

from deepfm.training.warm import check_compatible, row_map, warm_start_weights

__all__ = ["check_compatible", "row_map", "warm_start_weights"]
