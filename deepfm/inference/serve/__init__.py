"""HTTP prediction service: FastAPI on uvicorn, over the Predictor.

    POST /predict        {"records": [{field: value}, ...]}, {"columns": {field: [...]}} or an
                         Arrow IPC stream -> {"probabilities": [...], "model": id}
    GET  /health, /ready, /schema, /metrics, /docs;  POST /admin/reload (with a token)

How a request goes (one module each):

    requests   body -> checked Arrow table (orjson, then column by column; errors name the
               record index and the field, as 4xx JSON)
    batcher    tables of concurrent requests -> one model pass (encode + model, one thread)
    reload     the model being served, replaced by POST /admin/reload or --watch
    metrics    Prometheus counters and histograms;  app/routes  the ASGI app;  run  uvicorn
"""

from deepfm.inference.serve.app import create_app
from deepfm.inference.serve.batcher import Batcher
from deepfm.inference.serve.requests import RequestError, parse_records
from deepfm.inference.serve.routes import OFFLOAD_RECORDS
from deepfm.inference.serve.run import app_from_env, serve
from deepfm.inference.serve.settings import (
    ADMIN_TOKEN_ENV,
    SETTINGS_ENV,
    LoadedModel,
    ServeSettings,
    load_model,
    load_predictor,
    settle_gc,
)

__all__ = [
    "ADMIN_TOKEN_ENV",
    "Batcher",
    "LoadedModel",
    "OFFLOAD_RECORDS",
    "RequestError",
    "SETTINGS_ENV",
    "ServeSettings",
    "app_from_env",
    "create_app",
    "load_model",
    "load_predictor",
    "parse_records",
    "serve",
    "settle_gc",
]
