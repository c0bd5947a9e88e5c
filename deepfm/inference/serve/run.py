"""Running the service: one process (the model loaded here), or uvicorn's worker processes."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from deepfm.errors import ConfigError, require_extra
from deepfm.inference.serve.app import create_app
from deepfm.inference.serve.settings import SETTINGS_ENV, ServeSettings, load_model, settle_gc

log = logging.getLogger("deepfm.serve")
GRACE_SECONDS = 30  # on SIGTERM, how long requests in flight may take to finish


def app_from_env() -> Any:
    """uvicorn's factory in each worker process (``--workers N``): settings from the env."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    settings = ServeSettings.from_json(os.environ[SETTINGS_ENV])
    app = create_app(load_model(settings), settings, access_log=os.environ.get(SETTINGS_ENV + "_ACCESS") == "1")
    settle_gc()
    return app


def serve(
    settings: ServeSettings,
    host: str = "127.0.0.1",
    port: int = 8000,
    workers: int = 1,
    access_log: bool = False,
    log_level: str = "info",
) -> None:
    """Run the service until SIGTERM or SIGINT, then finish the requests in flight. The model
    loads here first, so a bad folder or ONNX file fails with one clear line before any
    worker starts."""
    require_extra("serve", "fastapi", "uvicorn", "orjson", "prometheus_client")
    import uvicorn

    if workers < 1:
        raise ConfigError(f"--workers must be at least 1, got {workers}")
    if not Path(settings.model).exists():
        raise ConfigError(f"{settings.model}: no such model folder")
    first = load_model(settings)
    # deepfm's access log (request id, status, time, model) replaces uvicorn's.
    options: dict[str, Any] = dict(
        host=host, port=port, access_log=False, log_level=log_level, timeout_graceful_shutdown=GRACE_SECONDS
    )
    log.info(
        "serving %s on http://%s:%d (%d worker%s)", first.model_id, host, port, workers, "s" if workers > 1 else ""
    )
    if workers == 1:
        app = create_app(first, settings, access_log=access_log)
        settle_gc()
        uvicorn.run(app, **options)
        return
    del first  # each worker process loads its own
    os.environ[SETTINGS_ENV] = settings.to_json()
    os.environ[SETTINGS_ENV + "_ACCESS"] = "1" if access_log else "0"
    uvicorn.run("deepfm.inference.serve:app_from_env", factory=True, workers=workers, **options)
