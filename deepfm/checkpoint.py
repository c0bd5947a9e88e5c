"""deepfm 0.1's ``deepfm.checkpoint``, kept for one release: its names now live in deepfm.training and deepfm.util."""

from deepfm._deprecated import deprecated_module

deprecated_module(__name__, "deepfm.training and deepfm.util")

from deepfm.training.checkpoint import CHECKPOINT, load_checkpoint, save_checkpoint
from deepfm.training.inputs import RUN
from deepfm.util.files import atomic_path, write_atomic

__all__ = ["CHECKPOINT", "RUN", "atomic_path", "load_checkpoint", "save_checkpoint", "write_atomic"]
