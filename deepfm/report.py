"""deepfm 0.1's ``deepfm.report``, kept for one release: its names now live in deepfm.analysis.report."""

from deepfm._deprecated import deprecated_module

deprecated_module(__name__, "deepfm.analysis.report")

from deepfm.analysis.report import STYLE, build_report, write_report

__all__ = ["STYLE", "build_report", "write_report"]
