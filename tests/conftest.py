"""Fixtures shared by the tests; the helpers they build on are in helpers.py."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from helpers import (
    planted_schema,
    simple_records,
    simple_schema,
    small_config,
    write_criteo_tsv,
    write_planted,
    write_records_csv,
)
from retrain_days import days, full_and_sampled  # noqa: F401  (fixtures of the retraining tests)


@pytest.fixture(scope="session")
def planted(tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, Path, Path]:
    """A small DeepFM trained on 12k planted rows (a few seconds; its test part is the last
    1200), 2k fresh rows, and the folder that holds them: (bundle, fresh.tsv, folder)."""
    from deepfm.bundle import Bundle
    from deepfm.training import train

    tmp = tmp_path_factory.mktemp("planted")
    data = write_planted(tmp / "train.tsv", 12_000, seed=1)
    fresh = write_planted(tmp / "fresh.tsv", 2_000, seed=2)
    # one table throughout: with fresh tables 3 epochs leave the last table a single pass, and
    # the tests read the pairs it learned
    config = small_config(planted_schema(), epochs=3, reset_embeddings=False)
    train(config, data, tmp / "model", split="0.8,0.1,0.1")
    return Bundle.load(tmp / "model"), fresh, tmp


@pytest.fixture
def criteo_tsv(tmp_path: Path) -> Path:
    """A 1500-row headerless Criteo-layout TSV."""
    return write_criteo_tsv(tmp_path / "criteo.tsv", 1500, seed=1)


@pytest.fixture(autouse=True, scope="session")
def _isolated_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Encoded-data cache of the test session, never the user's ~/.cache."""
    old = os.environ.get("DEEPFM_CACHE_DIR")
    os.environ["DEEPFM_CACHE_DIR"] = str(tmp_path_factory.mktemp("encoded-cache"))
    yield
    if old is None:
        os.environ.pop("DEEPFM_CACHE_DIR", None)
    else:
        os.environ["DEEPFM_CACHE_DIR"] = old


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small DeepFM over helpers.simple_schema (user, item, price, tags), trained on 3000
    rows: the model the service tests serve, trained once per test module."""
    from deepfm.training import train

    tmp = tmp_path_factory.mktemp("serve")
    data = write_records_csv(tmp / "train.csv", simple_records(3000, seed=4))
    train(small_config(simple_schema()), data, tmp / "model", split="0.8,0.1,0.1")
    return tmp / "model"
