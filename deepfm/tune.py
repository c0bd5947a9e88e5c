"""deepfm 0.1's ``deepfm.tune``, kept for one release: its names now live in deepfm.training."""

from deepfm._deprecated import deprecated_module

deprecated_module(__name__, "deepfm.training")

from deepfm.training.compare import to_markdown
from deepfm.training.tune import BATCH_SIZES, EMBEDDING_DIMS, INIT_STDS, METRICS, MIN_COUNTS, suggest, tune

__all__ = ["BATCH_SIZES", "EMBEDDING_DIMS", "INIT_STDS", "METRICS", "MIN_COUNTS", "suggest", "to_markdown", "tune"]
