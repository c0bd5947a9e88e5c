"""deepfm 0.1's ``deepfm.schema_inference``, kept for one release: its names now live in deepfm.data.schema_inference."""

from deepfm._deprecated import deprecated_module

deprecated_module(__name__, "deepfm.data.schema_inference")

from deepfm.data.schema_inference import (
    HEAVY_TAIL,
    LIST_SEPARATORS,
    LIST_SHARE,
    MIN_REPEATS,
    ROUGHNESS,
    SAMPLE_ROWS,
    SMALL_CODE_SET,
    Guess,
    guess_field,
    infer_fields,
    infer_schema,
    number_field,
    schema_yaml,
)

__all__ = [
    "Guess",
    "HEAVY_TAIL",
    "LIST_SEPARATORS",
    "LIST_SHARE",
    "MIN_REPEATS",
    "ROUGHNESS",
    "SAMPLE_ROWS",
    "SMALL_CODE_SET",
    "guess_field",
    "infer_fields",
    "infer_schema",
    "number_field",
    "schema_yaml",
]
