"""Property test of the HTTP request model against the real service: whatever body a client
sends to POST /predict, the answer is 200 with one finite probability per record, or a 4xx
JSON error (type and message; record and field where one is at fault). Never a 5xx, never a
traceback, and the server stays up. Bounded in CI; ``benchmarks/fuzz.py`` runs it long."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")

from test_fuzz import FUZZ, TEXT, outcome  # noqa: E402

from serving import MAX_BODY, MAX_RECORDS, Server, start  # noqa: E402

TARGET = "HTTP bodies -> POST /predict"

JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**80), 2**80)
    | st.floats(allow_nan=False, allow_infinity=False)
    | TEXT
    | st.sampled_from(["nan", "inf", "1e400", "", "12", "red|green", "u1", "item3"]),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(TEXT, inner, max_size=3),
    max_leaves=8,
)
FIELD_NAMES = st.sampled_from(["user", "item", "price", "tags", "label", "Price", "", "records"]) | TEXT
RECORD = st.dictionaries(FIELD_NAMES, JSON_VALUES, max_size=6)
BODIES = (
    st.builds(lambda recs: {"records": recs}, st.lists(RECORD, max_size=MAX_RECORDS + 5)).map(
        lambda d: json.dumps(d).encode()
    )
    | JSON_VALUES.map(lambda v: json.dumps(v).encode())
    | st.builds(
        lambda recs, extra: json.dumps({"records": recs, **extra}).encode(),
        st.lists(RECORD, max_size=3),
        st.dictionaries(TEXT, JSON_VALUES, max_size=2),
    )
    | st.sampled_from(
        [
            b'{"records": [{"price": NaN}]}',
            b'{"records": [{"price": Infinity}]}',
            b"{",
            b"",
            b"\xff\xfe",
            b'{"records": ' + b"[" * 5000 + b"]" * 5000 + b"}",
            b'{"records": [' + b'{"user": "u1"},' * 60 + b"{}]}",
        ]
    )
    | st.binary(max_size=200)
    | st.builds(lambda n: b'{"records": [{"tags": "' + b"a|" * n + b'"}]}', st.integers(0, MAX_BODY))
)


@pytest.fixture(scope="module")
def fuzz_server(model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    log = tmp_path_factory.mktemp("serve-fuzz-log") / "server.log"
    yield from start(model_dir, log, "--max-records", str(MAX_RECORDS), "--max-body-bytes", str(MAX_BODY))


@FUZZ
@given(body=BODIES)
def test_any_body_gets_200_or_a_precise_4xx(fuzz_server: Server, body: bytes) -> None:
    status, raw = fuzz_server.request("POST", "/predict", body)
    assert status < 500, f"{status} for {body[:200]!r}: {raw[:500]!r}"
    assert b"Traceback" not in raw
    answer = json.loads(raw)
    if status == 200:
        records = json.loads(body)["records"]
        probs = answer["probabilities"]
        assert len(probs) == len(records) and all(0.0 <= p <= 1.0 for p in probs)
        outcome(TARGET, None)
        return
    assert 400 <= status < 500
    error = answer["error"]
    assert error["type"] and error["message"]
    event_name = f"{status} {error['type']}"
    if error.get("field") is not None:
        assert error["field"] in error["message"] or error.get("record") is not None
    outcome(TARGET, _HttpError(event_name))
    assert fuzz_server.proc.poll() is None  # still serving


class _HttpError(Exception):
    """An HTTP error answer, named for the outcome counts."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.detail = name
