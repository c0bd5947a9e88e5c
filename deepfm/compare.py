"""deepfm 0.1's ``deepfm.compare``, kept for one release: its names now live in deepfm.training.compare."""

from deepfm._deprecated import deprecated_module

deprecated_module(__name__, "deepfm.training.compare")

from deepfm.training.compare import compare, to_markdown

__all__ = ["compare", "to_markdown"]
