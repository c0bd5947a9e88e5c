"""From files to a saved Bundle: the run's inputs, preparing and caching the encoded data,
the Trainer, the job around it, data-parallel and sharded training, warm start, compare and
tune."""

from deepfm.training.cache import default_cache_dir, prepare_cached
from deepfm.training.inputs import RunInputs, check_resume, check_start, parse_split
from deepfm.training.job import calibrate_on_valid, resume, run_training, train
from deepfm.training.parts import Parts, prepare
from deepfm.training.progress import History
from deepfm.training.trainer import Trainer

__all__ = [
    "History",
    "Parts",
    "RunInputs",
    "Trainer",
    "calibrate_on_valid",
    "check_resume",
    "check_start",
    "default_cache_dir",
    "parse_split",
    "prepare",
    "prepare_cached",
    "resume",
    "run_training",
    "train",
]
