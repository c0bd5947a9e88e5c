"""Raw values to model inputs: the FeaturePipeline (vocabularies, numeric statistics, bins,
hashing), fitted on the training rows and saved as JSON + Arrow."""

from deepfm.features.pipeline import FIRST_VALUE, MISSING, OOV, EncodedChunk, FeaturePipeline, FieldState

__all__ = ["FIRST_VALUE", "MISSING", "OOV", "EncodedChunk", "FeaturePipeline", "FieldState"]
