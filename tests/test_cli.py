"""End to end through the command line on generated data (and the real Criteo sample when present)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest
from safetensors.torch import load_file

from deepfm.cli import main
from deepfm.data.schema import CRITEO_COLUMNS

from helpers import (
    CRITEO_SAMPLE,
    SIMPLE_FIELDS,
    criteo_rows,
    simple_records,
    write_criteo_tsv,
    write_records_csv,
    write_rows,
)

FAST = ["--threads", "1", "--quiet"]
METRIC_KEYS = ("valid_auc", "valid_logloss", "test_auc", "test_logloss", "epochs", "train_samples_per_s")


def run(capsys: pytest.CaptureFixture[str], argv: list[str]) -> str:
    code = main(argv)
    out, err = capsys.readouterr()
    assert code == 0, err
    return out


def read_probs(path: Path) -> pa.Table:
    return pacsv.read_csv(path, convert_options=pacsv.ConvertOptions(strings_can_be_null=True))


@pytest.fixture(scope="module")
def criteo_run(tmp_path_factory: pytest.TempPathFactory):
    """`deepfm train --preset criteo --split 0.8,0.1,0.1` on a generated headerless TSV."""
    tmp = tmp_path_factory.mktemp("cli-criteo")
    data = write_criteo_tsv(tmp / "f.tsv", 2000, seed=3)
    out = tmp / "d"
    argv = [
        "train",
        "--data",
        str(data),
        "--preset",
        "criteo",
        "--split",
        "0.8,0.1,0.1",
        "--out",
        str(out),
        "--epochs",
        "2",
    ]
    argv += ["--embedding-dim", "4", "--hidden", "16", "--lr", "0.01", "--embedding-lr", "0.01", *FAST]
    code = main(argv)
    return tmp, data, out, code


def test_generated_criteo_is_criteo_shaped(tmp_path: Path) -> None:
    rows = criteo_rows(50, seed=0)
    assert all(len(r) == 40 for r in rows)
    assert {r[0] for r in rows} <= {"0", "1"}
    assert any(r[1] == "" for r in rows)  # some empty ints
    assert all(len(r[14]) == 8 for r in rows)


def test_train_preset_criteo(criteo_run, capsys) -> None:
    tmp, data, out, code = criteo_run
    assert code == 0
    m = json.loads((out / "metrics.json").read_text())
    for k in METRIC_KEYS:
        assert k in m, k
    assert m["epochs"] == 2
    assert (m["train_rows"], m["valid_rows"], m["test_rows"]) == (1600, 200, 200)
    assert 0 < m["valid_logloss"] < 1 and 0 < m["test_logloss"] < 1
    assert m["train_samples_per_s"] > 0
    assert m["test_auc"] > 0.65, m["test_auc"]  # the planted signal is learned
    # the command-line overrides reached the model
    weights = load_file(str(out / "model.safetensors"))
    assert weights["embedding.weight"].shape[1] == 4 + 1
    assert weights["dnn.net.0.weight"].shape == (16, 39 * 4)
    config = json.loads((out / "config.json").read_text())
    assert config["columns"] == list(CRITEO_COLUMNS)
    assert config["train"]["epochs"] == 2
    # min_count "auto" as the number it became for 1,600 training rows, in the saved config
    # (it trains the same model again) and the metrics
    assert {f["min_count"] for f in config["fields"]} == {2} and m["resolved"]["min_count"] == 2


def test_train_prints_summary_json(tmp_path: Path, capsys) -> None:
    data = write_criteo_tsv(tmp_path / "f.tsv", 600, seed=4)
    out = run(
        capsys,
        [
            "train",
            "--data",
            str(data),
            "--preset",
            "criteo",
            "--split",
            "0.8,0.1,0.1",
            "--out",
            str(tmp_path / "d"),
            "--epochs",
            "1",
            "--embedding-dim",
            "4",
            "--hidden",
            "8",
            "--model",
            "fm",
            *FAST,
        ],
    )
    summary = json.loads(out.strip().splitlines()[-1])
    assert summary["out"] == str(tmp_path / "d")
    assert set(METRIC_KEYS) <= set(summary)
    weights = load_file(str(tmp_path / "d" / "model.safetensors"))
    assert not any(k.startswith("dnn.") for k in weights)  # --model fm has no MLP


def test_evaluate_prints_json(criteo_run, capsys, tmp_path: Path) -> None:
    _, _, out, code = criteo_run
    assert code == 0
    test_file = write_criteo_tsv(tmp_path / "t.tsv", 300, seed=9)
    result = json.loads(run(capsys, ["evaluate", str(out), "--data", str(test_file), "--quiet"]))
    labels = np.array([int(r[0]) for r in criteo_rows(300, seed=9)])
    assert result["rows"] == 300
    assert 0.5 < result["auc"] <= 1 and 0 < result["logloss"] < 1
    assert result["ctr"] == pytest.approx(labels.mean())
    # the metrics agree with scoring the rows and computing them independently
    from sklearn.metrics import log_loss, roc_auc_score

    run(capsys, ["predict", str(out), "--data", str(test_file), "--out", str(tmp_path / "p.csv"), "--quiet"])
    p = read_probs(tmp_path / "p.csv").column("probability").to_numpy()
    assert result["auc"] == pytest.approx(roc_auc_score(labels, p), abs=1e-9)
    assert result["logloss"] == pytest.approx(log_loss(labels, p), abs=1e-6)


def test_predict_one_probability_per_row(criteo_run, capsys, tmp_path: Path) -> None:
    _, _, out, code = criteo_run
    assert code == 0
    rows = criteo_rows(257, seed=10)
    labelled = write_rows(tmp_path / "l.tsv", rows, None, "\t")
    unlabelled = write_rows(tmp_path / "u.tsv", [r[1:] for r in rows], None, "\t")  # no label column
    run(
        capsys,
        ["predict", str(out), "--data", str(labelled), "--out", str(tmp_path / "a.csv"), "--keep", "C1", "--quiet"],
    )
    run(capsys, ["predict", str(out), "--data", str(unlabelled), "--out", str(tmp_path / "b.csv"), "--quiet"])
    a, b = read_probs(tmp_path / "a.csv"), read_probs(tmp_path / "b.csv")
    assert a.num_rows == b.num_rows == 257
    assert a.column_names == ["C1", "probability"] and b.column_names == ["probability"]
    assert a.column("C1").to_pylist() == [r[14] for r in rows]
    pa_, pb = a.column("probability").to_numpy(), b.column("probability").to_numpy()
    # Bit for bit: both files' 257 rows are read into one batch of the same shape.
    assert np.array_equal(pa_, pb)
    assert np.all((pa_ > 0) & (pa_ < 1))
    assert len((tmp_path / "b.csv").read_text().strip().splitlines()) == 257 + 1  # header + one line per row


YAML = """\
label: label
fields:
  - {name: user, kind: categorical, min_count: 1}
  - {name: item, kind: categorical}
  - {name: price, kind: numeric, mode: scaled, transform: log1p_standardize}
  - {name: tags, kind: multi_hot, separator: "|", pooling: sum, min_count: 1}
model: {embedding_dim: 4, hidden: [16], dropout: 0.0}
train: {epochs: 2, threads: 1, lr: 0.01, embedding_lr: 0.01, progress: false}
"""


def test_train_with_yaml_config_multi_hot_and_scaled(tmp_path: Path, capsys) -> None:
    records = simple_records(2500, seed=5)
    data = write_records_csv(tmp_path / "d.csv", records)
    assert data.read_text().splitlines()[0] == "label,user,item,price,tags"
    cfg = tmp_path / "my.yaml"
    cfg.write_text(YAML)
    out = tmp_path / "m"
    run(
        capsys,
        ["train", "--data", str(data), "--config", str(cfg), "--split", "0.8,0.1,0.1", "--out", str(out), "--quiet"],
    )
    config = json.loads((out / "config.json").read_text())
    kinds = {f["name"]: (f["kind"], f["mode"], f["pooling"]) for f in config["fields"]}
    assert kinds["tags"][0] == "multi_hot" and kinds["tags"][2] == "sum"
    assert kinds["price"][:2] == ("numeric", "scaled")
    assert config["layout"]["scaled_positions"] == [2]  # user, item, price | tags
    assert config["layout"]["poolings"] == ["sum"]
    assert config["layout"]["n_single"] == 3
    m = json.loads((out / "metrics.json").read_text())
    assert m["epochs"] == 2 and m["test_rows"] == 250
    assert m["test_auc"] > 0.65, m["test_auc"]
    # predict on the test rows (with a header) through the CLI
    test_csv = write_records_csv(tmp_path / "t.csv", records[-250:], ("label", *SIMPLE_FIELDS))
    run(capsys, ["predict", str(out), "--data", str(test_csv), "--out", str(tmp_path / "p.csv"), "--quiet"])
    assert read_probs(tmp_path / "p.csv").num_rows == 250


def _parquet(path: Path, records: list[dict]) -> Path:
    table = pa.table(
        {
            "label": pa.array([r["label"] for r in records], pa.int64()),
            "user": pa.array([r["user"] for r in records], pa.string()),
            "item": pa.array([r["item"] for r in records], pa.string()),
            "price": pa.array([r["price"] for r in records], pa.float64()),
            "tags": pa.array([r["tags"] for r in records], pa.string()),
        }
    )
    pq.write_table(table, path)
    return path


def test_train_with_separate_valid_and_test_parquet(tmp_path: Path, capsys) -> None:
    records = simple_records(2600, seed=6)
    train_p = _parquet(tmp_path / "train.parquet", records[:2000])
    valid_p = _parquet(tmp_path / "valid.parquet", records[2000:2300])
    test_p = _parquet(tmp_path / "test.parquet", records[2300:])
    cfg = tmp_path / "my.yaml"
    cfg.write_text(YAML)
    out = tmp_path / "m"
    summary = json.loads(
        run(
            capsys,
            [
                "train",
                "--data",
                str(train_p),
                "--valid",
                str(valid_p),
                "--test",
                str(test_p),
                "--config",
                str(cfg),
                "--out",
                str(out),
                "--quiet",
            ],
        )
        .strip()
        .splitlines()[-1]
    )
    m = json.loads((out / "metrics.json").read_text())
    assert (m["train_rows"], m["valid_rows"], m["test_rows"]) == (2000, 300, 300)
    assert summary["test_auc"] == m["test_auc"] > 0.65
    result = json.loads(run(capsys, ["evaluate", str(out), "--data", str(test_p), "--quiet"]))
    assert result["rows"] == 300
    assert result["auc"] == pytest.approx(m["test_auc"], abs=1e-6)


def test_train_parquet_with_inferred_schema(tmp_path: Path, capsys) -> None:
    records = simple_records(1200, seed=8)
    data = _parquet(tmp_path / "d.parquet", records)
    out = tmp_path / "m"
    run(
        capsys,
        [
            "train",
            "--data",
            str(data),
            "--out",
            str(out),
            "--epochs",
            "1",
            "--embedding-dim",
            "4",
            "--hidden",
            "8",
            *FAST,
        ],
    )
    config = json.loads((out / "config.json").read_text())
    kinds = {f["name"]: f["kind"] for f in config["fields"]}
    # tags hold "red|small": lists, found by the data (deepfm.schema_inference)
    assert kinds == {"user": "categorical", "item": "categorical", "price": "numeric", "tags": "multi_hot"}
    m = json.loads((out / "metrics.json").read_text())
    assert (m["train_rows"], m["valid_rows"]) == (1080, 120)  # default 0.9/0.1 split by row order


def test_real_criteo_sample(tmp_path: Path, capsys) -> None:
    if not CRITEO_SAMPLE.is_file():
        pytest.skip(f"real Criteo sample not found at {CRITEO_SAMPLE}")
    out = tmp_path / "criteo"
    summary = json.loads(
        run(
            capsys,
            [
                "train",
                "--data",
                str(CRITEO_SAMPLE),
                "--preset",
                "criteo",
                "--split",
                "0.8,0.1,0.1",
                "--out",
                str(out),
                "--epochs",
                "2",
                *FAST,
            ],
        )
        .strip()
        .splitlines()[-1]
    )
    m = json.loads((out / "metrics.json").read_text())
    assert m["test_rows"] == 1000
    assert summary["test_auc"] == m["test_auc"]
    assert m["test_auc"] > 0.70, m["test_auc"]


def test_train_with_a_test_file_only(tmp_path: Path, capsys) -> None:
    """--test without --valid or --split: the documented default (last 10% of --data for
    validation) applies, and the test file is scored."""
    records = simple_records(1100, seed=12)
    data = write_records_csv(tmp_path / "d.csv", records[:1000])
    test = write_records_csv(tmp_path / "t.csv", records[1000:])
    cfg = tmp_path / "my.yaml"
    cfg.write_text(YAML)
    out = tmp_path / "m"
    run(capsys, ["train", "--data", str(data), "--test", str(test), "--config", str(cfg), "--out", str(out), "--quiet"])
    m = json.loads((out / "metrics.json").read_text())
    assert (m["train_rows"], m["valid_rows"], m["test_rows"]) == (900, 100, 100)


def test_min_count_override(tmp_path: Path, capsys) -> None:
    data = write_criteo_tsv(tmp_path / "f.tsv", 400, seed=13)
    out = tmp_path / "m"
    run(
        capsys,
        [
            "train",
            "--data",
            str(data),
            "--preset",
            "criteo",
            "--out",
            str(out),
            "--epochs",
            "1",
            "--embedding-dim",
            "4",
            "--hidden",
            "8",
            "--min-count",
            "100000",
            *FAST,
        ],
    )
    state = json.loads((out / "pipeline.json").read_text())
    assert state["schema"]["fields"][20]["min_count"] == 100000
    assert json.loads((out / "metrics.json").read_text())["resolved"]["min_count"] == 100000
    assert all(f["vocab_size"] == 0 for f in state["fields"])  # every value is rarer than that
    assert state["num_embeddings"] == 39 * 2  # OOV + missing rows only


@pytest.mark.parametrize("value", ["0", "few", "2.5"])
def test_min_count_flag_takes_a_positive_integer_or_auto(tmp_path: Path, capsys, value: str) -> None:
    data = write_criteo_tsv(tmp_path / "f.tsv", 50, seed=13)
    argv = ["train", "--data", str(data), "--preset", "criteo", "--out", str(tmp_path / "m"), "--min-count", value]
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse refuses what is not a number
        code = exc.code
    assert code not in (0, None)
    err = capsys.readouterr().err
    assert "min_count" in err or "--min-count" in err, err
    assert "auto" in err, err


def test_synth_setting_flags_and_header(tmp_path: Path, capsys) -> None:
    out = tmp_path / "s.tsv"
    argv = [
        "synth",
        "--rows",
        "500",
        "--out",
        str(out),
        "--setting",
        "noisy",
        "--card-scale",
        "0.05",
        "--header",
        "--quiet",
    ]
    summary = json.loads(run(capsys, argv))
    assert summary["header"] is True
    assert summary["setting"] == {
        "name": "noisy",
        "fm_weight": 1.0,
        "mlp_weight": 0.7,
        "card_scale": 0.05,
        "zipf_shift": 0.0,
        "numeric_share": 0.4,
        "bayes_auc": 0.70,
    }
    lines = out.read_text().splitlines()
    assert lines[0].split("\t") == list(CRITEO_COLUMNS) and len(lines) == 501
    assert main(["synth", "--rows", "10", "--out", str(out), "--bayes-auc", "1.5", "--quiet"]) == 2
    assert "bayes_auc must be in" in capsys.readouterr().err
