"""HTTP prediction service: FastAPI on uvicorn, over the Predictor.

    POST /predict   {"records": [{field: value, ...}, ...]}  ->  {"probabilities": [...], "model": id}
    GET  /health    {"status": "ok", "model": id, "engine": "torch"}
    GET  /schema    the fields, their kinds, what each accepts, an example record
    GET  /docs      OpenAPI documentation (/openapi.json)

Records go through ``Predictor.check_records``, the checks of the Python API: a bad request
gets a 4xx JSON error ``{"error": {"type", "message", "record", "field"}}`` naming the
record index and the field, never a traceback. An absent field is a missing value.

Requests that arrive while the model is busy are scored together in one pass (encode + model
in one worker thread): a lone request is scored at once, and under load the fixed cost of a
pass is shared, so a 1-record request stays cheap with many clients.
"""

# No ``from __future__ import annotations`` here: FastAPI reads the route functions'
# annotations (``request: Request``) at runtime, and Request is imported inside create_app.
import asyncio
import gc
import json
import logging
import os
import re
from collections import deque
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from deepfm.errors import ConfigError, DataError, require_extra
from deepfm.features.records import CheckedRecords, json_type
from deepfm.inference.predictor import Predictor

log = logging.getLogger("deepfm.serve")

SETTINGS_ENV = "DEEPFM_SERVE_SETTINGS"  # how uvicorn's worker processes get their settings
OFFLOAD_RECORDS = 256  # larger requests are checked in a thread, so the event loop keeps serving


@dataclass(frozen=True)
class ServeSettings:
    """What a server process needs to build its app (sent to workers as JSON)."""

    model: str
    engine: str = "torch"  # torch | onnx
    onnx: str | None = None  # default: <model>/model.onnx
    max_records: int = 10_000  # per request
    max_body_bytes: int = 16 << 20
    threads: int = 1  # intra-op threads of the model, per worker process
    max_batch_rows: int = 16_384  # rows scored in one pass when requests are batched

    def __post_init__(self) -> None:
        if self.engine not in ("torch", "onnx"):
            raise ConfigError(f"--engine must be torch or onnx, got {self.engine!r}")
        for name in ("max_records", "max_body_bytes", "threads", "max_batch_rows"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ConfigError(f"--{name.replace('_', '-')} must be a positive integer, got {value!r}")

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> "ServeSettings":
        return cls(**json.loads(text))


def load_predictor(settings: ServeSettings) -> Predictor:
    """The settings' Predictor, warmed up (lookup dicts built, kernels run once)."""
    import torch

    # One process, many small requests: more intra-op threads only contend with each other.
    torch.set_num_threads(settings.threads)
    predictor = Predictor.load(settings.model, settings.engine, settings.onnx, threads=settings.threads)
    predictor.warm_up()
    return predictor


# ---------------------------------------------------------------- request errors
class RequestError(Exception):
    """A request the service refuses: an HTTP status and what to tell the client."""

    def __init__(
        self, status: int, kind: str, message: str, record: int | None = None, field: str | None = None
    ) -> None:
        super().__init__(message)
        self.status, self.kind, self.message, self.record, self.field = status, kind, message, record, field

    def body(self) -> bytes:
        error: dict[str, Any] = {"type": self.kind, "message": self.message}
        if self.record is not None:
            error["record"] = self.record
        if self.field is not None:
            error["field"] = self.field
        return json.dumps({"error": error}).encode()


def _record_error(exc: DataError) -> RequestError:
    """A DataError about records (``line`` is "record 3") as a 422 naming record and field."""
    match = re.fullmatch(r"record (\d+)", str(exc.line)) if exc.line is not None else None
    where = [str(exc.line)] if exc.line is not None else []
    if exc.field is not None:
        where.append(f"field {exc.field!r}")
    message = f"{', '.join(where)}: {exc.detail}" if where else exc.detail
    return RequestError(422, "invalid_record", message, int(match.group(1)) if match else None, exc.field)


async def _read_body(request: Any, limit: int) -> bytes:
    """The request body, refused (413) past ``limit`` bytes without reading it all."""
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.isdigit():
            raise RequestError(400, "bad_request", f"Content-Length is not a number: {declared!r}")
        if int(declared) > limit:
            raise RequestError(
                413,
                "body_too_large",
                f"the body is {int(declared)} bytes; this server takes at most {limit} (deepfm serve --max-body-bytes)",
            )
    body = bytearray()
    async for part in request.stream():
        body += part
        if len(body) > limit:  # a chunked body has no Content-Length to check up front
            raise RequestError(
                413,
                "body_too_large",
                f"the body is over {limit} bytes; this server takes at most {limit} (deepfm serve --max-body-bytes)",
            )
    return bytes(body)


def _no_constant(name: str) -> None:
    raise ValueError(f"{name} is not a JSON number")


def parse_records(body: bytes, max_records: int) -> list[Any]:
    """The ``records`` list of a /predict body, after the checks that concern the whole body."""
    try:
        payload = json.loads(body, parse_constant=_no_constant)
    except (ValueError, RecursionError) as exc:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise RequestError(400, "invalid_json", f"the body is not valid JSON: {exc}") from None
    if not isinstance(payload, dict):
        raise RequestError(
            422, "invalid_body", f'expected a JSON object {{"records": [...]}}, got {json_type(payload)}'
        )
    unknown = sorted(set(payload) - {"records"})
    if unknown:
        raise RequestError(422, "invalid_body", f'unknown key(s) {unknown}; the body is {{"records": [...]}}')
    if "records" not in payload:
        raise RequestError(
            422, "invalid_body", 'missing "records": the body is {"records": [{field: value, ...}, ...]}'
        )
    records = payload["records"]
    if not isinstance(records, list):
        raise RequestError(422, "invalid_body", f'"records" must be a list of objects, got {json_type(records)}')
    if len(records) > max_records:
        raise RequestError(
            413,
            "too_many_records",
            f"{len(records)} records; this server takes at most {max_records} per request (deepfm serve --max-records)",
        )
    return records


# ---------------------------------------------------------------- batching
class Batcher:
    """Scores queued requests together in one worker thread (see the module docstring).

    No timer: a pass starts as soon as the previous one ends, with every request queued by then
    (up to ``max_rows``), so batching adds no delay when the server is idle."""

    def __init__(self, score: Callable[[list[CheckedRecords]], np.ndarray], max_rows: int) -> None:
        self.score, self.max_rows = score, max_rows
        self.queue: deque[tuple[CheckedRecords, asyncio.Future[np.ndarray]]] = deque()
        self.executor = ThreadPoolExecutor(1, thread_name_prefix="deepfm-score")
        self.wake: asyncio.Event | None = None
        self.task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self.wake = asyncio.Event()
        self.task = asyncio.create_task(self._run(), name="deepfm-batcher")

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            try:
                await self.task
            except asyncio.CancelledError:
                pass
        self.executor.shutdown(wait=True)

    async def submit(self, records: CheckedRecords) -> np.ndarray:
        """Probabilities for checked records, scored in the next pass. -> (N,) float64"""
        assert self.wake is not None, "Batcher.start() first"
        future: asyncio.Future[np.ndarray] = asyncio.get_running_loop().create_future()
        self.queue.append((records, future))
        self.wake.set()
        return await future

    async def _run(self) -> None:
        assert self.wake is not None
        loop = asyncio.get_running_loop()
        while True:
            await self.wake.wait()
            self.wake.clear()
            while self.queue:
                batch = [self.queue.popleft()]
                rows = batch[0][0].rows
                while self.queue and rows + self.queue[0][0].rows <= self.max_rows:
                    batch.append(self.queue.popleft())
                    rows += batch[-1][0].rows
                batch = [(t, f) for t, f in batch if not f.done()]  # a cancelled request is skipped
                if not batch:
                    continue
                try:
                    probs = await loop.run_in_executor(self.executor, self.score, [r for r, _ in batch])
                except Exception as exc:  # a bug, not a bad request: those were refused before
                    log.exception("scoring a batch of %d requests failed", len(batch))
                    for _, f in batch:
                        if not f.done():
                            f.set_exception(exc)
                    continue
                start = 0
                for records, f in batch:
                    if not f.done():
                        f.set_result(probs[start : start + records.rows])
                    start += records.rows


# ---------------------------------------------------------------- the app
def create_app(predictor: Predictor, settings: ServeSettings) -> Any:
    """The FastAPI app serving ``predictor`` (whose process is this server)."""
    require_extra("serve", "fastapi", "uvicorn")
    from fastapi import FastAPI
    from fastapi.responses import Response

    from deepfm._version import __version__

    batcher = Batcher(lambda parts: predictor.predict_table(predictor.table(parts)), settings.max_batch_rows)
    model_id = predictor.model_id
    description = predictor.describe()

    @asynccontextmanager
    async def lifespan(_: Any) -> AsyncIterator[None]:
        batcher.start()
        log.info("model %s (%s engine) ready", model_id, predictor.engine.name)
        yield
        await batcher.stop()

    app = FastAPI(
        title="deepfm",
        version=__version__,
        description=f"Click probabilities from DeepFM model `{model_id}` ({settings.model}).",
        lifespan=lifespan,
    )

    def json_response(data: Any, status: int = 200) -> Response:
        return Response(json.dumps(data).encode(), status_code=status, media_type="application/json")

    _add_error_handlers(app)

    @app.get("/health", summary="Liveness, and which model is served")
    async def health() -> Response:
        return json_response({"status": "ok", "model": model_id, "engine": predictor.engine.name})

    @app.get("/schema", summary="The fields a record may hold, their kinds, an example record")
    async def schema() -> Response:
        return json_response(
            {**description, "max_records": settings.max_records, "max_body_bytes": settings.max_body_bytes}
        )

    _add_predict_route(app, predictor, settings, batcher, json_response)
    return app


def _add_predict_route(
    app: Any, predictor: Predictor, settings: ServeSettings, batcher: Batcher, json_response: Callable[..., Any]
) -> None:
    """POST /predict: records checked (on a worker thread when many), then scored in the
    batcher's next micro-batch with other requests' records."""
    from fastapi import Request
    from fastapi.concurrency import run_in_threadpool
    from fastapi.responses import Response
    from starlette.requests import ClientDisconnect

    model_id = predictor.model_id

    @app.post(
        "/predict",
        summary="Click probabilities for records",
        openapi_extra=_predict_openapi(predictor, settings),
        responses={200: {"description": "one probability per record, in order"}},
    )
    async def predict(request: Request) -> Response:
        try:
            body = await _read_body(request, settings.max_body_bytes)
        except ClientDisconnect:  # gone before its body arrived: nobody to answer
            return Response(status_code=400)
        records = parse_records(body, settings.max_records)
        try:
            if len(records) > OFFLOAD_RECORDS:
                checked = await run_in_threadpool(predictor.check_records, records)
            else:
                checked = predictor.check_records(records)
        except DataError as exc:
            raise _record_error(exc) from None
        probs = await batcher.submit(checked) if records else np.zeros(0)
        return json_response({"probabilities": probs.tolist(), "model": model_id})


def _add_error_handlers(app: Any) -> None:
    """Every error answers as JSON (RequestError's body): request errors with their status,
    routing errors with theirs, and anything else as a 500 that is logged here."""
    from fastapi import Request
    from fastapi.responses import Response
    from starlette.exceptions import HTTPException

    @app.exception_handler(RequestError)
    async def request_error(_: Request, exc: RequestError) -> Response:
        return Response(exc.body(), status_code=exc.status, media_type="application/json")

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> Response:
        kind = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        error = RequestError(exc.status_code, kind, f"{exc.detail}: {request.method} {request.url.path}")
        return Response(error.body(), status_code=exc.status_code, media_type="application/json", headers=exc.headers)

    @app.exception_handler(Exception)
    async def internal_error(request: Request, exc: Exception) -> Response:
        log.error("%s %s failed", request.method, request.url.path, exc_info=exc)
        body = RequestError(500, "internal_error", "the server failed to score this request; see its log").body()
        return Response(body, status_code=500, media_type="application/json")


def _predict_openapi(predictor: Predictor, settings: ServeSettings) -> dict[str, Any]:
    """The /predict request and responses for /docs, from the model's fields."""
    kinds: dict[str, dict[str, Any]] = {
        "numeric": {"type": ["number", "string", "null"]},
        "categorical": {"type": ["string", "number", "null"]},
        "multi_hot": {
            "anyOf": [{"type": "array", "items": {"type": ["string", "number"]}}, {"type": ["string", "null"]}]
        },
    }
    record = {
        "type": "object",
        "properties": {f.name: {**kinds[f.kind], "description": f.kind} for f in predictor.schema.fields},
        "additionalProperties": False,
    }
    body = {
        "type": "object",
        "required": ["records"],
        "properties": {"records": {"type": "array", "items": record, "maxItems": settings.max_records}},
        "additionalProperties": False,
    }
    error = {
        "type": "object",
        "properties": {
            "error": {
                "type": "object",
                "properties": {
                    "type": {"type": "string"},
                    "message": {"type": "string"},
                    "record": {"type": "integer"},
                    "field": {"type": "string"},
                },
            }
        },
    }
    ok = {
        "type": "object",
        "properties": {"probabilities": {"type": "array", "items": {"type": "number"}}, "model": {"type": "string"}},
    }

    def as_json(schema: dict[str, Any], description: str) -> dict[str, Any]:
        return {"description": description, "content": {"application/json": {"schema": schema}}}

    return {
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": body, "example": {"records": [predictor.example_record()]}}},
        },
        "responses": {
            "200": as_json(ok, "one probability per record, in order, and the model's id"),
            "400": as_json(error, "the body is not JSON"),
            "413": as_json(error, "too many records, or the body is too large"),
            "422": as_json(error, "a record is wrong: the error names its index and the field"),
        },
    }


def settle_gc() -> None:
    """Tune this server process's garbage collector, once the model is loaded.

    The model, its libraries and the vocabularies are hundreds of thousands of objects that
    live as long as the process: a full collection walked them all and stalled every request
    in flight for ~100 ms, a few times a second under load. Frozen, collections only look at
    what requests allocate; a larger first threshold makes them rarer (requests allocate many
    short-lived containers, freed by reference counting anyway)."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(20_000, 20, 20)


def app_from_env() -> Any:
    """uvicorn's factory in each worker process (``--workers N``): settings from the env."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    settings = ServeSettings.from_json(os.environ[SETTINGS_ENV])
    app = create_app(load_predictor(settings), settings)
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
    """Run the service until interrupted. The model loads here first, so a bad folder or
    ONNX file fails with one clear line before any worker starts."""
    require_extra("serve", "fastapi", "uvicorn")
    import uvicorn

    if workers < 1:
        raise ConfigError(f"--workers must be at least 1, got {workers}")
    if not Path(settings.model).exists():
        raise ConfigError(f"{settings.model}: no such model folder")
    predictor = load_predictor(settings)
    options: dict[str, Any] = dict(
        host=host, port=port, access_log=access_log, log_level=log_level, timeout_graceful_shutdown=5
    )
    log.info(
        "serving %s on http://%s:%d (%d worker%s)", predictor.model_id, host, port, workers, "s" if workers > 1 else ""
    )
    if workers == 1:
        app = create_app(predictor, settings)
        settle_gc()
        uvicorn.run(app, **options)
        return
    del predictor  # each worker process loads its own
    os.environ[SETTINGS_ENV] = settings.to_json()
    uvicorn.run("deepfm.inference.serve:app_from_env", factory=True, workers=workers, **options)
