"""The scikit-learn estimator (``pip install 'deepfm[sklearn]'``): ``deepfm.DeepFMClassifier``
trains and predicts with the library's own train and Bundle, on DataFrames and arrays."""

from deepfm._deprecated import moved_names
from deepfm.estimator.classifier import DeepFMClassifier

__all__ = ["DeepFMClassifier"]

# deepfm 0.1's deepfm.estimator module held its constants too.
__getattr__ = moved_names(
    __name__, {"ESTIMATOR_FILE": "deepfm.estimator.classifier", "SEPARATORS": "deepfm.estimator.tables"}
)
