"""Raw values to model inputs: the FeaturePipeline (vocabularies, numeric statistics, bins,
hashing), fitted on the training rows and saved as JSON + Arrow."""

from deepfm._deprecated import moved_names
from deepfm.features.pipeline import FIRST_VALUE, MISSING, OOV, FeaturePipeline, FieldState

__all__ = ["FIRST_VALUE", "MISSING", "OOV", "FeaturePipeline", "FieldState"]

# deepfm 0.1's deepfm.features module held the encoded chunk and the spill budget too.
__getattr__ = moved_names(__name__, {"EncodedChunk": "deepfm.data.encoded", "SPILL_MEMORY": "deepfm.features.counting"})
