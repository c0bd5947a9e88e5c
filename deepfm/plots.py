"""deepfm 0.1's ``deepfm.plots``, kept for one release: its names now live in deepfm.analysis.plots."""

from deepfm._deprecated import deprecated_module

deprecated_module(__name__, "deepfm.analysis.plots")

from deepfm.analysis.plots import (
    DPI,
    LABEL_CHARS,
    decomposition,
    drilldown_heatmap,
    explanation_figures,
    learning_curves,
    pair_heatmap,
    reliability,
    require_matplotlib,
    roc,
)

__all__ = [
    "DPI",
    "LABEL_CHARS",
    "decomposition",
    "drilldown_heatmap",
    "explanation_figures",
    "learning_curves",
    "pair_heatmap",
    "reliability",
    "require_matplotlib",
    "roc",
]
