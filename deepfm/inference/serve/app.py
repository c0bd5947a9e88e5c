"""The FastAPI app: routes, the request-id and metrics middleware, error answers.

POST /predict        records, columns or an Arrow stream -> {"probabilities": [...], "model": id}
GET  /health         liveness: the process answers
GET  /ready          readiness: a model is loaded and the server is not shutting down
GET  /schema         the fields, their kinds, what each accepts, an example record
GET  /metrics        Prometheus text format
POST /admin/reload   load the model folder again (only with DEEPFM_ADMIN_TOKEN set)
GET  /docs           OpenAPI documentation (/openapi.json)
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import re
import signal
import time
from collections.abc import AsyncIterator, Callable, MutableMapping
from contextlib import asynccontextmanager
from typing import Any

from deepfm.errors import require_extra
from deepfm.inference.serve.metrics import route_label
from deepfm.inference.serve.openapi import describe_app, follow_current_model
from deepfm.inference.serve.routes import (
    State,
    add_admin_route,
    add_error_handlers,
    add_predict_route,
    add_status_routes,
    serve_predict,
)
from deepfm.inference.serve.settings import ADMIN_TOKEN_ENV, LoadedModel, ServeSettings

log = logging.getLogger("deepfm.serve")
access = logging.getLogger("deepfm.access")

ROUTES = {"/predict", "/health", "/ready", "/schema", "/metrics", "/admin/reload", "/docs", "/openapi.json"}

# The status counted and logged for a request whose client left before its body arrived
# (nothing is answered; nginx's "client closed request"), not a server error.
CLIENT_GONE = 499
Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]


def create_app(first: LoadedModel, settings: ServeSettings, access_log: bool = False) -> Any:
    """The ASGI app serving ``first`` (and the models reloads bring), this process's."""
    require_extra("serve", "fastapi", "uvicorn", "orjson", "prometheus_client")
    from fastapi import FastAPI

    from deepfm._version import __version__

    state = State(settings, first)
    app = FastAPI(
        title="deepfm",
        version=__version__,
        description=describe_app(first.model_id, settings),
        lifespan=_lifespan(state),
    )
    add_error_handlers(app)
    add_status_routes(app, state)
    add_predict_route(app, state)
    if os.environ.get(ADMIN_TOKEN_ENV):  # no token, no route: 404, not an open door
        add_admin_route(app, state, os.environ[ADMIN_TOKEN_ENV])
    follow_current_model(app, lambda: state.models.current, settings)
    return RequestIdMiddleware(app, state, access_log)


def _lifespan(state: State) -> Callable[[Any], Any]:
    @asynccontextmanager
    async def lifespan(_: Any) -> AsyncIterator[None]:
        state.batcher.start()
        _mark_draining_on_sigterm(state)
        watcher = asyncio.create_task(state.models.watch()) if state.settings.watch else None
        log.info(
            "model %s (%s engine) ready", state.models.current.model_id, state.models.current.predictor.engine.name
        )
        yield
        state.draining = True
        if watcher is not None:
            watcher.cancel()
        await state.batcher.stop()

    return lifespan


def _mark_draining_on_sigterm(state: State) -> None:
    """/ready answers 503 from the first SIGTERM on, so a load balancer stops sending while
    uvicorn finishes the requests in flight. uvicorn's own handler still runs after ours."""
    for sig in (signal.SIGTERM, signal.SIGINT):
        previous = signal.getsignal(sig)
        if not callable(previous):
            continue

        def handler(signum: int, frame: Any, previous: Callable[..., Any] = previous) -> None:
            state.draining = True
            previous(signum, frame)

        try:
            signal.signal(sig, handler)
        except ValueError:  # not the main thread (an app built inside a test's thread)
            return


# A client's request id is kept only when it cannot forge access-log lines or break a header.
_REQUEST_ID = re.compile(rb"[A-Za-z0-9._:-]{1,128}")


class RequestIdMiddleware:
    """Plain ASGI (cheaper than Starlette's BaseHTTPMiddleware): takes the client's
    X-Request-ID or makes one, echoes it in the answer's headers, counts the answer in the
    metrics and, with --access-log, logs one line per request."""

    def __init__(self, app: Any, state: State, access_log: bool) -> None:
        self.app, self.state, self.metrics, self.access_log = app, state, state.metrics, access_log
        # A random prefix per process and a counter: unique without a uuid4 per request (its
        # os.urandom took 0.1 ms here, half of what a 1-record request costs otherwise).
        self.prefix, self.counter = os.urandom(6).hex().encode() + b"-", itertools.count(1)

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        request_id = next((v for k, v in scope["headers"] if k == b"x-request-id"), b"")
        if not _REQUEST_ID.fullmatch(request_id):
            request_id = b"%s%x" % (self.prefix, next(self.counter))
        t0 = time.perf_counter()
        answer: dict[str, Any] = {"status": 500, "model": b"-"}

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                answer["status"] = message["status"]
                headers = list(message.get("headers", []))
                answer["model"] = next((v for k, v in headers if k == b"x-model-id"), b"-")
                message["headers"] = [*headers, (b"x-request-id", request_id)]
            await send(message)

        self.metrics.in_flight.inc()
        try:
            if scope["path"] == "/predict" and scope["method"] == "POST":
                if not await serve_predict(self.state, scope, receive, send_with_id):
                    answer["status"] = CLIENT_GONE
            else:
                await self.app(scope, receive, send_with_id)
        finally:
            self.metrics.in_flight.dec()
            seconds = time.perf_counter() - t0
            self.metrics.answered(route_label(scope["path"], ROUTES), answer["status"], seconds)
            if self.access_log:
                access.info(
                    "%s %s %s %d %.1fms model=%s",
                    request_id.decode(),
                    scope["method"],
                    scope["path"],
                    answer["status"],
                    seconds * 1e3,
                    answer["model"].decode(),
                )
