"""deepfm 0.1's ``deepfm.hashing``, kept for one release: its names now live in deepfm.features.hashing."""

from deepfm._deprecated import deprecated_module

deprecated_module(__name__, "deepfm.features.hashing")

from deepfm.features.hashing import FNV_OFFSET, FNV_PRIME, hash64, hashed_ids

__all__ = ["FNV_OFFSET", "FNV_PRIME", "hash64", "hashed_ids"]
