"""The scikit-learn estimator (``pip install 'deepfm[sklearn]'``): ``deepfm.DeepFMClassifier``
trains and predicts with the library's own train and Bundle, on DataFrames and arrays."""

from deepfm.estimator.classifier import DeepFMClassifier

__all__ = ["DeepFMClassifier"]
