"""deepfm 0.1's ``deepfm.schema``, kept for one release: its names now live in deepfm.data and deepfm.util."""

from deepfm._deprecated import deprecated_module

deprecated_module(__name__, "deepfm.data and deepfm.util")

from deepfm.data.schema import (
    BINNINGS,
    CRITEO_COLUMNS,
    KINDS,
    NUMERIC_MODES,
    POOLINGS,
    PRESETS,
    TRANSFORMS,
    FieldSpec,
    Kind,
    Schema,
    criteo_schema,
)
from deepfm.util.validation import check_keys, coerce_numbers

__all__ = [
    "BINNINGS",
    "CRITEO_COLUMNS",
    "FieldSpec",
    "KINDS",
    "Kind",
    "NUMERIC_MODES",
    "POOLINGS",
    "PRESETS",
    "Schema",
    "TRANSFORMS",
    "check_keys",
    "coerce_numbers",
    "criteo_schema",
]
