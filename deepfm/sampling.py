"""deepfm 0.1's ``deepfm.sampling``, kept for one release: its names now live in deepfm.data.sampling."""

from deepfm._deprecated import deprecated_module

deprecated_module(__name__, "deepfm.data.sampling")

from deepfm.data.sampling import BLOCK, downsample, keep_mask, offsets_with_end

__all__ = ["BLOCK", "downsample", "keep_mask", "offsets_with_end"]
