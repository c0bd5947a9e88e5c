"""Request bodies -> checked Arrow tables, and the errors a request can get.

Three bodies, one result (a table typed as :meth:`RecordChecker.table` types it, which the
batcher concatenates and the FeaturePipeline encodes as it encodes a file):

    application/json                  {"records": [{field: value, ...}, ...]}
    application/json                  {"columns": {field: [value, ...], ...}}
    application/vnd.apache.arrow.stream  an Arrow IPC stream of the fields' columns

JSON is parsed by orjson, then values are checked column by column
(:meth:`RecordChecker.columns_table`): a column of plain numbers or text goes to Arrow in one
call, and only a column holding something else is checked value by value, which is also what
names the record and field of a bad value.
"""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pyarrow as pa
import pyarrow.ipc

from deepfm.errors import DataError
from deepfm.features.records import RecordChecker, json_type

ARROW_STREAM = "application/vnd.apache.arrow.stream"
BODY_KEYS = '{"records": [...]} or {"columns": {field: [...]}}'


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


def record_error(exc: DataError) -> RequestError:
    """A DataError about records (``line`` is "record 3") as a 422 naming record and field."""
    match = re.fullmatch(r"record (\d+)", str(exc.line)) if exc.line is not None else None
    where = [str(exc.line)] if exc.line is not None else []
    if exc.field is not None:
        where.append(f"field {exc.field!r}")
    message = f"{', '.join(where)}: {exc.detail}" if where else exc.detail
    return RequestError(422, "invalid_record", message, int(match.group(1)) if match else None, exc.field)


def too_large(what: str, limit: int) -> RequestError:
    return RequestError(
        413, "body_too_large", f"the body is {what}; this server takes at most {limit} (deepfm serve --max-body-bytes)"
    )


class ClientGone(Exception):
    """The client disconnected before its body arrived."""


async def asgi_chunks(receive: Callable[[], Awaitable[dict[str, Any]]]) -> AsyncIterator[bytes]:
    """The body's parts from ASGI ``receive`` messages; ClientGone when the client leaves."""
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientGone
        yield message.get("body", b"")
        if not message.get("more_body"):
            return


async def read_body(declared: str | None, chunks: AsyncIterator[bytes], limit: int) -> bytes:
    """The request body (``declared``: its Content-Length), refused (413) past ``limit`` bytes
    without reading it all."""
    if declared is not None:
        if not declared.isdigit():
            raise RequestError(400, "bad_request", f"Content-Length is not a number: {declared!r}")
        if int(declared) > limit:
            raise too_large(f"{int(declared)} bytes", limit)
    body = bytearray()
    async for part in chunks:
        body += part
        if len(body) > limit:  # a chunked body has no Content-Length to check up front
            raise too_large(f"over {limit} bytes", limit)
    return bytes(body)


def _no_constant(name: str) -> None:
    raise ValueError(f"{name} is not a JSON number")


def load_json(body: bytes) -> Any:
    """The parsed body (see :func:`load_json_plain`)."""
    return load_json_plain(body)[0]


def load_json_plain(body: bytes) -> tuple[Any, bool]:
    """(the parsed body, whether its numbers are all finite doubles and it holds no boolean).
    orjson first; what it refuses is parsed again by the standard library, whose message is
    the one the client gets, and which reads numbers beyond a double (``1e999``) so the record
    check can name their record and field."""
    import orjson

    try:
        return orjson.loads(body), b"true" not in body and b"false" not in body
    except orjson.JSONDecodeError:
        pass
    try:
        payload = json.loads(body, parse_constant=_no_constant)
    except (ValueError, RecursionError) as exc:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise RequestError(400, "invalid_json", f"the body is not valid JSON: {exc}") from None
    try:  # a lone surrogate ("\ud800"): the standard library reads it, but no UTF-8 text (so no
        # Arrow string) can hold it; refused here, not in the scoring pass
        json.dumps(payload, ensure_ascii=False).encode()
    except UnicodeEncodeError as exc:
        bad = exc.object[exc.start : exc.end].encode("unicode_escape").decode()
        raise RequestError(400, "invalid_json", f"the body is not valid JSON: a lone surrogate {bad}") from None
    return payload, False


def json_body(payload: Any, max_records: int) -> tuple[str, Any, int]:
    """("records", the list, rows) or ("columns", the dict, rows) from a parsed JSON body,
    after the checks that concern the whole body."""
    if not isinstance(payload, dict):
        raise RequestError(422, "invalid_body", f"expected a JSON object {BODY_KEYS}, got {json_type(payload)}")
    unknown = sorted(set(payload) - {"records", "columns"})
    if unknown:
        raise RequestError(422, "invalid_body", f"unknown key(s) {unknown}; the body is {BODY_KEYS}")
    if not payload:
        raise RequestError(422, "invalid_body", f'missing "records": the body is {BODY_KEYS}')
    if len(payload) > 1:
        raise RequestError(422, "invalid_body", f'both "records" and "columns": the body is {BODY_KEYS}')
    if "records" in payload:
        records = payload["records"]
        if not isinstance(records, list):
            raise RequestError(422, "invalid_body", f'"records" must be a list of objects, got {json_type(records)}')
        return "records", records, _check_rows(len(records), max_records)
    columns = payload["columns"]
    if not isinstance(columns, dict):
        raise RequestError(
            422, "invalid_body", f'"columns" must be an object of field -> list, got {json_type(columns)}'
        )
    rows = max((len(v) for v in columns.values() if isinstance(v, list)), default=0)
    return "columns", columns, _check_rows(rows, max_records)


def _check_rows(rows: int, max_records: int) -> int:
    if rows > max_records:
        raise too_many_records(f"{rows} records", max_records)
    return rows


def too_many_records(what: str, max_records: int) -> RequestError:
    return RequestError(
        413,
        "too_many_records",
        f"{what}; this server takes at most {max_records} per request (deepfm serve --max-records)",
    )


def parse_records(body: bytes, max_records: int) -> list[Any]:
    """The ``records`` list of a /predict body (deepfm 0.1's helper, kept for its callers)."""
    kind, data, _ = json_body(load_json(body), max_records)
    if kind != "records":
        raise RequestError(422, "invalid_body", 'expected {"records": [...]}')
    return list(data)


def json_table(checker: RecordChecker, kind: str, data: Any, rows: int, plain: bool = False) -> pa.Table:
    """A parsed JSON body's rows as a checked table (see the module docstring). ``plain``:
    load_json_plain said the body holds no boolean and no number beyond a double, so records
    may go to Arrow whole (RecordChecker.plain_records_table), about twice as fast."""
    try:
        if kind == "records" and plain:
            checker.check_structure(data)
            table = checker.plain_records_table(data)
            if table is not None:
                return table
        columns = checker.record_columns(data) if kind == "records" else data
        return checker.columns_table(columns, rows)
    except DataError as exc:
        raise record_error(exc) from None


def read_arrow(body: bytes, max_records: int) -> pa.Table:
    """An Arrow IPC stream body as a table, after the checks that concern the whole body. The
    records are counted batch by batch: reading stops at the first batch past ``max_records``
    (413, as for a JSON body), so a body of too many records is never decoded whole."""
    batches, rows = [], 0
    try:
        with pyarrow.ipc.open_stream(pa.py_buffer(body)) as reader:
            for batch in reader:
                rows += batch.num_rows
                if rows > max_records:
                    raise too_many_records(f"over {max_records} records", max_records)
                batches.append(batch)
            return pa.Table.from_batches(batches, reader.schema)
    except (pa.ArrowInvalid, OSError) as exc:
        raise RequestError(400, "invalid_arrow", f"the body is not an Arrow IPC stream: {exc}") from None


def arrow_table(checker: RecordChecker, table: pa.Table) -> pa.Table:
    """An Arrow body's rows as a checked table."""
    try:
        return checker.arrow_table(table)
    except DataError as exc:
        raise record_error(exc) from None
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError) as exc:
        raise RequestError(422, "invalid_record", f"a column of the Arrow body cannot be read: {exc}") from None
