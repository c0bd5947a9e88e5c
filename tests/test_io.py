"""Readers: CSV/TSV with and without a header, Parquet, libFM, gzip; the row-order split."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from deepfm.data.columns import to_float, to_label, to_strings
from deepfm.data.readers import open_reader
from deepfm.data.schema import FieldSpec, Schema
from deepfm.data.source import Reader, ReadOptions
from deepfm.training import parse_split, prepare

from helpers import small_config, write_rows

COLS = ["label", "c", "x"]
ROWS = [["1", "red", "1.5"], ["0", "blue", ""], ["1", "", "-2"], ["0", "red", "7"]]


def read_all(reader: Reader, columns: list[str]) -> dict[str, list]:
    out: dict[str, list] = {c: [] for c in columns}
    for chunk in reader.chunks(columns):
        for c in columns:
            out[c] += chunk.table.column(c).to_pylist()
    return out


def schema_cx(columns: tuple[str, ...] | None = None) -> Schema:
    return Schema(
        label="label",
        fields=(FieldSpec("c", min_count=1), FieldSpec("x", kind="numeric", mode="scaled", transform="none")),
        columns=columns,
    )


def test_csv_with_header(tmp_path: Path) -> None:
    path = write_rows(tmp_path / "a.csv", ROWS, COLS)
    r = open_reader(path)
    assert r.format == "text" and r.has_header and r.delimiter == ","
    assert r.columns == COLS
    assert r.count_rows() == 4
    data = read_all(r, COLS)
    assert data["c"] == ["red", "blue", None, "red"]  # empty field -> null
    chunk = next(r.chunks(COLS))
    np.testing.assert_array_equal(to_float(chunk, "x"), [1.5, np.nan, -2.0, 7.0])
    np.testing.assert_array_equal(to_label(chunk, "label"), [1, 0, 1, 0])
    # columns can be read in any order / subset
    assert read_all(r, ["x", "label"])["label"] == ["1", "0", "1", "0"]


def test_tsv_without_header_uses_schema_columns(tmp_path: Path) -> None:
    plain = write_rows(tmp_path / "a.tsv", ROWS, None, "\t")
    r = open_reader(plain, column_names=tuple(COLS))
    assert not r.has_header and r.delimiter == "\t" and r.columns == COLS
    assert r.count_rows() == 4
    no_header = read_all(r, COLS)
    assert no_header["c"] == ["red", "blue", None, "red"]
    # the same file with a header line is detected as having one
    headed = write_rows(tmp_path / "b.tsv", ROWS, COLS, "\t")
    r2 = open_reader(headed, column_names=tuple(COLS))
    assert r2.has_header and r2.count_rows() == 4
    assert read_all(r2, COLS) == no_header
    # and without column names a headerless file is refused with advice
    from deepfm.errors import ConfigError

    with pytest.raises(ConfigError, match="no header"):
        open_reader(plain, ReadOptions(header="no"))


def test_headerless_through_prepare(tmp_path: Path) -> None:
    path = write_rows(tmp_path / "a.tsv", ROWS * 5, None, "\t")
    pipe, parts = prepare(small_config(schema_cx(tuple(COLS))), path, tmp_path / "w", split=(1.0, 0.0, 0.0))
    assert len(parts.train) == 20
    np.testing.assert_array_equal(np.asarray(parts.train.labels), [1, 0, 1, 0] * 5)
    np.testing.assert_array_equal(np.asarray(parts.train.values[:4, 0]), [1.5, 1.0, -2.0, 7.0])  # missing -> 1


def test_parquet(tmp_path: Path) -> None:
    table = pa.table(
        {
            "label": pa.array([1, 0, 1, 0], pa.int64()),
            "c": pa.array(["red", "blue", None, "red"]),
            "x": pa.array([1.5, None, -2.0, 7.0]),
            "extra": pa.array([9, 9, 9, 9]),
        }
    )
    path = tmp_path / "d.parquet"
    pq.write_table(table, path)
    r = open_reader(path)
    assert r.format == "parquet" and r.count_rows() == 4
    chunk = next(r.chunks(COLS))
    np.testing.assert_array_equal(to_float(chunk, "x"), [1.5, np.nan, -2.0, 7.0])
    np.testing.assert_array_equal(to_label(chunk, "label"), [1, 0, 1, 0])
    assert to_strings(chunk, "c").to_pylist() == ["red", "blue", None, "red"]
    # the extension is not needed: the magic bytes say Parquet
    other = tmp_path / "d.bin"
    other.write_bytes(path.read_bytes())
    assert open_reader(other).format == "parquet"
    pipe, parts = prepare(small_config(schema_cx()), path, tmp_path / "w", split=(1.0, 0.0, 0.0))
    np.testing.assert_array_equal(np.asarray(parts.train.labels), [1, 0, 1, 0])
    c = pipe.states["c"]
    assert np.asarray(parts.train.ids[:, 0]).tolist() == [c.offset + 2, c.offset + 3, c.offset + 1, c.offset + 2]


def test_float_categorical_column(tmp_path: Path) -> None:
    """A categorical field stored as floats (as pandas writes integer codes with gaps): 5.0 is
    the category "5", NaN and null are missing, values past int64 keep their float text."""
    path = tmp_path / "f.parquet"
    pq.write_table(pa.table({"c": pa.array([5.0, float("nan"), None, 2.5, 1e30, -3.0], pa.float64())}), path)
    chunk = next(open_reader(path).chunks(["c"]))
    assert to_strings(chunk, "c").to_pylist() == ["5", None, None, "2.5", "1e+30", "-3"]


@pytest.mark.parametrize("neg", ["-1", "0"])
@pytest.mark.parametrize("eol", ["\n", "\r\n"])
def test_libfm(tmp_path: Path, neg: str, eol: str) -> None:
    lines = ["1 3:1 10:1 20:1", f"{neg} 4:1 11:1 20:1", "1 3:1 12:1 21:1", f"{neg} 5:1 10:1 21:1"]
    path = tmp_path / "d.libfm"
    path.write_bytes((eol.join(lines) + eol).encode())
    r = open_reader(path)
    assert r.format == "libfm"
    assert r.columns == ["label", "f1", "f2", "f3"]
    data = read_all(r, r.columns)
    assert data["f1"] == ["3", "4", "3", "5"]
    assert data["f3"] == ["20", "20", "21", "21"]  # no stray '\r'
    chunk = next(r.chunks(r.columns))
    np.testing.assert_array_equal(to_label(chunk, "label", libfm=True), [1, 0, 1, 0])
    # format detection from the content, whatever the extension
    other = tmp_path / "d.txt"
    other.write_bytes(path.read_bytes())
    assert open_reader(other).format == "libfm"
    schema = Schema(label="label", fields=tuple(FieldSpec(f"f{i}", min_count=1) for i in (1, 2, 3)))
    pipe, parts = prepare(small_config(schema), path, tmp_path / "w", split=(1.0, 0.0, 0.0))
    np.testing.assert_array_equal(np.asarray(parts.train.labels), [1, 0, 1, 0])
    assert pipe.states["f1"].vocab.to_pylist() == ["3", "4", "5"]


def test_libfm_tolerates_surrounding_spaces(tmp_path: Path) -> None:
    path = tmp_path / "d.libfm"
    path.write_text("1 3:1 10:1  \n  -1 4:1 11:1\n1\t3:1\t12:1 \n")
    r = open_reader(path)
    assert r.columns == ["label", "f1", "f2"]
    data = read_all(r, r.columns)
    assert data == {"label": ["1", "-1", "1"], "f1": ["3", "4", "3"], "f2": ["10", "11", "12"]}


def test_gzip_csv(tmp_path: Path) -> None:
    plain = write_rows(tmp_path / "a.csv", ROWS, COLS)
    gz = tmp_path / "a.csv.gz"
    with gzip.open(gz, "wb") as f:
        f.write(plain.read_bytes())
    assert gz.read_bytes()[:2] == b"\x1f\x8b"
    r = open_reader(gz)
    assert r.format == "text" and r.has_header and r.columns == COLS
    assert r.count_rows() == 4
    assert read_all(r, COLS) == read_all(open_reader(plain), COLS)


def test_parse_split() -> None:
    assert parse_split("0.8,0.1,0.1") == (0.8, 0.1, 0.1)
    assert parse_split("0.9,0.1") == (0.9, 0.1, 0.0)
    from deepfm.errors import ConfigError

    for bad in ("0.8,0.3", "0,0.5,0.5", "1,2,3,4", "-0.1,0.6,0.5"):
        with pytest.raises(ConfigError):
            parse_split(bad)


@pytest.mark.parametrize("block_size", [8 << 20, 2048])
def test_split_is_by_row_order(tmp_path: Path, block_size: int) -> None:
    n = 1000
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, n)
    rows = [[str(labels[i]), f"c{i % 7}", str(i)] for i in range(n)]
    path = write_rows(tmp_path / "d.csv", rows, COLS)
    config = small_config(schema_cx(), data=ReadOptions(block_size=block_size))
    if block_size == 2048:
        assert len(list(open_reader(path, config.data).chunks(COLS))) > 3  # boundaries fall inside chunks
    results = []
    for run in range(2):
        _, parts = prepare(config, path, tmp_path / f"w{run}", split=parse_split("0.8,0.1,0.1"))
        assert (len(parts.train), len(parts.valid), len(parts.test)) == (800, 100, 100)
        # the 'x' field holds the row number (transform none, no scaling)
        np.testing.assert_array_equal(np.asarray(parts.train.values[:, 0]), np.arange(0, 800))
        np.testing.assert_array_equal(np.asarray(parts.valid.values[:, 0]), np.arange(800, 900))
        np.testing.assert_array_equal(np.asarray(parts.test.values[:, 0]), np.arange(900, 1000))
        np.testing.assert_array_equal(np.asarray(parts.train.labels), labels[:800])
        np.testing.assert_array_equal(np.asarray(parts.test.labels), labels[900:])
        results.append(np.asarray(parts.train.ids).copy())
    assert np.array_equal(results[0], results[1])
