"""deepfm 0.1's ``deepfm.synth``, kept for one release: its names now live in deepfm.data."""

from deepfm._deprecated import deprecated_module

deprecated_module(__name__, "deepfm.data")

from deepfm.data.schema import CRITEO_COLUMNS
from deepfm.data.synth import SynthResult, generate_table, truth_path_for, write_synth
from deepfm.data.synth_world import (
    BLOCK_ROWS,
    CATEGORICAL_SPECS,
    CHURN_MIN_CARD,
    DAY_BIAS_SHIFT,
    DAY_CHURN,
    EMBED_DIM,
    MLP_HIDDEN,
    NUM_CATEGORICAL,
    NUM_NUMERIC,
    NUMERIC_SPECS,
    RANK_POWER,
    RANK_R0,
    TARGET_CTR,
)

__all__ = [
    "BLOCK_ROWS",
    "CATEGORICAL_SPECS",
    "CHURN_MIN_CARD",
    "CRITEO_COLUMNS",
    "DAY_BIAS_SHIFT",
    "DAY_CHURN",
    "EMBED_DIM",
    "MLP_HIDDEN",
    "NUMERIC_SPECS",
    "NUM_CATEGORICAL",
    "NUM_NUMERIC",
    "RANK_POWER",
    "RANK_R0",
    "SynthResult",
    "TARGET_CTR",
    "generate_table",
    "truth_path_for",
    "write_synth",
]
