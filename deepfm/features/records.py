"""Records, DataFrames and tables checked against a schema: the Arrow table the pipeline
encodes, with errors that name the record index and the field.

These are the checks of the Python API (``Bundle.predict``) and of the HTTP service. A record
is a mapping {field: value}; an absent field or ``None`` is a missing value, a field the
schema does not know is an error (a typo would otherwise be a missing value). A DataFrame or
an Arrow table is read as a file would be, its extra columns ignored.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from deepfm.data.columns import float_text, to_float, to_strings, with_values
from deepfm.data.schema import FieldSpec, Schema
from deepfm.data.source import Chunk
from deepfm.data.tables import TableSource, as_table, record_value
from deepfm.errors import DataError
from deepfm.features.pipeline import FeaturePipeline


@dataclass
class CheckedRecords:
    """Records that passed :meth:`RecordChecker.check`, by column: for each field given, one
    value per record (None: missing; float for numeric fields, text for the others)."""

    rows: int
    columns: dict[str, list[object]]


class RecordChecker:
    """The checks for one schema; everything per schema is built once here."""

    def __init__(self, schema: Schema) -> None:
        self.schema = schema
        self._specs = {f.name: f for f in schema.fields}
        self.numeric = {f.name for f in schema.fields if f.kind == "numeric"}
        self.multi_hot = {f.name: f.separator for f in schema.fields if f.kind == "multi_hot"}
        # The label and the file's other declared columns may ride along in a record; they are
        # dropped. Anything else is a mistake worth reporting (a typo would be a missing value).
        self._ignored = {schema.label, *(schema.columns or ())} - set(self._specs)
        # The types of table()'s and columns_table()'s columns: every large or Arrow request
        # reads them, so they are built here, once per model, not once per request.
        self.arrow_schema = pa.schema(
            [(f.name, pa.float64() if f.name in self.numeric else pa.string()) for f in schema.fields]
        )

    def to_table(self, data: object) -> pa.Table:
        """Records (a list of dicts, or one dict) checked strictly (see :meth:`check`); a
        pandas/polars DataFrame or an Arrow table as it is."""
        if isinstance(data, dict):
            data = [data]
        if isinstance(data, (list, tuple)):
            return self.records_table(data)
        return as_table(data, numeric=self.numeric, multi_hot=self.multi_hot)

    def records_table(self, records: object) -> pa.Table:
        """Records -> a table with exactly the schema's fields, every value checked (see
        :meth:`check`). Numeric fields float64, the others text, absent fields null."""
        return self.table([self.check(records)])

    def check(self, records: object) -> CheckedRecords:
        """Check records (a list of {field: value}) and put their values in columns. Raises
        DataError naming the record index and the field: an unknown field, a list or object
        where one value belongs, a boolean, a number that does not parse or is not finite.
        ``None`` or an absent field is a missing value. Pure Python for plain values, so a
        request of one record costs microseconds; see :meth:`table` for the Arrow side."""
        if not isinstance(records, (list, tuple)):
            raise DataError(f"expected a list of records (objects of field -> value), got {json_type(records)}")
        n = len(records)
        columns: dict[str, list[object]] = {}
        text_numbers: set[str] = set()
        for i, rec in enumerate(records):
            if not isinstance(rec, dict):
                raise DataError(f"expected an object of field -> value, got {json_type(rec)}", line=f"record {i}")
            for key, v in rec.items():
                if key not in self._specs:
                    if key in self._ignored:
                        continue
                    raise DataError(self._unknown_message(key), line=f"record {i}", field=str(key))
                column = columns.get(key)
                if column is None:
                    column = columns[key] = [None] * n
                x = self._value(v, key, i)
                if key in self.numeric and x is not None and type(x) is not float:
                    text_numbers.add(key)  # a string, parsed below
                column[i] = x
        for name in text_numbers:  # numbers written as text: parsed and checked as in a file
            table = pa.table({name: pa.array([None if v is None else str(v) for v in columns[name]], pa.string())})
            x = to_float(Chunk(table=table, row0=0, reader=TableSource(table)), name)
            columns[name] = [None if v != v else float(v) for v in x.tolist()]
        return CheckedRecords(rows=n, columns=columns)

    def _value(self, v: object, key: str, i: int) -> object:
        """Record ``i``'s value of field ``key`` as its column holds it: None, a float, or text."""
        # Plain JSON values take a shortcut; record_value has the full rules (same results).
        t = type(v)
        try:
            if key in self.numeric:
                x = float(v) if t is float or t is int else record_value(v, True)  # type: ignore[arg-type]
            else:
                x = v if t is str else record_value(v, False, self.multi_hot.get(key))
        except ValueError as exc:
            raise DataError(str(exc), line=f"record {i}", field=key) from None
        except OverflowError:  # an integer beyond any float
            raise DataError(
                f"expected a finite number, got an integer of {len(str(v))} digits", line=f"record {i}", field=key
            ) from None
        if type(x) is float:
            if x != x:
                return None  # NaN is a missing value, as in a file
            if x in (math.inf, -math.inf):
                raise DataError(f"expected a finite number, got {v!r}", line=f"record {i}", field=key)
        return x

    def table(self, parts: list[CheckedRecords]) -> pa.Table:
        """One table of the schema's fields from checked records (several requests at once).
        Numeric fields float64, the others text, absent fields null."""
        arrays = []
        for spec in self.schema.fields:
            values: list[object] = []
            for part in parts:
                values.extend(part.columns.get(spec.name) or [None] * part.rows)
            arrays.append(pa.array(values, pa.float64() if spec.name in self.numeric else pa.string()))
        return pa.table(arrays, names=self.schema.names)

    # ------------------------------------------------------------ by column (the HTTP service)
    def record_columns(self, records: Sequence[object]) -> dict[str, list[object]]:
        """Records (a list of {field: value}) as lists by field, for :meth:`columns_table`.
        Only the structure is checked here: every record an object, every key a field."""
        keys = self.check_structure(records)
        return {name: [r.get(name) for r in records] for name in self.schema.names if name in keys}  # type: ignore[attr-defined]

    def check_structure(self, records: Sequence[object]) -> set[object]:
        """The keys of records (a list of {field: value}), once every record is known to be an
        object and every key a field (or a column to ignore); the values are not looked at."""
        if not isinstance(records, (list, tuple)):
            raise DataError(f"expected a list of records (objects of field -> value), got {json_type(records)}")
        if not all(type(r) is dict for r in records):
            i = next(i for i, r in enumerate(records) if type(r) is not dict)
            raise DataError(f"expected an object of field -> value, got {json_type(records[i])}", line=f"record {i}")
        keys: set[object] = set().union(*records) if records else set()
        unknown = keys - self._specs.keys() - self._ignored
        if unknown:
            i, key = min((i, k) for i, r in enumerate(records) for k in r if k in unknown)
            raise DataError(self._unknown_message(key), line=f"record {i}", field=str(key))
        return keys

    def plain_records_table(self, records: list[dict[str, object]]) -> pa.Table | None:
        """Records whose structure passed :meth:`check_structure` as :meth:`table` types them,
        in one Arrow call (C++ reads the dicts), or None when a value is not plain: numbers
        in numeric fields, strings in the others, null anywhere. Arrow reads a boolean as a
        number: only for records known to hold none (a JSON body without ``true``/``false``).
        A multi-hot field's joined string is plain; its list is not (joined in Python)."""
        try:
            return pa.Table.from_struct_array(pa.array(records, type=pa.struct(list(self.arrow_schema))))
        except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError):
            return None

    def columns_table(self, columns: dict[str, list[object]], rows: int) -> pa.Table:
        """Columns of raw values (JSON's: numbers, text, lists, null) checked and typed as
        :meth:`table` types them; the same values, the same errors naming record and field,
        but a column of plain values goes to Arrow in one call instead of value by value."""
        unknown = [k for k in columns if k not in self._specs and k not in self._ignored]
        if unknown:
            raise DataError(self._unknown_message(unknown[0]), field=str(unknown[0]))
        arrays = []
        for spec in self.schema.fields:
            values = columns.get(spec.name)
            if values is None:
                arrays.append(pa.nulls(rows, pa.float64() if spec.name in self.numeric else pa.string()))
                continue
            if not isinstance(values, list) or len(values) != rows:
                got = f"{len(values)} values" if isinstance(values, list) else json_type(values)
                raise DataError(f"expected a list of {rows} values (one per record), got {got}", field=spec.name)
            arrays.append(self._column_array(spec.name, values))
        return pa.table(arrays, schema=self.arrow_schema)

    def _column_array(self, name: str, values: list[object]) -> pa.Array:
        """One field's values as an Arrow array. Plain columns (numbers, or text for the text
        fields) go to Arrow whole; any other column takes the per-value rules of :meth:`check`,
        which also say which record is wrong."""
        types = set(map(type, values))
        numeric = name in self.numeric
        try:
            if numeric and types <= _NUMBERS:
                array = pa.array(values, pa.float64())
                if float not in types or pc.all(pc.is_finite(array)).as_py() is not False:
                    return array  # ints are finite; NaN and inf take the slow path below
            elif not numeric and name not in self.multi_hot and types <= _TEXT:
                return pa.array(values, pa.string())
        except (pa.ArrowInvalid, OverflowError):  # an integer beyond int64: checked below
            pass
        part = self.check([{name: v} for v in values])
        return self.table([part]).column(name).combine_chunks()

    def arrow_table(self, table: pa.Table) -> pa.Table:
        """An Arrow table (an Arrow IPC request body) as :meth:`table` types its columns, read as
        a file would be: numbers from numeric or text columns, other fields as text. Errors
        name the record (row) and the field."""
        unknown = [k for k in table.column_names if k not in self._specs and k not in self._ignored]
        if unknown:
            raise DataError(self._unknown_message(unknown[0]), field=str(unknown[0]))
        twice = next((k for k in table.column_names if table.column_names.count(k) > 1), None)
        if twice is not None:
            raise DataError("the Arrow body has this column more than once", field=twice)
        chunk = Chunk(table=table, row0=0, reader=TableSource(table))
        arrays = []
        for spec in self.schema.fields:
            try:
                arrays.append(self._arrow_column(chunk, spec.name))
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError) as exc:
                # Arrow's own message names neither the column nor the field: say which it is.
                raise DataError(f"this Arrow column cannot be read: {exc}", field=spec.name) from None
        return pa.table(arrays, schema=self.arrow_schema)

    def _arrow_column(self, chunk: Chunk, name: str) -> pa.ChunkedArray | pa.Array:
        """One field of an Arrow table as :meth:`table` types it. A column already of that type
        is kept as it is (after the check for infinite numbers): "" and NaN are missing values
        to the pipeline, as they are in :meth:`table`'s columns."""
        table = chunk.table
        numeric = name in self.numeric
        if name not in table.column_names:
            return pa.nulls(table.num_rows, pa.float64() if numeric else pa.string())
        col = table.column(name)
        _refuse_booleans(chunk, name, numeric)
        if numeric and pa.types.is_float64(col.type):
            inf = np.isinf(col.to_numpy())
            if inf.any():
                i = int(np.flatnonzero(inf)[0])
                raise chunk.error(i, f"expected a finite number, got {col[i].as_py()!r}", field=name)
            return col
        if numeric:
            return pa.array(to_float(chunk, name), pa.float64(), from_pandas=True)
        if name in self.multi_hot and (pa.types.is_list(col.type) or pa.types.is_large_list(col.type)):
            # binary_join takes only list<string>: lists of numbers or large strings are cast first
            return pc.binary_join(_list_of_strings(col), self.multi_hot[name])
        if pa.types.is_string(col.type) or pa.types.is_large_string(col.type):
            return col.cast(pa.string())
        return to_strings(chunk, name).cast(pa.string())

    def _unknown_message(self, key: object) -> str:
        names = self.schema.names
        close = difflib.get_close_matches(key, names, n=1) if isinstance(key, str) else []
        if close:
            return f"unknown field; did you mean {close[0]!r}?"
        shown = ", ".join(names[:12]) + (f", ... ({len(names)} fields)" if len(names) > 12 else "")
        return f"unknown field; the model's fields are {shown}"


def _list_of_strings(col: pa.ChunkedArray) -> pa.ChunkedArray:
    """A list column as a list of strings; numbers written as a JSON body's are (float_text: [1.0]
    is "1", 12345678901.0 is "12345678901"), where a plain cast writes "1.2345678901e+10"."""
    if not pa.types.is_floating(col.type.value_type):
        return col.cast(pa.list_(pa.string()))
    # NaN stays "nan", as str(nan) does
    chunks = [with_values(arr, float_text(pc.list_flatten(arr))) for arr in col.chunks]
    return pa.chunked_array(chunks, pa.large_list(pa.string()))


def _refuse_booleans(chunk: Chunk, name: str, numeric: bool) -> None:
    """A boolean Arrow column (or a list column of booleans) is refused as a JSON boolean is
    (:func:`deepfm.data.tables.record_value`): Arrow would read true as 1 or "true", a value
    the other body formats refuse. The error names the first record holding one."""
    col = chunk.table.column(name)
    is_list = pa.types.is_list(col.type) or pa.types.is_large_list(col.type)
    if is_list and pa.types.is_boolean(col.type.value_type):
        held = pc.greater(pc.fill_null(pc.list_value_length(col), 0), 0)
        message = "expected a list of strings or numbers"
    elif pa.types.is_boolean(col.type):
        held = col.is_valid()
        message = f"expected {'a number' if numeric else 'a string or number'}, got bool"
    else:
        return
    if pc.any(held).as_py():
        i = int(np.flatnonzero(held.to_numpy(zero_copy_only=False))[0])
        raise chunk.error(i, message if is_list else f"{message} {col[i].as_py()!r}", field=name)


_NUMBERS = {int, float, type(None)}
_TEXT = {str, type(None)}


def json_type(value: object) -> str:
    """How a JSON reader would name a value's type: an object, a list, a string, ..."""
    names = {dict: "an object", list: "a list", str: "a string", bool: "a boolean", type(None): "null"}
    return names.get(type(value), "a number" if isinstance(value, (int, float)) else type(value).__name__)


def describe_fields(schema: Schema) -> list[dict[str, Any]]:
    """The fields a record may hold: name, kind, what each accepts, and its options."""
    fields = []
    for spec in schema.fields:
        entry: dict[str, Any] = {"name": spec.name, "kind": spec.kind, "accepts": _accepts(spec)}
        if spec.kind == "numeric":
            entry["mode"] = spec.mode
        if spec.kind == "multi_hot":
            entry["separator"] = spec.separator
        if spec.is_hashed:  # any value is accepted; values may share a row
            entry["hash_buckets"] = spec.hash_buckets
        fields.append(entry)
    return fields


def example_record(pipeline: FeaturePipeline) -> dict[str, Any]:
    """A record of typical values: each categorical's most frequent value, numbers inside
    the most common bin or at the training mean."""
    return {f.name: pipeline.encoders[f.name].example(pipeline.states[f.name]) for f in pipeline.schema.fields}


def _accepts(spec: FieldSpec) -> str:
    if spec.kind == "numeric":
        return "a number (or a string holding one); null or absent = missing"
    if spec.kind == "multi_hot":
        return f"a list of strings or numbers, or one string joined by {spec.separator!r}; null, [] or absent = missing"
    return "a string or number; null or absent = missing"
