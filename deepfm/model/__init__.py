"""The maths: layers, the DeepFM family, the row-wise optimizer and the probability
post-processing. No files, no training loop."""

from deepfm.model.deepfm import MODEL_KINDS, DeepFM, InputLayout, ModelConfig, auto_init_std

__all__ = ["MODEL_KINDS", "DeepFM", "InputLayout", "ModelConfig", "auto_init_std"]
