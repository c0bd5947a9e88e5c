"""deepfm 0.1's ``deepfm.demo``, kept for one release: its names now live in deepfm.cli.demo."""

from deepfm._deprecated import deprecated_module

deprecated_module(__name__, "deepfm.cli.demo")

from deepfm.cli.demo import SPLIT, run_demo

__all__ = ["SPLIT", "run_demo"]
