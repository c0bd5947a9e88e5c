"""deepfm 0.1's ``deepfm.serve``, kept for one release: its names now live in deepfm.inference.serve."""

from deepfm._deprecated import deprecated_module

deprecated_module(__name__, "deepfm.inference.serve")

from deepfm.inference.serve import (
    OFFLOAD_RECORDS,
    SETTINGS_ENV,
    Batcher,
    RequestError,
    ServeSettings,
    app_from_env,
    create_app,
    load_predictor,
    parse_records,
    serve,
    settle_gc,
)

__all__ = [
    "Batcher",
    "OFFLOAD_RECORDS",
    "RequestError",
    "SETTINGS_ENV",
    "ServeSettings",
    "app_from_env",
    "create_app",
    "load_predictor",
    "parse_records",
    "serve",
    "settle_gc",
]
