"""Datasets of many files: folders, globs, lists, hive partitions, gzip and zstd text, splits
by a column's value, and the same rows as one file giving the same model."""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from deepfm import ColumnSplit, DataError, evaluate, predict_file, train
from deepfm.cli import main
from deepfm.data.readers import open_reader
from deepfm.data.schema import FieldSpec, Schema, criteo_schema
from deepfm.data.source import ReadOptions
from deepfm.data.storage import data_identity, list_files
from deepfm.data.synth_days import write_synth_days
from deepfm.errors import ConfigError

from helpers import assert_scores_close, small_config

ROWS, DAYS = 2400, 24
SPLIT = ColumnSplit("day", "2026-01-19", "2026-01-22")  # days 1-18 train, 19-21 validate, 22-24 test


@pytest.fixture(scope="module")
def logs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """24 day partitions of the same synthetic rows as Parquet and as gzip TSV, and each as
    one file with the day as a column (the rows in the same order)."""
    root = tmp_path_factory.mktemp("logs")
    out = {"pq": root / "pq", "tsv": root / "tsv"}
    parquet_files = write_synth_days(ROWS, DAYS, out["pq"], "parquet")
    tsv_files = write_synth_days(ROWS, DAYS, out["tsv"], "tsv.gz")
    tables = [pq.read_table(f) for f in parquet_files]
    days = [f.parent.name.split("=", 1)[1] for f in parquet_files]
    one = pa.concat_tables([t.append_column("day", pa.array([d] * t.num_rows)) for t, d in zip(tables, days)])
    out["pq_one"] = root / "one.parquet"
    pq.write_table(one, out["pq_one"])
    out["tsv_one"] = root / "one.tsv"
    lines = ["\t".join([*one.column_names[:40], "day"])]
    for f, d in zip(tsv_files, days):
        with gzip.open(f, "rt") as fh:
            lines += [line.rstrip("\n") + "\t" + d for line in list(fh)[1:]]
    out["tsv_one"].write_text("\n".join(lines) + "\n")
    return out


def config(header: str = "auto") -> Any:
    return small_config(criteo_schema(), data=ReadOptions(header=header), epochs=2, seed=3)


def test_a_folder_a_glob_and_a_list_read_the_same_rows_in_path_order(logs: dict[str, Path]) -> None:
    folder = open_reader(logs["pq"])
    glob = open_reader(str(logs["pq"] / "day=*" / "part-*.parquet"))
    files = [str(f.path) for f in list_files(logs["pq"])]
    listed = open_reader(files)
    assert files == sorted(files) and len(files) == DAYS  # _truth.csv beside each part is left out
    assert folder.columns[-1] == "day"  # the partition key, usable as a field
    tables = [pa.concat_tables(c.table for c in r.chunks(["label", "C1", "day"])) for r in (folder, glob)]
    assert tables[0].equals(tables[1])
    one = pq.read_table(logs["pq_one"], columns=["label", "C1", "day"])
    assert tables[0].equals(one)
    assert [c.table.num_rows for c in listed.chunks(["label"])] == [ROWS // DAYS] * DAYS
    one_day = open_reader([logs["pq"] / "day=2026-01-03", logs["pq"] / "day=2026-01-04"])
    assert set(next(one_day.chunks(["day"])).table["day"].to_pylist()) == {"2026-01-03"}  # its own key


def test_the_dataset_trains_like_the_one_file_of_the_same_rows(logs: dict[str, Path], tmp_path: Path) -> None:
    """Same rows, same order, same seed: the same computation, so the same metrics."""
    runs = {}
    for name in ("pq", "pq_one", "tsv", "tsv_one"):
        # one.tsv's header has a column more than the preset (day): not recognised by "auto"
        cfg = config("yes" if name == "tsv_one" else "auto")
        bundle = train(cfg, logs[name], tmp_path / name, split_by=SPLIT, cache=False)
        runs[name] = bundle.metrics
    assert runs["pq"]["train_rows"] == ROWS * 18 // DAYS
    for many, one in (("pq", "pq_one"), ("tsv", "tsv_one")):
        for key in ("valid_auc", "valid_logloss", "test_auc", "test_logloss"):
            assert runs[many][key] == runs[one][key], (many, key)
    # Evaluating and predicting from a folder, a glob and the one file: the same figures.
    model = tmp_path / "pq"
    test_days = [str(logs["pq"] / f"day=2026-01-{d}") for d in (22, 23, 24)]
    from_folders = evaluate(train_bundle(model), test_days)
    assert from_folders["auc"] == pytest.approx(runs["pq"]["test_auc"], abs=1e-6)  # other batch shapes
    glob = evaluate(train_bundle(model), str(logs["pq"] / "day=2026-01-2[234]" / "*.parquet"))
    assert glob == from_folders
    n = predict_file(train_bundle(model), logs["pq"], tmp_path / "p.csv")
    m = predict_file(train_bundle(model), logs["pq_one"], tmp_path / "q.csv")
    assert n == m == ROWS
    # drift reads datasets as it reads a file: the same counts of the same rows
    from deepfm.analysis.drift import check

    drift_days = check(train_bundle(model), test_days)
    drift_one = check(train_bundle(model), str(logs["pq"] / "day=2026-01-2[234]"))
    assert drift_days["rows"] == drift_one["rows"] == 300 and drift_days["fields"] == drift_one["fields"]
    # scored a file at a time (100-row chunks) against one chunk: float32 rounding of other batch shapes
    assert_scores_close(read_probs(tmp_path / "p.csv"), read_probs(tmp_path / "q.csv"), "folder against one file")


def read_probs(path: Path) -> np.ndarray:
    return np.loadtxt(path, skiprows=1)


def train_bundle(folder: Path) -> Any:
    from deepfm import Bundle

    return Bundle.load(folder)


def test_the_vocabulary_is_fitted_on_the_training_days_only(logs: dict[str, Path], tmp_path: Path) -> None:
    from deepfm.training.parts import prepare

    pipeline, parts = prepare(config(), logs["pq"], tmp_path, split_by=SPLIT)
    assert (len(parts.train), len(parts.valid or []), len(parts.test or [])) == (1800, 300, 300)
    one = pq.read_table(logs["pq_one"], columns=["C3", "day"]).to_pydict()
    train_values = {c for c, d in zip(one["C3"], one["day"]) if c is not None and d < SPLIT.valid_from}
    later_only = {c for c, d in zip(one["C3"], one["day"]) if c is not None and d >= SPLIT.valid_from} - train_values
    vocab = set(pipeline.states["C3"].vocab.to_pylist())
    assert later_only and vocab <= train_values and not vocab & later_only


def test_numbers_compare_as_numbers_and_strings_as_strings(tmp_path: Path) -> None:
    path = tmp_path / "hours.csv"
    path.write_text("label,c,hour\n" + "".join(f"{i % 2},v{i % 3},{h}\n" for i, h in enumerate([1, 2, 9, 10, 11, 20])))
    reader = open_reader(path)
    chunk = next(reader.chunks(["label", "c", "hour"], {"hour"}))
    assert ColumnSplit("hour", "9", "11").assign(chunk).tolist() == [0, 0, 1, 1, 2, 2]  # 9 < 10 as numbers
    text = next(reader.chunks(["label", "c", "hour"]))
    assert ColumnSplit("hour", "2026", "2027").numeric
    assert ColumnSplit("hour", "b").assign(text).tolist() == [0] * 6  # digits sort before letters
    with pytest.raises(ConfigError, match="comes before"):
        ColumnSplit("hour", "11", "9")


def test_files_with_other_columns_are_refused_naming_both(tmp_path: Path) -> None:
    (tmp_path / "a.csv").write_text("label,x\n1,a\n")
    (tmp_path / "b.csv").write_text("label,y\n1,a\n")
    with pytest.raises(DataError) as err:
        open_reader(tmp_path)
    assert "b.csv" in str(err.value) and "a.csv" in str(err.value) and "['y']" in str(err.value)


def test_an_error_names_the_file_line_and_field_inside_a_dataset(tmp_path: Path) -> None:
    """Compressed files of a folder (gzip and zstd), the third with a bad label on its line 3."""
    rows, data = "label,x\n1,a\n0,b\n", tmp_path / "data"
    data.mkdir()
    with gzip.open(data / "part-0.csv.gz", "wt") as f:
        f.write(rows)
    with pa.output_stream(str(data / "part-1.csv.zst"), compression="zstd") as f:
        f.write(rows.encode())
    assert open_reader(data).count_rows() == 4  # gzip and zstd, each by its extension
    with gzip.open(data / "part-2.csv.gz", "wt") as f:
        f.write("label,x\n1,a\n7,b\n")
    cfg = small_config(Schema(label="label", fields=(FieldSpec("x", "categorical"),)))
    with pytest.raises(DataError) as err:
        train(cfg, data, tmp_path / "m", cache=False)
    text = str(err.value)
    assert "part-2.csv.gz" in text and "line 3" in text and "label" in text, text


def test_empty_globs_missing_columns_and_credentials_in_uris_are_refused(logs: dict[str, Path]) -> None:
    with pytest.raises(DataError, match="no data files match"):
        open_reader(str(logs["pq"] / "day=2027-*" / "*.parquet"))
    with pytest.raises(DataError, match="credentials"):
        list_files("s3://key:secret@bucket/logs")
    with pytest.raises(DataError, match="--split-by"):
        train(config(), logs["pq"], logs["pq"].parent / "m", split_by=ColumnSplit("hour", "1"), cache=False)


def test_the_cache_key_and_run_json_cover_every_file(logs: dict[str, Path], tmp_path: Path) -> None:
    import shutil

    copy = tmp_path / "pq"
    shutil.copytree(logs["pq"], copy)
    before = data_identity(copy)
    assert isinstance(before, list) and len(before) == DAYS
    # run.json holds the same identities: a run resumes only on the files it started on
    from deepfm.training.inputs import RunInputs, check_resume, write_run

    inputs = RunInputs(data=[str(copy), str(logs["tsv"] / "day=2026-01-01")], split_by=SPLIT)
    write_run(tmp_path, config(), inputs, 1)
    assert check_resume(tmp_path)[1] == inputs
    last = copy / "day=2026-01-24" / "part-0.parquet"
    pq.write_table(pq.read_table(last).slice(0, 50), last)
    assert data_identity(copy) != before
    with pytest.raises(DataError, match="changed"):
        check_resume(tmp_path)


def test_synth_days_and_train_split_by_through_the_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = tmp_path / "logs"
    assert main(["synth", "--rows", "600", "--days", "6", "--out", str(data), "--format", "tsv.gz", "--quiet"]) == 0
    assert sorted(p.parent.name for p in data.glob("day=*/part-0.tsv.gz"))[0] == "day=2026-01-01"
    capsys.readouterr()
    args = ["train", "--data", str(data), "--split-by", "day", "--valid-from", "2026-01-05", "--test-from"]
    args += ["2026-01-06", "--epochs", "1", "--embedding-dim", "4", "--hidden", "8", "--out", str(tmp_path / "m")]
    assert main([*args, "--no-cache", "--quiet"]) == 0
    metrics = json.loads((tmp_path / "m" / "metrics.json").read_text())
    assert metrics["train_rows"] == 400 and np.isfinite(metrics["test_auc"])
    run = json.loads((tmp_path / "m" / "run.json").read_text()) if (tmp_path / "m" / "run.json").exists() else None
    assert run is None or run["split_by"]["column"] == "day"


def test_a_config_splits_by_time_too(logs: dict[str, Path], tmp_path: Path) -> None:
    from deepfm.cli.common import split_by
    from deepfm.cli.parser import build_parser

    config = tmp_path / "c.yaml"
    config.write_text("preset: criteo\nsplit: {by: day, valid_from: 2026-01-19, test_from: 2026-01-22}\n")
    args = build_parser().parse_args(["train", "--data", str(logs["pq"]), "--config", str(config)])
    assert split_by(args) == SPLIT
    config.write_text("preset: criteo\nsplit: {by: day, valid: 2026-01-19}\n")
    with pytest.raises(ConfigError, match="valid"):
        split_by(args)


def test_a_model_folder_inside_the_data_folder_is_refused(
    logs: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    """The next run on that folder would read the model's files as data: refused before
    anything is read or written."""
    out = logs["tsv"] / "runs" / "m"
    args = [
        "train",
        "--data",
        str(logs["tsv"]),
        "--preset",
        "criteo",
        "--split-by",
        "day",
        "--valid-from",
        "2026-01-20",
    ]
    assert main([*args, "--out", str(out), "--no-cache", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert f"--out {out} is inside the data folder {logs['tsv']}" in err
    assert not (logs["tsv"] / "runs").exists()
