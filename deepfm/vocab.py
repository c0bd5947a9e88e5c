"""deepfm 0.1's ``deepfm.vocab``, kept for one release: its names now live in deepfm.features.vocab."""

from deepfm._deprecated import deprecated_module

deprecated_module(__name__, "deepfm.features.vocab")

from deepfm.features.vocab import DECAY, grow_vocabulary

__all__ = ["DECAY", "grow_vocabulary"]
