"""deepfm 0.1's ``deepfm.explain``, kept for one release: its names now live in deepfm.analysis."""

from deepfm._deprecated import deprecated_module

deprecated_module(__name__, "deepfm.analysis")

from deepfm.analysis.explain import (
    PAIR_BATCH,
    SCALED_BIN,
    SCALED_BINS,
    Combination,
    Drilldown,
    Explanation,
    PartStats,
    explain,
    parse_pair,
)
from deepfm.analysis.report import write_explanation

__all__ = [
    "Combination",
    "Drilldown",
    "Explanation",
    "PAIR_BATCH",
    "PartStats",
    "SCALED_BIN",
    "SCALED_BINS",
    "explain",
    "parse_pair",
    "write_explanation",
]
