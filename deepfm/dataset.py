"""deepfm 0.1's ``deepfm.dataset``, kept for one release: its names now live in deepfm.data.encoded."""

from deepfm._deprecated import deprecated_module

deprecated_module(__name__, "deepfm.data.encoded")

from deepfm.data.encoded import SHUFFLE_BLOCK, Batch, DatasetWriter, EncodedDataset, EpochOrder

__all__ = ["Batch", "DatasetWriter", "EncodedDataset", "EpochOrder", "SHUFFLE_BLOCK"]
