"""The HTTP service for real: `deepfm serve` in a subprocess on a free loopback port, good and
bad requests over HTTP, then the server is stopped whatever happened. Reloading, watching and
stopping a server are in test_serve_lifecycle.py."""

from __future__ import annotations

import http.client
import json
import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from deepfm.bundle import Bundle
from deepfm.cli import main

from helpers import REPO, SIMPLE_FIELDS, assert_scores_close, assert_scores_differ, simple_records, write_records_csv
from serving import MAX_BODY, MAX_RECORDS, OK, Server, features, free_port, start


@pytest.fixture(scope="module")
def server(model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    log = tmp_path_factory.mktemp("serve-log") / "server.log"
    yield from start(model_dir, log, "--max-records", str(MAX_RECORDS), "--max-body-bytes", str(MAX_BODY))


# ---------------------------------------------------------------- good requests
def test_health_schema_and_docs(server: Server, model_dir: Path) -> None:
    model_id = Bundle.load(model_dir).model_id
    status, raw = server.request("GET", "/health")
    assert status == 200 and json.loads(raw) == {"status": "ok", "model": model_id, "engine": "torch"}

    status, raw = server.request("GET", "/schema")
    schema = json.loads(raw)
    assert status == 200 and schema["model"] == model_id and schema["max_records"] == MAX_RECORDS
    assert [(f["name"], f["kind"]) for f in schema["fields"]] == [
        ("user", "categorical"),
        ("item", "categorical"),
        ("price", "numeric"),
        ("tags", "multi_hot"),
    ]
    assert set(schema["example"]) == set(SIMPLE_FIELDS)
    status, answer = server.post({"records": [schema["example"]]})
    assert status == 200 and len(answer["probabilities"]) == 1

    status, raw = server.request("GET", "/docs")
    assert status == 200 and b"swagger" in raw.lower()
    status, raw = server.request("GET", "/openapi.json")
    spec = json.loads(raw)
    body = spec["paths"]["/predict"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    record = body["properties"]["records"]["items"]
    assert set(record["properties"]) == set(SIMPLE_FIELDS) and record["additionalProperties"] is False
    assert body["properties"]["records"]["maxItems"] == MAX_RECORDS
    assert {"200", "400", "413", "422"} <= set(spec["paths"]["/predict"]["post"]["responses"])


def test_predictions_match_the_python_api(server: Server, model_dir: Path) -> None:
    records = features(simple_records(MAX_RECORDS, seed=5))
    status, answer = server.post({"records": records})
    assert status == 200
    expected = Bundle.load(model_dir).predict(records)
    assert answer["model"] == Bundle.load(model_dir).model_id
    assert_scores_close(answer["probabilities"], expected, "the server's batches against Bundle.predict's")
    for empty in ({"records": []}, {"columns": {}}, {"columns": {"user": []}}):
        status, answer = server.post(empty)
        assert status == 200 and answer["probabilities"] == [], (empty, answer)


def test_missing_field_is_a_missing_value(server: Server) -> None:
    base = {"user": "u1", "item": "item3", "price": 10.0, "tags": ["red", "big"]}
    cases = [
        {k: v for k, v in base.items() if k != "price"},  # absent
        {**base, "price": None},  # null
        {**base, "tags": "red|big"},  # a joined string is the same list
        base,
        {},  # everything missing
        {**base, "label": 1},  # the label may ride along; it is ignored
    ]
    status, answer = server.post({"records": cases})
    assert status == 200
    p = np.array(answer["probabilities"])
    # One request, six batch positions: float32 tolerance (helpers.FLOAT32_RTOL).
    assert_scores_close(
        p[[1, 2, 5]], p[[0, 3, 3]], "absent and null price, a list and joined text, a label riding along"
    )
    assert_scores_differ(p[0], p[3], "a missing price against price 10")
    assert np.all((0 < p) & (p < 1))


def test_concurrent_requests_get_their_own_probabilities(server: Server, model_dir: Path) -> None:
    """Requests in flight together are scored in one pass; each must get back its own rows."""
    rows = features(simple_records(200, seed=6))
    requests = [rows[i : i + 1 + i % 5] for i in range(0, 120, 3)]
    with ThreadPoolExecutor(max_workers=16) as pool:
        answers = list(pool.map(lambda recs: server.post({"records": recs}), requests))
    bundle = Bundle.load(model_dir)
    for recs, (status, answer) in zip(requests, answers):
        assert status == 200
        assert_scores_close(
            answer["probabilities"], bundle.predict(recs), "requests batched together against each alone"
        )


# ---------------------------------------------------------------- bad requests
BAD_REQUESTS = [
    # name, body, status, words in the message, record, field
    ("unknown field", {"records": [OK, {"itme": "item1"}]}, 422, ["unknown field", "did you mean 'item'"], 1, "itme"),
    ("text for a number", {"records": [{"price": "cheap"}]}, 422, ["expected a number", "'cheap'"], 0, "price"),
    ("boolean", {"records": [OK, OK, {"user": True}]}, 422, ["expected a string or number", "bool"], 2, "user"),
    ("list for a scalar", {"records": [{"item": ["item1"]}]}, 422, ["expected a string or number", "list"], 0, "item"),
    ("object for a number", {"records": [{"price": {"v": 1}}]}, 422, ["expected a number", "dict"], 0, "price"),
    ("nested list", {"records": [OK, {"tags": [["red"]]}]}, 422, ["list of strings or numbers"], 1, "tags"),
    ("infinite number", b'{"records": [{"price": 1e999}]}', 422, ["finite number"], 0, "price"),
    (
        "huge integer",
        b'{"records": [{"price": 1' + b"0" * 400 + b"}]}",
        422,
        ["finite number", "401 digits"],
        0,
        "price",
    ),
    ("record not an object", {"records": [OK, "u1"]}, 422, ["expected an object", "a string"], 1, None),
    # large requests are checked column by column: the same errors, the same record index
    ("large: text for a number", {"records": [OK] * 70 + [{"price": "cheap"}]}, 422, ["'cheap'"], 70, "price"),
    ("large: unknown field", {"records": [OK] * 70 + [{"itme": "x"}]}, 422, ["did you mean 'item'"], 70, "itme"),
    ("large: boolean", {"records": [OK] * 80 + [{"price": True}]}, 422, ["expected a number", "bool"], 80, "price"),
    ("large: not an object", {"records": [OK] * 70 + [[1]]}, 422, ["expected an object", "a list"], 70, None),
    ("columns: boolean", {"columns": {"user": ["u1", True]}}, 422, ["expected a string or number"], 1, "user"),
    ("columns: text for a number", {"columns": {"price": [1, 2, "x"]}}, 422, ["expected a number", "'x'"], 2, "price"),
    ("columns: infinite", b'{"columns": {"price": [1, 1e999]}}', 422, ["finite number"], 1, "price"),
    ("columns: unknown field", {"columns": {"pirce": [1]}}, 422, ["did you mean 'price'"], None, "pirce"),
    ("columns: lengths differ", {"columns": {"user": ["u1"], "price": [1, 2]}}, 422, ["list of 2"], None, "user"),
    ("columns: not a list", {"columns": {"user": "u1"}}, 422, ["list of", "a string"], None, "user"),
    ("records and columns", {"records": [], "columns": {}}, 422, ['both "records" and "columns"'], None, None),
    ("records not a list", {"records": {"user": "u1"}}, 422, ['"records" must be a list', "an object"], None, None),
    ("no records key", {}, 422, ['missing "records"'], None, None),
    ("extra key", {"records": [], "limit": 3}, 422, ["unknown key(s) ['limit']"], None, None),
    ("body not an object", [OK], 422, ['expected a JSON object {"records"'], None, None),
    ("not JSON", b'{"records": [', 400, ["not valid JSON"], None, None),
    ("lone surrogate", b'{"records": [{"user": "\\ud800"}]}', 400, ["not valid JSON", "surrogate"], None, None),
    ("NaN", b'{"records": [{"price": NaN}]}', 400, ["NaN is not a JSON number"], None, None),
    ("not UTF-8", b'{"records": [{"user": "\xff"}]}', 400, ["not valid JSON"], None, None),
    (
        "too many records",
        {"records": [OK] * (MAX_RECORDS + 1)},
        413,
        [f"{MAX_RECORDS + 1} records", f"at most {MAX_RECORDS}"],
        None,
        None,
    ),
    (
        "body too large",
        {"records": [{"user": "u" * MAX_BODY}]},
        413,
        [f"at most {MAX_BODY}", "--max-body-bytes"],
        None,
        None,
    ),
]


@pytest.mark.parametrize("name,body,status,words,record,field", BAD_REQUESTS, ids=[b[0] for b in BAD_REQUESTS])
def test_bad_request_gets_a_precise_4xx(
    server: Server, name: str, body: Any, status: int, words: list[str], record: int | None, field: str | None
) -> None:
    raw_body = body if isinstance(body, bytes) else json.dumps(body).encode()
    got, raw = server.request("POST", "/predict", raw_body)
    assert got == status, raw
    assert b"Traceback" not in raw
    error = json.loads(raw)["error"]
    for word in words:
        assert word in error["message"], error
    assert error.get("record") == record and error.get("field") == field, error
    if record is not None:
        assert error["message"].startswith(f"record {record}"), error
    if field is not None:
        assert f"field {field!r}" in error["message"], error


def test_chunked_body_over_the_limit(server: Server) -> None:
    """A body sent in chunks has no Content-Length to refuse up front: counted as it comes."""
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    try:
        part = b" " * 4096
        conn.request(
            "POST",
            "/predict",
            body=iter([b'{"records": []'] + [part] * (MAX_BODY // 4096 + 2) + [b"}"]),
            encode_chunked=True,
            headers={"Content-Type": "application/json", "Transfer-Encoding": "chunked"},
        )
        resp = conn.getresponse()
        assert resp.status == 413
        assert "--max-body-bytes" in json.loads(resp.read())["error"]["message"]
    finally:
        conn.close()


def test_unknown_route_and_method(server: Server) -> None:
    status, raw = server.request("GET", "/nope")
    assert status == 404 and json.loads(raw)["error"]["message"] == "Not Found: GET /nope"
    status, raw = server.request("POST", "/health", b"{}")
    assert status == 405 and json.loads(raw)["error"]["type"] == "method_not_allowed"


def test_server_survives_everything(server: Server) -> None:
    """After the bad requests above (and a burst of them), the same process still answers."""
    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(lambda _: server.request("POST", "/predict", b"[[[["), range(40)))
    assert server.proc.poll() is None
    assert server.request("GET", "/health")[0] == 200
    assert server.post({"records": [OK]})[0] == 200
    assert "Traceback" not in server.log_path.read_text()


# ---------------------------------------------------------------- ONNX engine, several workers
def test_onnx_engine_with_two_workers(model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    onnx_path = tmp_path / "model.onnx"
    assert main(["export", str(model_dir), "--onnx", str(onnx_path), "--check-rows", "500"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["max_abs_diff"] <= 1e-5 and report["inputs"] == ["ids", "values", "mh0_offsets", "mh0_ids"]
    records = features(simple_records(MAX_RECORDS, seed=8))
    expected = Bundle.load(model_dir).predict(records)
    for server in start(
        model_dir, tmp_path / "onnx.log", "--engine", "onnx", "--onnx", str(onnx_path), "--workers", "2"
    ):
        status, raw = server.request("GET", "/health")
        assert json.loads(raw)["engine"] == "onnx"
        for _ in range(4):  # reaches both workers in all likelihood; each must answer the same
            status, answer = server.post({"records": records})
            assert status == 200
            np.testing.assert_allclose(answer["probabilities"], expected, rtol=0, atol=1e-5)
        status, raw = server.request("POST", "/predict", json.dumps({"records": [{"price": "x"}]}).encode())
        assert status == 422 and json.loads(raw)["error"]["field"] == "price"


def test_serve_refuses_a_bad_model_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["serve", str(tmp_path / "nothing"), "--port", str(free_port())]) == 2
    assert "no such model folder" in capsys.readouterr().err


# ---------------------------------------------------------------- the load test tool
def test_loadtest_runs_against_a_live_server(server: Server, model_dir: Path, tmp_path: Path) -> None:
    data = write_records_csv(tmp_path / "rows.csv", simple_records(300, seed=9))
    out = tmp_path / "load.json"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    command = [
        sys.executable,
        str(REPO / "benchmarks" / "loadtest.py"),
        "--model",
        str(model_dir),
        "--data",
        str(data),
        "--url",
        f"http://127.0.0.1:{server.port}",
        "--sizes",
        "1,8",
        "--clients",
        "1,4",
        "--requests",
        "40",
        "--large-requests",
        "20",
        "--warmup",
        "4",
        "--seconds",
        "30",
        "--json",
        str(out),
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120, env=env)
    assert done.returncode == 0, done.stderr
    report = json.loads(out.read_text())
    cases = [(r["size"], r["clients"], r["requests"], r["errors"]) for r in report["results"]]
    assert cases == [(1, 1, 40, 0), (1, 4, 40, 0), (8, 1, 20, 0), (8, 4, 20, 0)]
    assert all(r["p50_ms"] <= r["p99_ms"] <= r["max_ms"] and r["requests_per_s"] > 0 for r in report["results"])
    assert "| records/request |" in done.stdout

    remote = subprocess.run(
        [*command[:6], "--url", "http://192.0.2.1:8000"], capture_output=True, text=True, timeout=60, env=env
    )
    assert remote.returncode != 0 and "loopback" in remote.stderr


# ---------------------------------------------------------------- body formats, metrics, reloads
def arrow_body(columns: dict[str, list[Any]]) -> bytes:
    import pyarrow as pa

    table = pa.table(columns)
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return bytes(sink.getvalue().to_pybytes())


ARROW = {"Content-Type": "application/vnd.apache.arrow.stream"}


def test_every_body_format_scores_as_deepfm_predict(server: Server, model_dir: Path, tmp_path: Path) -> None:
    """Records (small and large requests), columns and an Arrow stream: the same rows get
    `deepfm predict`'s probabilities for the same file, whatever the body."""
    rows = simple_records(200, seed=11)
    data = write_records_csv(tmp_path / "rows.csv", rows)
    assert main(["predict", str(model_dir), "--data", str(data), "--out", str(tmp_path / "p.csv"), "--quiet"]) == 0
    import pyarrow.csv as pacsv

    expected = pacsv.read_csv(tmp_path / "p.csv").column("probability").to_numpy()
    records = [{k: v for k, v in r.items() if k in SIMPLE_FIELDS and v is not None} for r in rows]
    columns = {k: [r[k] for r in rows] for k in SIMPLE_FIELDS}
    model_id = Bundle.load(model_dir).model_id
    answers = {
        "records, large": server.post({"records": records}),
        "columns": server.post({"columns": columns}),
    }
    small = [server.post({"records": records[i : i + 20]}) for i in range(0, 200, 20)]
    assert all(status == 200 and a["model"] == model_id for status, a in small)
    answers["records, small"] = (
        200,
        {"probabilities": sum((a["probabilities"] for _, a in small), []), "model": model_id},
    )
    status, raw = server.request("POST", "/predict", arrow_body(columns), ARROW)
    answers["arrow"] = (status, json.loads(raw))
    for name, (status, answer) in answers.items():
        assert status == 200 and answer["model"] == model_id, (name, answer)
        assert_scores_close(answer["probabilities"], expected, f"{name} body against deepfm predict")


def test_arrow_body_errors_name_record_and_field(server: Server) -> None:
    status, raw = server.request("POST", "/predict", arrow_body({"price": ["1.5", "2", "cheap"]}), ARROW)
    error = json.loads(raw)["error"]
    assert status == 422 and error["record"] == 2 and error["field"] == "price", error
    assert "expected a number, got 'cheap'" in error["message"]
    status, raw = server.request("POST", "/predict", arrow_body({"pirce": [1.0]}), ARROW)
    assert status == 422 and json.loads(raw)["error"]["field"] == "pirce"
    status, raw = server.request("POST", "/predict", b"not arrow", ARROW)
    assert status == 400 and json.loads(raw)["error"]["type"] == "invalid_arrow"


def test_an_arrow_body_past_max_records_is_not_read_to_its_end(server: Server) -> None:
    """Records are counted batch by batch: the batch past --max-records ends the reading with
    the 413 a JSON body gets, and what follows it (here not Arrow at all) is never decoded."""
    import pyarrow as pa

    batch = pa.table({"price": [1.0] * 101})  # three: 303 records, past MAX_RECORDS
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, batch.schema) as writer:
        for _ in range(3):
            writer.write_table(batch)
    body = bytes(sink.getvalue().to_pybytes())[:-8] + b"\xff" * 64  # garbage for the end-of-stream mark
    status, raw = server.request("POST", "/predict", body, ARROW)
    error = json.loads(raw)["error"]
    assert status == 413 and error["type"] == "too_many_records", error
    assert f"at most {MAX_RECORDS}" in error["message"] and "--max-records" in error["message"]
    assert server.post({"records": [OK] * (MAX_RECORDS + 1)})[1]["error"]["type"] == "too_many_records"


def test_a_boolean_arrow_column_is_refused_as_a_json_boolean(server: Server) -> None:
    """Arrow would read true as 1.0 (a numeric field) or "true" (a text field): refused with
    the JSON body's error, naming the record and the field."""
    import pyarrow as pa

    cases = {"price": [None, True], "user": [None, False], "tags": pa.array([None, [True]], pa.list_(pa.bool_()))}
    for field, values in cases.items():
        status, raw = server.request("POST", "/predict", arrow_body({field: values}), ARROW)
        error = json.loads(raw)["error"]
        json_status, json_answer = server.post({"records": [{}, {field: pa.array(values)[1].as_py()}]})
        assert status == json_status == 422 and error == json_answer["error"], (field, error, json_answer)
        assert error["record"] == 1 and error["field"] == field
    assert server.request("POST", "/predict", arrow_body({"price": pa.nulls(2, pa.bool_())}), ARROW)[0] == 200


def test_a_list_of_floats_scores_alike_in_every_body_format(server: Server) -> None:
    """A multi-hot list of numbers: 1.0 is the token "1" in a JSON body (records or columns)
    as in an Arrow body's list<double> column and a joined string."""
    import pyarrow as pa

    rows = [{**OK, "tags": [1.0, 2.5, 3]}] * 2
    joined = server.post({"records": [{**OK, "tags": "1|2.5|3"}] * 2})
    columns = {k: [r[k] for r in rows] for k in rows[0]}
    arrow = {**columns, "tags": pa.array([[1.0, 2.5, 3.0]] * 2, pa.list_(pa.float64()))}
    status, raw = server.request("POST", "/predict", arrow_body(arrow), ARROW)
    answers = {
        "records": server.post({"records": rows}),
        "columns": server.post({"columns": columns}),
        "arrow": (status, json.loads(raw)),
    }
    for name, (status, answer) in answers.items():
        assert status == 200, (name, answer)
        assert answer["probabilities"] == joined[1]["probabilities"], name


def test_refused_bodies_are_counted_in_the_records_metric(server: Server) -> None:
    """deepfm_records_total counts the requests refused whole too, under their status (0
    records: none were read as records)."""
    server.request("POST", "/predict", b'{"records": [')  # not JSON
    server.post({"records": [OK] * (MAX_RECORDS + 1)})  # too many records
    server.request("POST", "/predict", b"not arrow", ARROW)
    server.request("POST", "/predict", arrow_body({"price": ["cheap"]}), ARROW)  # a record refused
    text = server.request("GET", "/metrics")[1].decode()
    for labels in ('format="json",status="400"', 'format="json",status="413"', 'format="arrow",status="400"'):
        assert f"deepfm_records_total{{{labels}}} 0.0" in text, labels
    assert re.search(r'deepfm_records_total\{format="arrow",status="422"\} [1-9]', text)


def test_request_id_ready_and_metrics(server: Server, model_dir: Path) -> None:
    model_id = Bundle.load(model_dir).model_id
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    try:
        conn.request("POST", "/predict", json.dumps({"records": [OK]}), {"X-Request-ID": "req-42"})
        resp = conn.getresponse()
        resp.read()
        assert resp.status == 200 and resp.getheader("X-Request-ID") == "req-42"
        assert resp.getheader("X-Model-ID") == model_id
        conn.request("GET", "/health")
        resp = conn.getresponse()
        resp.read()
        generated = resp.getheader("X-Request-ID")
        assert generated and generated != "req-42"
        # an id that could forge a log line (a space, a tab) is replaced by one of the server's
        conn.request("GET", "/health", headers={"X-Request-ID": "a b\tGET /admin 200"})
        resp = conn.getresponse()
        resp.read()
        replaced = resp.getheader("X-Request-ID")
        assert replaced and " " not in replaced and "\t" not in replaced and replaced != generated
    finally:
        conn.close()
    status, raw = server.request("GET", "/ready")
    assert status == 200 and json.loads(raw) == {"status": "ready", "model": model_id}
    assert server.post({"records": [{"price": "cheap"}]})[0] == 422  # this test's own, not the ones above
    status, raw = server.request("GET", "/metrics")
    text = raw.decode()
    assert status == 200
    assert 'deepfm_requests_total{path="/predict",status="200"}' in text
    assert 'deepfm_requests_total{path="/predict",status="422"}' in text
    assert f'model="{model_id}"' in text and "deepfm_model_loaded_timestamp_seconds" in text
    assert 'deepfm_records_total{format="records",status="200"}' in text
    assert "deepfm_batch_rows_count" in text and 'deepfm_request_seconds_bucket{le="0.01",path="/predict"}' in text
    status, raw = server.request("POST", "/admin/reload", b"")
    assert status == 404  # no DEEPFM_ADMIN_TOKEN, no admin route


def test_a_client_gone_before_its_body_is_not_a_server_error(server: Server) -> None:
    """A client that leaves mid-body gets no answer; the metrics count a 499, not a 500."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
        head = b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n"
        sock.sendall(head + b'{"records": [')
    deadline = time.monotonic() + 20
    while 'deepfm_requests_total{path="/predict",status="499"}' not in server.request("GET", "/metrics")[1].decode():
        assert time.monotonic() < deadline, "the request that lost its client was never counted"
        time.sleep(0.1)
    assert 'path="/predict",status="500"' not in server.request("GET", "/metrics")[1].decode()
