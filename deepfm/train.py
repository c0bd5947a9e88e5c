"""deepfm 0.1's ``deepfm.train``, kept for one release: its names now live in deepfm.training."""

from deepfm._deprecated import deprecated_module

deprecated_module(__name__, "deepfm.training")

from deepfm.training.cache import CACHE_FORMAT, default_cache_dir, prepare_cached
from deepfm.training.checkpoint import EPOCH_ORDER
from deepfm.training.distributed import resolve_device
from deepfm.training.inputs import check_resume, check_start, parse_split
from deepfm.training.job import MIN_CALIBRATION_ROWS, calibrate_on_valid, resume, train
from deepfm.training.parts import Parts, prepare
from deepfm.training.progress import CURVE_POINTS, TRAIN_METRIC_ROWS, History
from deepfm.training.stopping import OVERFIT_DROP
from deepfm.training.trainer import Trainer

__all__ = [
    "CACHE_FORMAT",
    "CURVE_POINTS",
    "EPOCH_ORDER",
    "History",
    "MIN_CALIBRATION_ROWS",
    "OVERFIT_DROP",
    "Parts",
    "TRAIN_METRIC_ROWS",
    "Trainer",
    "calibrate_on_valid",
    "check_resume",
    "check_start",
    "default_cache_dir",
    "parse_split",
    "prepare",
    "prepare_cached",
    "resolve_device",
    "resume",
    "train",
]
