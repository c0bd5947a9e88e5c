"""Edge cases found in review: each once failed (hang, traceback or silent change)."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest

from deepfm.cli import main
from deepfm.config import RunConfig, TrainConfig
from deepfm.data.readers import open_reader
from deepfm.data.schema import CRITEO_COLUMNS, criteo_schema
from deepfm.data.source import ReadOptions
from deepfm.data.tables import as_table
from deepfm.errors import ConfigError, DataError
from deepfm.training import parse_split, train

from helpers import small_config, write_criteo_tsv, write_rows


def test_an_error_in_an_early_chunk_does_not_hang_the_reader(tmp_path: Path) -> None:
    """The background parser must stop when the consumer gives up with chunks still queued."""
    rows = [["1", "a"] for _ in range(3000)]
    rows[5][0] = "7"  # a bad label in the first chunk
    path = write_rows(tmp_path / "d.csv", rows, ["label", "c"])
    reader = open_reader(path, ReadOptions(block_size=256))
    outcome: list[BaseException] = []

    def consume() -> None:
        from deepfm.data.columns import to_label

        try:
            for chunk in reader.chunks(["label", "c"]):
                to_label(chunk, "label")
        except DataError as exc:
            outcome.append(exc)

    t = threading.Thread(target=consume, daemon=True)
    t.start()
    t.join(timeout=30)
    assert not t.is_alive(), "the reader hung"
    assert outcome and "line 7" in str(outcome[0])


def test_yaml_numbers_written_as_text_become_numbers() -> None:
    config = RunConfig.from_dict(
        {"preset": "criteo", "train": {"lr": "1e-3", "seed": "5"}, "model": {"dropout": "0.1"}}
    )
    assert config.train.lr == 1e-3 and isinstance(config.train.lr, float)
    assert config.train.seed == 5 and config.model.dropout == 0.1
    with pytest.raises(ConfigError, match="train.lr"):
        TrainConfig(lr="fast")  # type: ignore[arg-type]


def test_split_tuples_are_checked_like_text() -> None:
    assert parse_split((0.9, 0.1)) == (0.9, 0.1, 0.0)
    with pytest.raises(ConfigError, match="add up to 1"):
        parse_split((0.5, 0.1))
    with pytest.raises(ConfigError, match="fractions"):
        parse_split("a,b")


def test_numpy_scalars_in_records() -> None:
    table = as_table([{"I1": np.int64(3), "C1": np.float32(5.0)}], numeric={"I1"})
    assert table.column("I1").to_pylist() == [3.0]
    assert table.column("C1").to_pylist() == ["5"]


def test_skipped_rows_never_shrink_the_last_part(tmp_path: Path) -> None:
    data = write_criteo_tsv(tmp_path / "d.tsv", 1000, seed=3)
    lines = data.read_text().splitlines()
    lines[100] = "1\t2"  # a short line, skipped
    data.write_text("\n".join(lines) + "\n")
    config = small_config(criteo_schema(), data=ReadOptions(on_bad_row="skip"))
    bundle = train(config, data, tmp_path / "m", split="0.8,0.1,0.1", cache=False)
    m = bundle.metrics
    assert m["skipped_rows"] == 1
    assert m["train_rows"] + m["valid_rows"] + m["test_rows"] == 999


def test_cli_reports_os_errors_without_a_traceback(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = write_rows(tmp_path / "d.tsv", [["1"] + ["1"] * 13 + ["a"] * 26] * 200, list(CRITEO_COLUMNS), "\t")
    assert (
        main(
            [
                "train",
                "--data",
                str(data),
                "--preset",
                "criteo",
                "--out",
                str(tmp_path / "m"),
                "--epochs",
                "1",
                "--threads",
                "1",
                "--quiet",
                "--no-cache",
            ]
        )
        == 0
    )
    code = main(["predict", str(tmp_path / "m"), "--data", str(data), "--out", str(tmp_path / "no" / "such" / "s.csv")])
    err = capsys.readouterr().err
    assert code == 2 and "error" in err and "Traceback" not in err
    assert main(["train", "--data", str(data), "--preset", "criteo", "--hidden", "4,x", "--quiet"]) == 2
    assert "--hidden" in capsys.readouterr().err
