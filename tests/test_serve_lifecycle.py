"""A served model's life for real: reloading under load, watching a link, stopping with
requests in flight, freeing a swapped-out model; and the service's record paths and batcher
on their own."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from deepfm.bundle import Bundle
from deepfm.errors import DataError

from helpers import REPO, assert_scores_close, simple_records, simple_schema, write_records_csv
from serving import OK, Server, copy_with_new_id, features, point, start


def test_reload_under_load_fails_no_request(model_dir: Path, tmp_path: Path) -> None:
    """POST /admin/reload swapping between two bundles while clients post: every answer is a
    200 naming one of the two models, with the weights' probabilities; a broken bundle is
    refused and the old model keeps serving."""
    other_id = copy_with_new_id(model_dir, tmp_path / "other")
    first_id = Bundle.load(model_dir).model_id
    link = tmp_path / "current"
    point(link, model_dir)
    records = features(simple_records(40, seed=12))
    expected = Bundle.load(model_dir).predict(records)
    token = {"Authorization": "Bearer s3cret"}
    for server in start(link, tmp_path / "reload.log", env={"DEEPFM_ADMIN_TOKEN": "s3cret"}):
        assert server.request("POST", "/admin/reload", b"")[0] == 401
        assert server.request("POST", "/admin/reload", b"", {"Authorization": "Bearer nope"})[0] == 401
        # A count of swaps, not a time: on a slow machine a reload under load may take seconds.
        swaps: list[Any] = []
        done = threading.Event()

        def reloads(server: Server = server, swaps: list[Any] = swaps, done: threading.Event = done) -> None:
            targets = [tmp_path / "other", model_dir]
            try:
                time.sleep(0.3)  # the clients first
                while len(swaps) < 4:
                    point(link, targets[len(swaps) % 2])
                    status, raw = server.request("POST", "/admin/reload", b"", token)
                    swaps.append((status, json.loads(raw)))
                    time.sleep(0.3)
            finally:
                done.set()

        def client(i: int, server: Server = server, done: threading.Event = done) -> list[tuple[int, Any]]:
            out = []
            while not done.is_set():
                out.append(server.post({"records": records[i : i + 1 + i % 30]}))
            return out

        with ThreadPoolExecutor(max_workers=9) as pool:
            reloader = pool.submit(reloads)
            answers = [a for part in pool.map(client, range(8)) for a in part]
            reloader.result()
        assert len(swaps) == 4 and all(s == 200 and a["swapped"] for s, a in swaps), swaps
        assert len(answers) > 8 and all(status == 200 and a["probabilities"] for status, a in answers)
        seen = {a["model"] for _, a in answers}
        assert seen == {first_id, other_id}, seen
        _, a = server.post({"records": records})
        assert_scores_close(a["probabilities"], expected, "the same weights under either id")

        (tmp_path / "broken").mkdir()
        point(link, tmp_path / "broken")
        before = json.loads(server.request("GET", "/health")[1])["model"]
        status, raw = server.request("POST", "/admin/reload", b"", token)
        error = json.loads(raw)["error"]
        assert status == 422 and error["type"] == "reload_failed" and "not a complete model folder" in error["message"]
        status, answer = server.post({"records": records[:3]})
        assert status == 200 and answer["model"] == before
        assert 'deepfm_reloads_total{result="failed"} 1.0' in server.request("GET", "/metrics")[1].decode()


def test_watch_swaps_when_the_link_moves(model_dir: Path, tmp_path: Path) -> None:
    other_id = copy_with_new_id(model_dir, tmp_path / "other")
    link = tmp_path / "current"
    point(link, model_dir)
    for server in start(None, tmp_path / "watch.log", "--watch", str(link), "--watch-seconds", "0.2", "--access-log"):
        first = json.loads(server.request("GET", "/health")[1])["model"]
        status, _ = server.request("POST", "/predict", json.dumps({"records": [OK]}).encode(), {"X-Request-ID": "w-1"})
        assert status == 200
        (tmp_path / "broken").mkdir()
        point(link, tmp_path / "broken")
        deadline = time.monotonic() + 20
        while 'deepfm_reloads_total{result="failed"}' not in server.request("GET", "/metrics")[1].decode():
            assert time.monotonic() < deadline, "the broken bundle was never tried"
            time.sleep(0.1)
        assert server.post({"records": [OK]})[1]["model"] == first  # still the old model
        point(link, tmp_path / "other")
        while server.post({"records": [OK]})[1]["model"] != other_id:
            assert time.monotonic() < deadline, "the new bundle was never served"
            time.sleep(0.1)
        log = server.log_path.read_text()
        assert "reload of" in log and "not a complete model folder" in log  # the failure says why
        assert re.search(rf"w-1 POST /predict 200 [0-9.]+ms model={first}", log), "the access log line"


def test_sigterm_finishes_the_requests_in_flight(model_dir: Path, tmp_path: Path) -> None:
    """A request whose body is still arriving when SIGTERM comes is read, scored and answered
    before the server exits."""
    body = json.dumps({"records": features(simple_records(30, seed=13))}).encode()
    server = Server(model_dir, tmp_path / "term.log")
    try:
        server.wait_ready()
        with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
            head = f"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
            sock.sendall(head.encode() + body[:10])
            deadline = time.monotonic() + 10
            while "deepfm_requests_in_flight 2.0" not in server.request("GET", "/metrics")[1].decode():
                assert time.monotonic() < deadline, "the request never reached the app"
                time.sleep(0.05)
            os.killpg(server.proc.pid, signal.SIGTERM)
            time.sleep(0.5)
            sock.sendall(body[10:])
            answer = b""
            while b"}" not in answer.rpartition(b"\r\n\r\n")[2] or not answer.endswith(b"}"):
                chunk = sock.recv(65536)
                if not chunk:
                    break
                answer += chunk
        status_line, _, rest = answer.partition(b"\r\n")
        assert status_line == b"HTTP/1.1 200 OK", answer
        assert len(json.loads(rest.rpartition(b"\r\n\r\n")[2])["probabilities"]) == 30
        # uvicorn raises the signal again once it has shut down: the status of a SIGTERM
        assert server.proc.wait(timeout=30) in (0, -signal.SIGTERM)
        assert "Application shutdown complete" in server.log_path.read_text()
    finally:
        server.stop()


def test_loadtest_formats_reload_case_and_docs(model_dir: Path, tmp_path: Path) -> None:
    """The load test's own server: every body format, the reload-under-load case, the tables
    written between the page's markers."""
    data = write_records_csv(tmp_path / "rows.csv", simple_records(300, seed=14))
    page = tmp_path / "page.md"
    page.write_text("intro\n<!-- loadtest:begin -->\nold figures\n<!-- loadtest:end -->\nafter\n")
    out = tmp_path / "load.json"
    command = [
        sys.executable, str(REPO / "benchmarks" / "loadtest.py"), "--model", str(model_dir), "--data", str(data),
        "--sizes", "1,8", "--clients", "3", "--formats", "records,columns,arrow", "--requests", "30",
        "--large-requests", "20", "--warmup", "3", "--seconds", "20",
        "--reload-every", "0.5", "--reload-seconds", "6", "--json", str(out), "--docs", str(page),
    ]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run(command, capture_output=True, text=True, timeout=240, env=env)
    assert done.returncode == 0, done.stderr
    report = json.loads(out.read_text())
    model_id = Bundle.load(model_dir).model_id
    cases = [(r["format"], r["size"], r["requests"], r["errors"], r["models"]) for r in report["results"]]
    assert cases == [
        ("records", 1, 30, 0, {model_id: 30}),
        ("records", 8, 20, 0, {model_id: 20}),
        ("columns", 8, 20, 0, {model_id: 20}),
        ("arrow", 8, 20, 0, {model_id: 20}),
    ]
    reload = report["reload"]
    # 6 s of load with a swap asked for every 0.5 s: a slow machine may take over a second a swap
    assert reload["swaps"] >= 2 and reload["reload_failures"] == 0 and reload["load"]["errors"] == 0
    assert len(reload["load"]["models"]) == 2 and model_id in reload["load"]["models"]
    assert sum(reload["load"]["models"].values()) == reload["load"]["requests"]
    text = page.read_text()
    assert text.startswith("intro\n<!-- loadtest:begin -->\nMeasured ") and text.endswith(
        "<!-- loadtest:end -->\nafter\n"
    )
    assert "old figures" not in text and "| arrow | 8 | 3 | 20 | 0 |" in text and "Reload under load:" in text


def test_a_swapped_out_model_is_freed(model_dir: Path, tmp_path: Path) -> None:
    """A reload does no full garbage collection (it stalled requests): the old model must go
    by reference counting alone once nothing uses it."""
    import asyncio
    import weakref

    import torch

    from deepfm.inference.serve.metrics import Metrics
    from deepfm.inference.serve.reload import Models
    from deepfm.inference.serve.settings import ServeSettings, load_model

    other_id = copy_with_new_id(model_dir, tmp_path / "other")
    link = tmp_path / "current"
    point(link, model_dir)
    threads = torch.get_num_threads()  # load_model sets the process's torch threads
    try:
        settings = ServeSettings(model=str(link))
        models = Models(settings, load_model(settings), Metrics())
        old = weakref.ref(models.current.predictor)
        point(link, tmp_path / "other")
        answer = asyncio.run(models.reload())
        assert answer["swapped"] and answer["model"] == other_id == models.current.model_id
        assert old() is None, "the old model is still referenced"
    finally:
        torch.set_num_threads(threads)


def test_column_paths_type_values_as_the_python_api_does() -> None:
    """The service's two faster ways to a table (Arrow reading the dicts whole, or one Arrow
    call per field) give the table of the Python API's value-by-value checks, and step aside
    (None, or the per-value path) for anything but plain values."""
    from deepfm.features.records import RecordChecker

    checker = RecordChecker(simple_schema())
    records = features(simple_records(100, seed=15))
    expected = checker.records_table(records)
    plain = checker.plain_records_table(records)
    assert plain is not None and plain.equals(expected)
    assert checker.columns_table(checker.record_columns(records), 100).equals(expected)
    assert checker.plain_records_table([{"tags": ["red", "big"]}]) is None  # a list is joined in Python
    assert checker.plain_records_table([{"price": "3.5"}]) is None  # text for a number is parsed
    assert checker.plain_records_table([{"item": 7}]) is None  # a number for a category is written as text
    odd = [{"item": 7.0, "price": "3.5", "tags": ["red", "big"], "user": 12}, {"price": 2**70}]
    assert checker.columns_table(checker.record_columns(odd), 2).equals(checker.records_table(odd))

    import pyarrow as pa

    # An Arrow body's list column of numbers, or of large strings, is joined as a JSON list is.
    for tags in (pa.array([[1, 2], []]), pa.array([["red", "big"], []], pa.large_list(pa.large_string()))):
        want = checker.records_table([{"tags": tags[0].as_py()}, {"tags": []}])
        assert checker.arrow_table(pa.table({"tags": tags})).equals(want), tags.type
    with pytest.raises(DataError, match="more than once") as twice:
        checker.arrow_table(pa.Table.from_arrays([pa.array([1.0]), pa.array([2.0])], names=["price", "price"]))
    assert twice.value.field == "price"


def test_batcher_stop_answers_the_pass_in_flight() -> None:
    """stop() while a pass is being scored (the queue already empty) waits for its answers:
    cancelling the batcher then would leave those requests waiting forever."""
    import asyncio
    import threading

    from deepfm.inference.serve.batcher import Batcher

    started = threading.Event()

    def score(model: str, parts: list[int]) -> list[np.ndarray]:
        started.set()
        time.sleep(0.3)
        return [np.full(rows, 0.5) for rows in parts]

    async def stop_during_a_pass() -> np.ndarray:
        batcher: Batcher[int, str] = Batcher(score, max_rows=100)
        batcher.start()
        request = asyncio.ensure_future(batcher.submit(3, 3, "model"))
        while not started.is_set():
            await asyncio.sleep(0.01)
        await batcher.stop()
        return await asyncio.wait_for(request, 10)

    assert asyncio.run(stop_during_a_pass()).tolist() == [0.5] * 3


def test_batcher_a_failing_request_fails_alone() -> None:
    """A part that makes the model's pass raise fails its own request only: the requests
    batched with it are scored again without it."""
    import asyncio

    from deepfm.inference.serve.batcher import Batcher

    def score(model: str, parts: list[int]) -> list[np.ndarray]:
        if -1 in parts:
            raise ValueError("a value the checks let through")
        return [np.full(rows, 0.5) for rows in parts]

    async def three_requests() -> list[Any]:
        batcher: Batcher[int, str] = Batcher(score, max_rows=100)
        batcher.start()
        # queued together before the batcher runs: one pass for all three
        requests = [batcher.submit(rows, 1, "model") for rows in (2, -1, 3)]
        answers = await asyncio.gather(*requests, return_exceptions=True)
        await batcher.stop()
        return answers

    good, bad, other = asyncio.run(three_requests())
    assert isinstance(bad, ValueError) and good.tolist() == [0.5] * 2 and other.tolist() == [0.5] * 3
