"""Prometheus metrics of one server process (``GET /metrics``), on prometheus-client.

Each app has its own registry (a test may build several apps in one process). Label
children are looked up once per (path, status) and cached by prometheus-client itself.
"""

from __future__ import annotations

from typing import Any

LATENCY_BUCKETS = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0)
ROW_BUCKETS = (1, 4, 16, 64, 256, 1024, 4096, 16384, 65536)
REQUEST_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)


class Metrics:
    """The service's counters, histograms and gauges."""

    def __init__(self) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info

        self.registry = registry = CollectorRegistry()
        self.requests = Counter(
            "deepfm_requests", "HTTP requests answered, by path and status", ["path", "status"], registry=registry
        )
        self.records = Counter(
            "deepfm_records",
            "records in /predict requests, by status and body format",
            ["status", "format"],
            registry=registry,
        )
        self.latency = Histogram(
            "deepfm_request_seconds",
            "time to answer an HTTP request, by path",
            ["path"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.batch_rows = Histogram(
            "deepfm_batch_rows", "rows scored in one model pass", buckets=ROW_BUCKETS, registry=registry
        )
        self.batch_requests = Histogram(
            "deepfm_batch_requests", "requests scored in one model pass", buckets=REQUEST_BUCKETS, registry=registry
        )
        self.in_flight = Gauge("deepfm_requests_in_flight", "HTTP requests being answered", registry=registry)
        self.model = Info("deepfm_model", "the model being served", registry=registry)
        self.model_loaded = Gauge(
            "deepfm_model_loaded_timestamp_seconds", "when the served model was loaded (unix time)", registry=registry
        )
        self.model_load_seconds = Gauge(
            "deepfm_model_load_seconds", "how long loading and checking the served model took", registry=registry
        )
        self.reloads = Counter(
            "deepfm_reloads", "model reloads, by result (swapped, unchanged, failed)", ["result"], registry=registry
        )
        self.reload_error = Info("deepfm_reload_error", "why the last failed reload failed", registry=registry)

    def served(self, model_id: str, folder: str, engine: str, loaded_at: float, load_seconds: float) -> None:
        """Record the model now serving."""
        self.model.info({"model": model_id, "folder": folder, "engine": engine})
        self.model_loaded.set(loaded_at)
        self.model_load_seconds.set(load_seconds)

    def scored_pass(self, rows: int, requests: int) -> None:
        self.batch_rows.observe(rows)
        self.batch_requests.observe(requests)

    def render(self) -> tuple[bytes, str]:
        """(the text exposition, its content type)."""
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        return generate_latest(self.registry), CONTENT_TYPE_LATEST

    def answered(self, path: str, status: int, seconds: float) -> None:
        self.requests.labels(path, str(status)).inc()
        self.latency.labels(path).observe(seconds)

    def counted(self, status: int, body_format: str, rows: int) -> None:
        self.records.labels(str(status), body_format).inc(rows)


def route_label(path: str, known: Any) -> str:
    """A path as a metrics label: the app's own routes as they are, anything else "other"
    (a label per unknown path a client tries would grow without bound)."""
    return path if path in known else "other"
