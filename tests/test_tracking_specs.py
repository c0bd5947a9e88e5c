"""Tracking specs and the missing extra: checked without mlflow or tensorboard installed (the
runs themselves are in test_tracking.py)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from deepfm.cli import main
from deepfm.errors import ConfigError

from helpers import simple_records, simple_schema, write_records_csv


@pytest.fixture
def data(tmp_path: Path) -> dict[str, Path]:
    return {"train": write_records_csv(tmp_path / "train.csv", simple_records(400, seed=1))}


def test_without_the_extra_the_flag_names_the_pip_command(monkeypatch: pytest.MonkeyPatch, data: dict[str, Path], tmp_path: Path,
                                                          capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    monkeypatch.setitem(sys.modules, "mlflow", None)  # import mlflow now raises ImportError
    argv = [
        "train",
        "--data",
        str(data["train"]),
        "--out",
        str(tmp_path / "m"),
        "--no-cache",
        "--quiet",
        "--track",
        "mlflow",
    ]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "pip install 'deepfm[track]'" in err and "--track mlflow" in err
    assert not (tmp_path / "m" / "model.safetensors").exists()


@pytest.mark.parametrize("spec", ["tensorboard", "tensorboard:", "wandb:x", "mlflo", ""])
def test_bad_specs_say_what_is_expected(spec: str) -> None:
    from deepfm.config import RunConfig

    with pytest.raises(ConfigError, match="tensorboard"):
        RunConfig.from_dict({**simple_schema().to_dict(), "track": spec})


def test_register_needs_mlflow(data: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["train", "--data", str(data["train"]), "--out", str(tmp_path / "m"), "--quiet", "--track", f"tensorboard:{tmp_path}",
            "--register", "ctr"]  # fmt: skip
    assert main(argv) == 2
    assert "--track mlflow" in capsys.readouterr().err
