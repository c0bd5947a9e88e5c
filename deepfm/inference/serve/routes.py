"""The routes of the app (deepfm.inference.serve.app builds it) and its error answers."""

# No ``from __future__ import annotations`` here: FastAPI reads the route functions'
# annotations (``request: Request``) at runtime.
import hmac
import logging
from collections.abc import AsyncIterator, MutableMapping
from typing import Any, TypeAlias

import numpy as np
import pyarrow as pa

from deepfm.errors import DataError
from deepfm.features.records import CheckedRecords
from deepfm.inference.serve.batcher import Batcher
from deepfm.inference.serve.metrics import Metrics
from deepfm.inference.serve.openapi import predict_openapi
from deepfm.inference.serve.reload import Models, ReloadFailed
from deepfm.inference.serve.requests import (
    ARROW_STREAM,
    ClientGone,
    RequestError,
    arrow_table,
    asgi_chunks,
    json_body,
    json_table,
    load_json_plain,
    read_arrow,
    read_body,
    record_error,
)
from deepfm.inference.serve.settings import LoadedModel, ServeSettings

log = logging.getLogger("deepfm.serve")
OFFLOAD_RECORDS = 256  # larger requests are checked in a thread, so the event loop keeps serving
# Up to this many records, a request's values are checked one by one in Python (microseconds)
# and become Arrow arrays in the scoring pass, together with the other small requests': per
# request, Arrow's fixed cost per field (39 calls on Criteo) would be most of the work.
SMALL_RECORDS = 64
INTERNAL_ERROR = RequestError(500, "internal_error", "the server failed to score this request; see its log")
Part: TypeAlias = "pa.Table | CheckedRecords"  # a large request's table, or a small one's values


class State:
    """What the routes share: the models, the batcher, the metrics, whether shutting down."""

    def __init__(self, settings: ServeSettings, first: LoadedModel) -> None:
        self.settings = settings
        self.metrics = Metrics()
        self.models = Models(settings, first, self.metrics)
        self.batcher: Batcher[Part, LoadedModel] = Batcher(
            score_parts, settings.max_batch_rows, self.metrics.scored_pass
        )
        self.draining = False


def score_parts(model: LoadedModel, parts: list[Part]) -> list[np.ndarray]:
    """The probabilities of each part, in one pass: the small requests' Python columns become
    one table (one Arrow array per field for all of them) beside the large requests' tables."""
    small = [p for p in parts if isinstance(p, CheckedRecords)]
    tables = [model.predictor.table(small)] if small else []
    tables += [p for p in parts if not isinstance(p, CheckedRecords)]
    # One chunk per column: the encoders' fixed cost is per chunk, and there is one per request.
    table = pa.concat_tables(tables).combine_chunks() if len(tables) > 1 else tables[0]
    probs = model.predictor.predict_table(table)
    out, at_small, at_table = [], 0, sum(p.rows for p in small)
    for p in parts:
        if isinstance(p, CheckedRecords):
            out.append(probs[at_small : at_small + p.rows])
            at_small += p.rows
        else:
            out.append(probs[at_table : at_table + p.num_rows])
            at_table += p.num_rows
    return out


def check_json(model: LoadedModel, body_format: str, data: Any, rows: int, plain: bool) -> Part:
    """A parsed JSON body's rows, checked: a small list of records value by value (see
    SMALL_RECORDS), anything else column by column into a table."""
    if body_format == "records" and rows <= SMALL_RECORDS:
        try:
            return model.predictor.check_records(data)
        except DataError as exc:
            raise record_error(exc) from None
    return json_table(model.predictor.records, body_format, data, rows, plain)


def json_response(data: Any, status: int = 200, model_id: str | None = None) -> Any:
    """A JSON answer (orjson: NumPy arrays written as they are); ``model_id`` also as the
    X-Model-ID header, which the access log reads."""
    import orjson
    from fastapi.responses import Response

    headers = {"X-Model-ID": model_id} if model_id else None
    body = orjson.dumps(data, option=orjson.OPT_SERIALIZE_NUMPY)
    return Response(body, status_code=status, media_type="application/json", headers=headers)


def add_status_routes(app: Any, state: State) -> None:
    """GET /health, /ready, /schema, /metrics."""
    from fastapi.responses import Response

    @app.get("/health", summary="Liveness, and which model is served")
    async def health() -> Response:
        current = state.models.current
        return json_response(
            {"status": "ok", "model": current.model_id, "engine": current.predictor.engine.name},
            model_id=current.model_id,
        )

    @app.get("/ready", summary="Readiness: 200 while a model is loaded and the server takes requests, else 503")
    async def ready() -> Response:
        current = state.models.current
        if state.draining or not state.batcher.running:
            why = "shutting down" if state.draining else "not started"
            return json_response({"status": why, "model": current.model_id}, 503, current.model_id)
        return json_response({"status": "ready", "model": current.model_id}, model_id=current.model_id)

    @app.get("/schema", summary="The fields a record may hold, their kinds, an example record")
    async def schema() -> Response:
        current = state.models.current
        settings = state.settings
        description = {
            **current.predictor.describe(),
            "model": current.model_id,
            "max_records": settings.max_records,
            "max_body_bytes": settings.max_body_bytes,
            "body_formats": ["records", "columns", ARROW_STREAM],
        }
        return json_response(description, model_id=current.model_id)

    @app.get("/metrics", summary="Prometheus metrics of this server process")
    async def metrics() -> Response:
        body, content_type = state.metrics.render()
        return Response(body, media_type=content_type)


async def answer_predict(
    state: State, declared: str | None, chunks: AsyncIterator[bytes], content_type: str
) -> tuple[bytes, str]:
    """POST /predict's answer to a body (``declared``: its Content-Length): (the JSON, the id
    of the model that scored it). The body is read, checked into a part (on a worker thread
    when large), then scored in the batcher's next pass with other requests' rows. Raises
    RequestError for a request to refuse, counted in deepfm_records_total first."""
    import orjson
    from starlette.concurrency import run_in_threadpool

    settings = state.settings
    part: Part
    arrow = content_type.startswith(ARROW_STREAM)
    # A refused request counts its records only once they were read as records (a check of
    # their values refused them); a body refused whole (too large, not JSON or Arrow, too many
    # records) counts 0: its records were never read, and an Arrow body past --max-records is
    # not even read to its end. inc(0) still makes the {status, format} series appear, so a
    # refusal shows beside deepfm_requests_total. "json": a JSON body refused before its
    # records were checked (not JSON, too large, too many records), whatever its form.
    body_format, rows = ("arrow" if arrow else "json"), 0
    try:
        body = await read_body(declared, chunks, settings.max_body_bytes)
        # The model serving once the body is in checks it and scores it: a swap while a slow
        # body arrives answers it with the new model, and the old one is not held for it.
        model = state.models.current
        if arrow:
            # Decoded here, as JSON is parsed here: an IPC stream in memory is read without a
            # copy; checking its values is the heavy part, done on a thread when large.
            table = read_arrow(body, settings.max_records)
            rows = table.num_rows
            if rows > OFFLOAD_RECORDS:
                part = await run_in_threadpool(arrow_table, model.predictor.records, table)
            else:
                part = arrow_table(model.predictor.records, table)
        else:
            payload, plain = load_json_plain(body)
            body_format, data, rows = json_body(payload, settings.max_records)
            if rows > OFFLOAD_RECORDS:
                part = await run_in_threadpool(check_json, model, body_format, data, rows, plain)
            else:
                part = check_json(model, body_format, data, rows, plain)
    except RequestError as exc:
        state.metrics.counted(exc.status, body_format, rows)
        raise
    probs = await state.batcher.submit(part, rows, model) if rows else np.zeros(0)
    state.metrics.counted(200, body_format, rows)
    answer = {"probabilities": probs, "model": model.model_id}
    return orjson.dumps(answer, option=orjson.OPT_SERIALIZE_NUMPY), model.model_id


async def serve_predict(state: State, scope: MutableMapping[str, Any], receive: Any, send: Any) -> bool:
    """POST /predict straight on ASGI: FastAPI's routing, Request and Response objects were
    about a third of a 1-record request's server CPU. The FastAPI route below answers the same
    (it describes /predict in /docs, and serves it when this path is not taken). False when
    the client left before its body arrived, and nothing was answered."""
    headers = dict(scope["headers"])
    declared = headers.get(b"content-length")
    try:
        try:
            answer, model_id = await answer_predict(
                state,
                declared.decode("latin-1") if declared else None,
                asgi_chunks(receive),
                headers.get(b"content-type", b"").decode("latin-1"),
            )
        except ClientGone:  # gone before its body arrived: nobody to answer
            return False
        status, extra = 200, [(b"x-model-id", model_id.encode())]
    except RequestError as exc:
        answer, status, extra = exc.body(), exc.status, []
    except Exception:
        log.exception("POST /predict failed")
        answer, status, extra = INTERNAL_ERROR.body(), 500, []
    head = [(b"content-type", b"application/json"), (b"content-length", str(len(answer)).encode()), *extra]
    await send({"type": "http.response.start", "status": status, "headers": head})
    await send({"type": "http.response.body", "body": answer})
    return True


def add_predict_route(app: Any, state: State) -> None:
    """POST /predict as a FastAPI route (see serve_predict)."""
    from fastapi import Request
    from fastapi.responses import Response
    from starlette.requests import ClientDisconnect

    settings = state.settings

    @app.post(
        "/predict",
        summary="Click probabilities for records",
        openapi_extra=predict_openapi(state.models.current.predictor, settings),
        responses={200: {"description": "one probability per record, in order"}},
    )
    async def predict(request: Request) -> Response:
        try:
            answer, model_id = await answer_predict(
                state, request.headers.get("content-length"), request.stream(), request.headers.get("content-type", "")
            )
        except ClientDisconnect:  # gone before its body arrived: nobody to answer
            return Response(status_code=400)
        return Response(answer, media_type="application/json", headers={"X-Model-ID": model_id})


def add_admin_route(app: Any, state: State, token: str) -> None:
    """POST /admin/reload, for a bearer of ``token`` only."""
    from fastapi import Request
    from fastapi.responses import Response

    expected = f"Bearer {token}".encode()

    @app.post("/admin/reload", summary="Load the model folder again; swap to it when it is another model")
    async def reload(request: Request) -> Response:
        given = request.headers.get("authorization", "").encode()
        if not hmac.compare_digest(given, expected):
            error = RequestError(401, "unauthorized", "POST /admin/reload needs 'Authorization: Bearer <token>'")
            return Response(error.body(), 401, media_type="application/json", headers={"WWW-Authenticate": "Bearer"})
        try:
            answer = await state.models.reload()
        except ReloadFailed as exc:
            current = state.models.current.model_id
            error = RequestError(422, "reload_failed", f"{exc}; still serving {current}")
            return Response(error.body(), 422, media_type="application/json", headers={"X-Model-ID": current})
        return json_response(answer, model_id=answer["model"] if answer["swapped"] else answer["previous"])


def add_error_handlers(app: Any) -> None:
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
        return Response(INTERNAL_ERROR.body(), status_code=500, media_type="application/json")
