"""Bad input: every error names the file, the line (or record) and the field, both as the
exception's message and through the CLI (exit status 2, the message on stderr)."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from deepfm.bundle import Bundle
from deepfm.cli import main
from deepfm.config import RunConfig, load_config
from deepfm.data.schema import FieldSpec, Schema
from deepfm.data.source import ReadOptions
from deepfm.errors import BundleError, ConfigError, DataError
from deepfm.training import prepare, train

from helpers import small_config, write_rows

COLS = ["label", "c", "x"]
N = 100
BAD = 49  # 0-based data row of the bad line: line 51 with a header, line 50 without

CONFIG_YAML = """\
label: label
{columns}fields:
  - {{name: c, kind: categorical, min_count: 1}}
  - {{name: x, kind: numeric, mode: scaled, transform: log1p}}
model: {{embedding_dim: 4, hidden: [8], dropout: 0.0}}
train: {{epochs: 1, progress: false, threads: 1, device: cpu, seed: 1}}
{data}"""


def rows(n: int = N) -> list[list[str]]:
    return [[str(i % 2), f"c{i % 5}", str(i)] for i in range(n)]


def schema(headerless: bool = False) -> Schema:
    return Schema(
        label="label",
        fields=(FieldSpec("c", min_count=1), FieldSpec("x", kind="numeric", mode="scaled", transform="log1p")),
        columns=tuple(COLS) if headerless else None,
    )


def write_config(tmp_path: Path, headerless: bool = False, data: str = "", name: str = "cfg.yaml") -> Path:
    path = tmp_path / name
    columns = "columns: [label, c, x]\n" if headerless else ""
    path.write_text(CONFIG_YAML.format(columns=columns, data=data))
    return path


def cli_error(capsys: pytest.CaptureFixture[str], argv: list[str]) -> str:
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 2, err
    assert "Traceback" not in err
    return err


def train_argv(data: Path, config: Path, out: Path, *extra: str) -> list[str]:
    return ["train", "--data", str(data), "--config", str(config), "--out", str(out), "--quiet", *extra]


def expect_in(message: str, *parts: str) -> None:
    for p in parts:
        assert p in message, f"{p!r} not in {message!r}"


# ---------------------------------------------------------------- wrong column count
@pytest.mark.parametrize("block_size", [8 << 20, 64], ids=["one-block", "many-blocks"])
@pytest.mark.parametrize("header", [True, False], ids=["header", "headerless"])
def test_wrong_column_count_names_the_line(tmp_path: Path, capsys, header: bool, block_size: int) -> None:
    data = rows()
    data[BAD] = ["1", "c1"]  # one field short
    path = write_rows(tmp_path / "d.csv", data, COLS if header else None)
    line = f"line {BAD + 1 + (1 if header else 0)}"
    config = small_config(schema(headerless=not header), data=ReadOptions(block_size=block_size))
    with pytest.raises(DataError) as info:
        prepare(config, path, tmp_path / "w", split=(0.9, 0.1, 0.0))
    expect_in(str(info.value), str(path), line, "expected 3 columns, got 2")
    assert info.value.line == BAD + 1 + (1 if header else 0)
    cfg = write_config(tmp_path, headerless=not header, data=f"data: {{block_size: {block_size}}}\n")
    err = cli_error(capsys, train_argv(path, cfg, tmp_path / "out"))
    expect_in(err, str(path), line, "expected 3 columns, got 2")


def test_wrong_column_count_on_the_first_line_of_a_headerless_file(tmp_path: Path, capsys) -> None:
    data = rows(10)
    data[0] = ["1", "c1", "3", "extra"]
    path = write_rows(tmp_path / "d.tsv", data, None, "\t")
    with pytest.raises(DataError) as info:
        prepare(small_config(schema(headerless=True)), path, tmp_path / "w")
    expect_in(str(info.value), str(path), "line 1", "expected 3 columns")
    err = cli_error(capsys, train_argv(path, write_config(tmp_path, headerless=True), tmp_path / "out"))
    expect_in(err, str(path), "line 1", "expected 3 columns")


def _three_short_rows(tmp_path: Path) -> tuple[Path, list[list[str]]]:
    data = rows()
    for i in (10, BAD, 90):
        data[i] = data[i][:2]
    return write_rows(tmp_path / "d.csv", data, COLS), data


def test_on_bad_row_skip_reports_the_count(tmp_path: Path) -> None:
    path, _ = _three_short_rows(tmp_path)
    bundle = train(small_config(schema(), data=ReadOptions(on_bad_row="skip")), path, tmp_path / "lib")
    m = json.loads((tmp_path / "lib" / "metrics.json").read_text())
    assert m["train_rows"] + m["valid_rows"] == N - 3  # the three short rows are gone
    assert bundle.metrics["skipped_rows"] == 3
    assert m["skipped_rows"] == 3


def test_on_bad_row_skip_through_the_cli(tmp_path: Path, capsys) -> None:
    path, _ = _three_short_rows(tmp_path)
    out = tmp_path / "cli"
    assert main(train_argv(path, write_config(tmp_path), out, "--on-bad-row", "skip")) == 0
    capsys.readouterr()
    m = json.loads((out / "metrics.json").read_text())
    assert m["train_rows"] + m["valid_rows"] == N - 3
    assert m["skipped_rows"] == 3
    # without the flag the same file is refused
    cli_error(capsys, train_argv(path, write_config(tmp_path), tmp_path / "cli2", "--on-bad-row", "error"))


def test_line_numbers_count_skipped_rows(tmp_path: Path) -> None:
    """An error after skipped rows still names the line in the file."""
    path, data = _three_short_rows(tmp_path)
    data[70][2] = "seventy"
    write_rows(path, data, COLS)
    with pytest.raises(DataError) as info:
        prepare(
            small_config(schema(), data=ReadOptions(on_bad_row="skip")), path, tmp_path / "w", split=(1.0, 0.0, 0.0)
        )
    expect_in(str(info.value), str(path), "line 72", "field 'x'")


# ---------------------------------------------------------------- bad values
@pytest.mark.parametrize("header", [True, False], ids=["header", "headerless"])
def test_text_in_a_numeric_column(tmp_path: Path, capsys, header: bool) -> None:
    data = rows()
    data[BAD][2] = "lots"
    path = write_rows(tmp_path / "d.csv", data, COLS if header else None)
    line = f"line {BAD + 1 + (1 if header else 0)}"
    with pytest.raises(DataError) as info:
        prepare(small_config(schema(headerless=not header)), path, tmp_path / "w", split=(0.9, 0.1, 0.0))
    expect_in(str(info.value), str(path), line, "field 'x'", "'lots'")
    assert info.value.field == "x"
    err = cli_error(capsys, train_argv(path, write_config(tmp_path, headerless=not header), tmp_path / "out"))
    expect_in(err, str(path), line, "field 'x'", "'lots'")


def standardized_schema() -> Schema:
    return Schema(
        label="label",
        fields=(FieldSpec("c", min_count=1), FieldSpec("x", kind="numeric", mode="scaled", transform="standardize")),
    )


def test_values_too_large_to_standardize_name_the_field(tmp_path: Path) -> None:
    """Squares of 1e200 overflow float64: the mean and spread cannot be fitted."""
    data = rows()
    data[3][2] = "1e200"
    path = write_rows(tmp_path / "d.csv", data, COLS)
    with pytest.raises(DataError, match="field 'x': values are too large to standardize"):
        prepare(small_config(standardized_schema()), path, tmp_path / "w", split=(0.9, 0.1, 0.0))


def test_a_value_beyond_float32_after_scaling_names_its_line(tmp_path: Path) -> None:
    """Fitted on 0..89, a valid-part value of 1e300 would reach the model as inf."""
    data = rows()
    data[95][2] = "1e300"
    path = write_rows(tmp_path / "d.csv", data, COLS)
    with pytest.raises(DataError) as info:
        prepare(small_config(standardized_schema()), path, tmp_path / "w", split=(0.9, 0.1, 0.0))
    expect_in(str(info.value), str(path), "line 97", "field 'x'", "1e+300 is too large")


@pytest.mark.parametrize("where", [10, 95], ids=["in-train-part", "in-valid-part"])
def test_label_outside_0_1(tmp_path: Path, capsys, where: int) -> None:
    data = rows()
    data[where][0] = "2"
    path = write_rows(tmp_path / "d.csv", data, COLS)
    line = f"line {where + 2}"
    with pytest.raises(DataError) as info:
        prepare(small_config(schema()), path, tmp_path / "w", split=(0.9, 0.1, 0.0))
    expect_in(str(info.value), str(path), line, "field 'label'", "0 or 1", "'2'")
    err = cli_error(capsys, train_argv(path, write_config(tmp_path), tmp_path / "out"))
    expect_in(err, str(path), line, "field 'label'", "0 or 1")


def test_libfm_label_outside_1_0_minus1(tmp_path: Path, capsys) -> None:
    lines = ["1 1:1 5:1", "-1 2:1 6:1", "0 1:1 6:1", "3 2:1 5:1", "1 1:1 5:1"] * 4
    path = tmp_path / "d.libfm"
    path.write_text("\n".join(lines) + "\n")
    sch = Schema(label="label", fields=(FieldSpec("f1", min_count=1), FieldSpec("f2", min_count=1)))
    with pytest.raises(DataError) as info:
        prepare(small_config(sch), path, tmp_path / "w", split=(1.0, 0.0, 0.0))
    expect_in(str(info.value), str(path), "line 4", "field 'label'", "1, 0 or -1", "'3'")
    err = cli_error(capsys, ["train", "--data", str(path), "--out", str(tmp_path / "o"), "--quiet", "--epochs", "1"])
    expect_in(err, str(path), "line 4", "field 'label'", "1, 0 or -1")


def test_libfm_line_numbers_count_skipped_rows(tmp_path: Path) -> None:
    path = tmp_path / "d.libfm"
    path.write_text("1 1:1 5:1\n0 1:1\n1 2:1 5:1\n-1 1:1 6:1\n5 2:1 6:1\n")
    sch = Schema(label="label", fields=(FieldSpec("f1", min_count=1), FieldSpec("f2", min_count=1)))
    with pytest.raises(DataError) as info:  # the short line 2 is reported without --on-bad-row skip
        prepare(small_config(sch), path, tmp_path / "w0", split=(1.0, 0.0, 0.0))
    expect_in(str(info.value), str(path), "line 2")
    with pytest.raises(DataError) as info:  # skipped: the bad label is still on line 5
        prepare(small_config(sch, data=ReadOptions(on_bad_row="skip")), path, tmp_path / "w1", split=(1.0, 0.0, 0.0))
    expect_in(str(info.value), str(path), "line 5", "field 'label'", "'5'")


def test_bad_split_option(tmp_path: Path, capsys) -> None:
    data = write_rows(tmp_path / "d.csv", rows(), COLS)
    err = cli_error(capsys, train_argv(data, write_config(tmp_path), tmp_path / "o", "--split", "0.8,0.3"))
    expect_in(err, "--split", "0.8,0.3")
    err = cli_error(
        capsys, train_argv(data, write_config(tmp_path), tmp_path / "o", "--split", "0.8,0.2", "--valid", str(data))
    )
    expect_in(err, "--split", "--valid")


def test_empty_file(tmp_path: Path, capsys) -> None:
    path = tmp_path / "empty.csv"
    path.write_text("")
    with pytest.raises(DataError) as info:
        prepare(small_config(schema()), path, tmp_path / "w")
    expect_in(str(info.value), str(path), "empty")
    err = cli_error(capsys, train_argv(path, write_config(tmp_path), tmp_path / "out"))
    expect_in(err, str(path), "empty")
    # a header and nothing else
    only_header = write_rows(tmp_path / "h.csv", [], COLS)
    err = cli_error(capsys, train_argv(only_header, write_config(tmp_path), tmp_path / "out2"))
    expect_in(err, str(only_header))
    assert "no data rows" in err or "empty" in err


# ---------------------------------------------------------------- configs
def test_config_names_a_column_the_file_lacks(tmp_path: Path, capsys) -> None:
    path = write_rows(tmp_path / "d.csv", [r[:2] for r in rows()], ["label", "c"])
    with pytest.raises(DataError) as info:
        prepare(small_config(schema()), path, tmp_path / "w")
    expect_in(str(info.value), str(path), "['x']")
    err = cli_error(capsys, train_argv(path, write_config(tmp_path), tmp_path / "out"))
    expect_in(err, str(path), "['x']")


def test_columns_list_must_hold_the_fields(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"\['x'\]"):
        Schema(label="label", fields=(FieldSpec("c"), FieldSpec("x")), columns=("label", "c"))


@pytest.mark.parametrize(
    "yaml_text, key",
    [
        ("label: label\nfields: [{name: c}]\nmodle: {}\n", "modle"),
        ("label: label\nfields: [{name: c}]\nmodel: {embeding_dim: 4}\n", "embeding_dim"),
        ("label: label\nfields: [{name: c}]\ntrain: {epoch: 4}\n", "epoch"),
        ("label: label\nfields: [{name: c, knd: categorical}]\n", "knd"),
        ("label: label\nfields: [{name: c}]\ndata: {delim: ','}\n", "delim"),
    ],
)
def test_unknown_key_in_yaml_config(tmp_path: Path, capsys, yaml_text: str, key: str) -> None:
    cfg = tmp_path / "bad.yaml"
    cfg.write_text(yaml_text)
    with pytest.raises(ConfigError) as info:
        RunConfig.from_dict(load_config(cfg), where=str(cfg))
    expect_in(str(info.value), str(cfg), key, "unknown key")
    data = write_rows(tmp_path / "d.csv", rows(), COLS)
    err = cli_error(capsys, train_argv(data, cfg, tmp_path / "out"))
    expect_in(err, str(cfg), key, "unknown key")


def test_bad_values_in_yaml_config(tmp_path: Path, capsys) -> None:
    cfg = tmp_path / "bad.yaml"
    cfg.write_text("label: label\nfields: [{name: c, kind: categorial}]\n")
    data = write_rows(tmp_path / "d.csv", rows(), COLS)
    err = cli_error(capsys, train_argv(data, cfg, tmp_path / "out"))
    expect_in(err, str(cfg), "categorial", "kind")
    cfg.write_text("label: label\nfields: [{name: c}\n")  # broken YAML
    err = cli_error(capsys, train_argv(data, cfg, tmp_path / "out"))
    expect_in(err, str(cfg), "YAML")
    cfg.write_text("label: label\nfields: [{name: c}]\n")  # fields, and a preset too
    err = cli_error(capsys, ["train", "--data", str(data), "--config", str(cfg), "--preset", "criteo"])
    expect_in(err, str(cfg), "names its fields already", "--config or --preset")


# ---------------------------------------------------------------- bundles and records
@pytest.fixture(scope="module")
def bundle_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("bad-bundle")
    data = write_rows(tmp / "d.csv", rows(300), COLS)
    train(small_config(schema()), data, tmp / "model")
    return tmp / "model"


@pytest.mark.parametrize("missing", ["model.safetensors", "pipeline.json", "vocab.arrow", "config.json"])
def test_bundle_folder_missing_files(tmp_path: Path, capsys, bundle_dir: Path, missing: str) -> None:
    folder = tmp_path / "m"
    shutil.copytree(bundle_dir, folder)
    (folder / missing).unlink()
    with pytest.raises(BundleError) as info:
        Bundle.load(folder)
    expect_in(str(info.value), str(folder), missing)
    data = write_rows(tmp_path / "d.csv", rows(5), COLS)
    err = cli_error(capsys, ["predict", str(folder), "--data", str(data), "--out", str(tmp_path / "p.csv")])
    expect_in(err, str(folder), missing)
    err = cli_error(capsys, ["evaluate", str(folder), "--data", str(data)])
    expect_in(err, missing)


def test_bundle_folder_does_not_exist(tmp_path: Path, capsys) -> None:
    with pytest.raises(BundleError, match="not a model folder"):
        Bundle.load(tmp_path / "nope")
    data = write_rows(tmp_path / "d.csv", rows(5), COLS)
    err = cli_error(capsys, ["evaluate", str(tmp_path / "nope"), "--data", str(data)])
    expect_in(err, str(tmp_path / "nope"))


def test_predict_file_errors_name_line_and_field(tmp_path: Path, capsys, bundle_dir: Path) -> None:
    data = rows(20)
    data[7][2] = "n/a"
    path = write_rows(tmp_path / "d.csv", data, COLS)
    err = cli_error(capsys, ["predict", str(bundle_dir), "--data", str(path), "--out", str(tmp_path / "p.csv")])
    expect_in(err, str(path), "line 9", "field 'x'", "'n/a'")
    err = cli_error(capsys, ["evaluate", str(bundle_dir), "--data", str(path)])
    expect_in(err, str(path), "line 9", "field 'x'")
    no_label = write_rows(tmp_path / "nl.csv", [r[1:] for r in rows(5)], COLS[1:])
    err = cli_error(capsys, ["evaluate", str(bundle_dir), "--data", str(no_label)])
    expect_in(err, str(no_label), "label")


def test_records_errors_name_record_and_field(bundle_dir: Path) -> None:
    bundle = Bundle.load(bundle_dir)
    with pytest.raises(DataError) as info:
        bundle.predict([{"c": "c1", "x": 3}, {"c": "c2", "x": "three"}])
    expect_in(str(info.value), "record 1", "field 'x'", "'three'")
    with pytest.raises(DataError) as info:
        bundle.predict([{"c": "c1", "x": 3}, {"c": "c1", "x": 1}, {"c": ["a"], "x": 1}])
    expect_in(str(info.value), "record 2", "field 'c'")
    with pytest.raises(DataError, match=re.escape("record 0")):
        bundle.predict([{"c": "c1", "x": True}])
    assert np.all(np.isfinite(bundle.predict([{"c": "c1", "x": "3.5"}])))
