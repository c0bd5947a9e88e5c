"""deepfm 0.1's ``deepfm.layers``, kept for one release: its names now live in deepfm.config and deepfm.model."""

from deepfm._deprecated import deprecated_module

deprecated_module(__name__, "deepfm.config and deepfm.model")

from deepfm.config import ACTIVATIONS
from deepfm.model.layers import MLP, CrossNetwork, FieldEmbedding, fm_pairwise, pool_bags, scale_numeric

__all__ = ["ACTIVATIONS", "CrossNetwork", "FieldEmbedding", "MLP", "fm_pairwise", "pool_bags", "scale_numeric"]
