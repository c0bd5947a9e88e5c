"""Property tests: whatever a user's file or records hold, deepfm either reads them or raises
one of its documented errors (DeepFMError: DataError, ConfigError) naming what was wrong;
and whatever it accepts reaches the model as finite numbers and in-range ids.

CI runs a bounded number of cases per target. ``python benchmarks/fuzz.py --cases 10000``
runs the same targets long and writes the outcome counts (docs/reliability.md).
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from deepfm.bundle import Bundle
from deepfm.config import RunConfig
from deepfm.data.readers import open_reader
from deepfm.data.schema import FieldSpec, Schema
from deepfm.data.source import ReadOptions
from deepfm.errors import DeepFMError
from deepfm.features.pipeline import FeaturePipeline
from deepfm.training import prepare, train

from helpers import simple_records, simple_schema, small_config, write_records_csv

CASES = int(os.environ.get("DEEPFM_FUZZ_CASES", "60"))
FUZZ = settings(
    max_examples=CASES,
    deadline=None,
    database=None,  # the same cases every run: CI stays reproducible
    derandomize=os.environ.get("DEEPFM_FUZZ_RANDOM") != "1",
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.data_too_large],
)

SCHEMA = Schema(
    label="y",
    fields=(
        FieldSpec("c", kind="categorical", min_count=1),
        FieldSpec("x", kind="numeric", mode="scaled", transform="log1p_standardize"),
        FieldSpec("b", kind="numeric", mode="bucketized", binning="log", min_count=1),
        FieldSpec("z", kind="numeric", mode="scaled", transform="standardize"),
        FieldSpec("m", kind="multi_hot", separator="|", min_count=1),
    ),
)
COLUMNS = ("y", "c", "x", "b", "z", "m")


def outcome(target: str, exc: BaseException | None) -> None:
    """Record what happened: a hypothesis event (--hypothesis-show-statistics) and, for
    benchmarks/fuzz.py, a line in $DEEPFM_FUZZ_LOG."""
    if exc is None:
        what = "accepted"
    else:
        # The message's first words, up to any quoted input, say which check fired.
        detail = re.split(r"""['"(\[{]""", getattr(exc, "detail", str(exc)))[0]
        what = f"{type(exc).__name__}: {' '.join(detail.split()[:6]).rstrip(':,')}"
    event(what)
    log = os.environ.get("DEEPFM_FUZZ_LOG")
    if log:
        with open(log, "a") as f:
            f.write(json.dumps({"target": target, "outcome": what}) + "\n")


def check_encoded(pipeline: FeaturePipeline, enc) -> None:  # type: ignore[no-untyped-def]
    """What reaches the model: ids inside the table, finite values, 0/1 labels."""
    n = pipeline.num_embeddings
    assert enc.ids.size == 0 or (enc.ids.min() >= 0 and enc.ids.max() < n)
    assert np.isfinite(enc.values).all()
    for offsets, ids in enc.multi_hot:
        assert np.all(np.diff(offsets) >= 1)  # every row has a bag (MISSING when empty)
        assert ids.size == 0 or (ids.min() >= 0 and ids.max() < n)
    if enc.labels is not None:
        assert set(np.unique(enc.labels)) <= {0.0, 1.0}


def read_and_encode(path: Path, options: ReadOptions, column_names: tuple[str, ...] | None) -> None:
    reader = open_reader(path, options, column_names=column_names)
    cols = ["y", *SCHEMA.names]
    pipeline = FeaturePipeline(SCHEMA).fit(reader.chunks(cols, SCHEMA.numeric_columns))
    for chunk in reader.chunks(cols, SCHEMA.numeric_columns):
        check_encoded(pipeline, pipeline.encode(chunk))


# ---------------------------------------------------------------- target 1: any bytes
@FUZZ
@given(
    data=st.binary(max_size=600) | st.text(max_size=400).map(lambda t: t.encode("utf-8", "surrogatepass")),
    header=st.sampled_from(["auto", "yes", "no"]),
    delimiter=st.sampled_from([None, ",", "\t", ";", "|"]),
    suffix=st.sampled_from([".csv", ".tsv", ".txt", ".libfm", ".parquet", ".csv.gz"]),
)
def test_any_bytes_read_or_documented_error(
    tmp_path: Path, data: bytes, header: str, delimiter: str | None, suffix: str
) -> None:
    path = tmp_path / f"f{suffix}"
    path.write_bytes(data)
    try:
        read_and_encode(path, ReadOptions(header=header, delimiter=delimiter), COLUMNS if header == "no" else None)
    except DeepFMError as exc:
        assert str(path) in str(exc) or "record" in str(exc), f"the error does not name the file: {exc}"
        outcome("any bytes -> Reader + FeaturePipeline", exc)
    else:
        outcome("any bytes -> Reader + FeaturePipeline", None)


# ---------------------------------------------------------------- target 2: CSV-shaped text
NUMBERS = st.sampled_from(
    [
        "0",
        "1",
        "-1",
        "2.5",
        "1e3",
        "1e400",
        "-1e400",
        "nan",
        "NaN",
        "inf",
        "-inf",
        "Infinity",
        "",
        " ",
        " 3 ",
        "1,5",
        "٣",
        "0x10",
        "1e-400",
        "-0",
        "123456789012345678901234567890",
        "1.7976931348623157e308",
    ]
)
LABELS = st.sampled_from(["0", "1", "", "2", "-1", "1.0", "0.0", "nan", "yes", " 1", "1 "])
# Files without faults too, so the accepting path is fuzzed as much as the refusing one.
GOOD_NUMBERS = st.sampled_from(
    ["0", "1", "-1", "2.5", "1e3", "", "-0", "1e-400", "1.7976931348623157e308", "123456789012345678901234567890"]
)
GOOD_LABELS = st.sampled_from(["0", "1", "1.0", "0.0"])
TEXT = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=8)
BAGS = st.lists(st.sampled_from(["a", "b", "", " ", "ü", "a b", '"q"']), max_size=4).map("|".join)


@st.composite
def csv_files(draw: st.DrawFn) -> tuple[bytes, str]:
    delimiter = draw(st.sampled_from([",", "\t", ";"]))
    faulty = draw(st.booleans())
    numbers, labels = (NUMBERS, LABELS) if faulty else (GOOD_NUMBERS, GOOD_LABELS)
    rows = []
    for _ in range(draw(st.integers(1, 12))):
        row = [
            draw(labels),
            draw(TEXT | st.sampled_from(["", "x", "y"])),
            draw(numbers),
            draw(numbers),
            draw(numbers),
            draw(BAGS),
        ]
        if faulty and draw(st.integers(0, 9)) == 0:  # ragged: a cell too many or too few
            row = row[:-1] if draw(st.booleans()) else [*row, "extra"]
        cells = []
        for cell in row:
            if delimiter in cell or '"' in cell or "\n" in cell or "\r" in cell or draw(st.integers(0, 19)) == 0:
                cell = '"' + cell.replace('"', '""') + '"'
            cells.append(cell)
        rows.append(delimiter.join(cells))
    eol = draw(st.sampled_from(["\n", "\r\n"]))
    header = delimiter.join(COLUMNS) + eol if draw(st.booleans()) else ""
    tail = eol if draw(st.booleans()) else ""
    return (header + eol.join(rows) + tail).encode("utf-8", "surrogatepass"), delimiter


@FUZZ
@given(file=csv_files(), on_bad_row=st.sampled_from(["error", "skip"]), tell_delimiter=st.booleans())
def test_csv_rows_prepare_or_documented_error(
    tmp_path: Path, file: tuple[bytes, str], on_bad_row: str, tell_delimiter: bool
) -> None:
    """The training path (single parse, split) on messy CSV: a documented error, or encoded
    parts whose every id and value is fit for the model."""
    data, delimiter = file
    path = tmp_path / "f.csv"
    path.write_bytes(data)
    options = ReadOptions(delimiter=delimiter if tell_delimiter else None, on_bad_row=on_bad_row, header="auto")
    config = RunConfig(schema=Schema(label="y", fields=SCHEMA.fields, columns=COLUMNS), data=options)
    try:
        pipeline, parts = prepare(config, path, tmp_path / "work", split=(0.6, 0.2, 0.2))
    except DeepFMError as exc:
        assert str(path) in str(exc) or "split" in str(exc) or "field" in str(exc), (
            f"the error names neither file nor field: {exc}"
        )
        outcome("messy CSV -> prepare (train/valid/test)", exc)
        return
    outcome("messy CSV -> prepare (train/valid/test)", None)
    for part in (parts.train, parts.valid, parts.test):
        if part is None:
            continue
        batch = part.batch(slice(0, len(part)))
        assert batch.ids.numel() == 0 or (int(batch.ids.min()) >= 0 and int(batch.ids.max()) < pipeline.num_embeddings)
        assert bool(batch.values.isfinite().all())
        assert set(batch.labels.unique().tolist()) <= {0.0, 1.0}


# ---------------------------------------------------------------- target 3: records to a model
@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Bundle:
    tmp = tmp_path_factory.mktemp("fuzz-bundle")
    data = write_records_csv(tmp / "train.csv", simple_records(600, seed=5))
    return train(small_config(simple_schema(), epochs=1), data, tmp / "model", split="0.8,0.2", cache=False)


VALUES = (
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | TEXT
    | st.lists(TEXT, max_size=3)
    | st.dictionaries(TEXT, st.integers(), max_size=2)
    | st.sampled_from(["nan", "inf", "1e400", "", "12", "red|green"])
)
KNOWN = st.sampled_from(["user", "item", "price", "tags", "label"])
RECORDS = st.lists(
    # Records with the model's own fields (values of any type) as often as records with any keys.
    st.dictionaries(KNOWN, VALUES, max_size=5)
    | st.dictionaries(KNOWN | st.sampled_from(["Price", ""]) | TEXT, VALUES, max_size=6),
    max_size=6,
)


@FUZZ
@given(records=RECORDS | st.sampled_from([None, 3, "text", {"user": "u1"}, [[1, 2]], [None]]))
def test_records_predict_or_documented_error(bundle: Bundle, records: object) -> None:
    """Bundle.predict (the path the CLI and the service share) on any JSON-like input."""
    try:
        p = bundle.predict(records)
    except DeepFMError as exc:
        outcome("JSON-like records -> Bundle.predict", exc)
        return
    outcome("JSON-like records -> Bundle.predict", None)
    n = 1 if isinstance(records, dict) else len(records)  # type: ignore[arg-type]
    assert p.shape == (n,) and np.isfinite(p).all() and ((p >= 0) & (p <= 1)).all()
