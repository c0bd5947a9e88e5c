"""The simulated days the retraining tests share (tests/test_retrain.py, test_warm_start.py):
two generated days cut into train / valid / test files, and day 1 trained on every row and on
a quarter of the negatives. Session fixtures, so both modules use one pair of trainings."""

from __future__ import annotations

from pathlib import Path

import pytest

from deepfm.bundle import Bundle
from deepfm.config import RunConfig
from deepfm.data.schema import criteo_schema
from deepfm.data.synth import write_synth
from deepfm.training import train

from helpers import small_config

TRAIN, VALID, TEST = 40_000, 10_000, 10_000


def _split(src: Path, folder: Path, day: int) -> dict[str, Path]:
    """Cut one generated day into train / valid / test files by row order."""
    lines = src.read_bytes().splitlines(keepends=True)
    out, start = {}, 0
    for name, n in (("train", TRAIN), ("valid", VALID), ("test", TEST)):
        out[name] = folder / f"day{day}.{name}.tsv"
        out[name].write_bytes(b"".join(lines[start : start + n]))
        start += n
    return out


@pytest.fixture(scope="session")
def days(tmp_path_factory: pytest.TempPathFactory) -> dict[int, dict[str, Path]]:
    folder = tmp_path_factory.mktemp("days")
    return {
        d: _split(write_synth(TRAIN + VALID + TEST, folder / f"day{d}.tsv", seed=3, day=d).path, folder, d)
        for d in (1, 2)
    }


def retrain_config(**train_kw: object) -> RunConfig:
    # batch_norm fixed: "auto" would give the model trained on every row batch norm and the
    # downsampled one (fewer rows per table row) none, and these tests compare the two.
    settings: dict[str, object] = {"seed": 11, "epochs": 2, "batch_size": 1024, **train_kw}
    return small_config(criteo_schema(min_count=3), model={"batch_norm": False}, **settings)


@pytest.fixture(scope="session")
def full_and_sampled(
    days: dict[int, dict[str, Path]], tmp_path_factory: pytest.TempPathFactory
) -> tuple[Bundle, Bundle]:
    out = tmp_path_factory.mktemp("runs")
    d = days[1]
    # No calibration fitted in training: these tests look at the downsampling correction and at
    # `deepfm calibrate`, which a Platt fit on the same validation rows would leave nothing to do.
    full = train(retrain_config(calibrate=False), d["train"], out / "full", valid=d["valid"], cache=False)
    sampled = train(
        retrain_config(calibrate=False),
        d["train"],
        out / "sampled",
        valid=d["valid"],
        cache=False,
        neg_sample_rate=0.25,
    )
    return full, sampled
