"""A real `deepfm serve` for the tests: a subprocess on a free loopback port, requests over
HTTP, and the model folders the service tests serve."""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from deepfm.bundle import Bundle

from helpers import REPO, SIMPLE_FIELDS

MAX_RECORDS = 300  # above routes.SMALL_RECORDS: large requests take the column-by-column path
MAX_BODY = 60_000
OK = {"user": "u1", "item": "item1", "price": 3.5, "tags": ["red"]}  # one valid record


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Server:
    """`deepfm serve` in its own process group, with its output in a file."""

    def __init__(self, model: Path | None, log: Path, *args: str, env: dict[str, str] | None = None) -> None:
        self.port = free_port()
        self.log_path = log
        self.log = open(log, "wb")
        env = {
            **{k: v for k, v in os.environ.items() if k != "DEEPFM_ADMIN_TOKEN"},
            "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""),
            **(env or {}),
        }
        command = [
            sys.executable,
            "-m",
            "deepfm",
            "serve",
            *([str(model)] if model is not None else []),
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            *args,
        ]
        self.proc = subprocess.Popen(
            command, stdout=self.log, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )

    def wait_ready(self, timeout: float = 90) -> None:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if self.proc.poll() is not None:
                raise AssertionError(f"server exited with {self.proc.returncode}:\n{self.log_path.read_text()}")
            try:
                if self.request("GET", "/health")[0] == 200:
                    return
            except OSError:
                time.sleep(0.1)
        raise AssertionError(f"server not ready after {timeout} s:\n{self.log_path.read_text()}")

    def request(
        self, method: str, path: str, body: bytes | None = None, headers: dict[str, str] | None = None
    ) -> tuple[int, bytes]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        try:
            conn.request(method, path, body=body, headers={"Content-Type": "application/json", **(headers or {})})
            resp = conn.getresponse()
            return resp.status, resp.read()
        finally:
            conn.close()

    def post(self, payload: Any) -> tuple[int, Any]:
        status, raw = self.request("POST", "/predict", json.dumps(payload).encode())
        return status, json.loads(raw)

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self.log.close()


def start(model: Path | None, log: Path, *args: str, env: dict[str, str] | None = None) -> Iterator[Server]:
    server = Server(model, log, *args, env=env)
    try:
        server.wait_ready()
        yield server
    finally:
        server.stop()


def features(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: r[k] for k in SIMPLE_FIELDS} for r in records]


def copy_with_new_id(model_dir: Path, out: Path) -> str:
    """The same weights saved again with one more metrics key: another manifest, another id."""
    bundle = Bundle.load(model_dir)
    bundle.metrics["copied_for"] = "reload test"
    bundle.save(out)
    return Bundle.load(out).model_id


def point(link: Path, target: Path) -> None:
    """Swap a symlink atomically, as a daily job would."""
    tmp = link.with_name(link.name + ".tmp")
    tmp.unlink(missing_ok=True)
    tmp.symlink_to(target)
    os.replace(tmp, link)
