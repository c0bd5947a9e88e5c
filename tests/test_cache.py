"""Encoded data is reused by a later run on the same file and config, and only then."""

from __future__ import annotations

import json
import os
from pathlib import Path

from deepfm.data.schema import criteo_schema
from deepfm.training import train

from helpers import small_config, write_criteo_tsv


def _metrics(out: Path) -> dict:
    return json.loads((out / "metrics.json").read_text())


def test_second_run_reuses_the_encoded_data(tmp_path: Path) -> None:
    data = write_criteo_tsv(tmp_path / "d.tsv", 1500, seed=3)
    cache = tmp_path / "cache"
    config = small_config(criteo_schema())
    train(config, data, tmp_path / "a", split="0.8,0.1,0.1", cache_dir=cache)
    train(config, data, tmp_path / "b", split="0.8,0.1,0.1", cache_dir=cache)
    a, b = _metrics(tmp_path / "a"), _metrics(tmp_path / "b")
    assert a["preprocess_cache"] == "miss" and b["preprocess_cache"] == "hit"
    assert a["test_auc"] == b["test_auc"] and a["test_logloss"] == b["test_logloss"]
    assert len([p for p in cache.iterdir() if not p.name.startswith(".")]) == 1
    # The model folders hold the same fitted features either way.
    assert (tmp_path / "a" / "vocab.arrow").read_bytes() == (tmp_path / "b" / "vocab.arrow").read_bytes()


def test_a_changed_file_or_config_is_encoded_again(tmp_path: Path) -> None:
    data = write_criteo_tsv(tmp_path / "d.tsv", 1200, seed=4)
    cache = tmp_path / "cache"
    config = small_config(criteo_schema())
    train(config, data, tmp_path / "a", split="0.8,0.1,0.1", cache_dir=cache)
    train(config, data, tmp_path / "b", split="0.7,0.2,0.1", cache_dir=cache)
    assert _metrics(tmp_path / "b")["preprocess_cache"] == "miss"
    st = data.stat()
    os.utime(data, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    train(config, data, tmp_path / "c", split="0.8,0.1,0.1", cache_dir=cache)
    assert _metrics(tmp_path / "c")["preprocess_cache"] == "miss"


def test_no_cache_leaves_nothing_behind(tmp_path: Path) -> None:
    data = write_criteo_tsv(tmp_path / "d.tsv", 800, seed=5)
    train(
        small_config(criteo_schema()),
        data,
        tmp_path / "a",
        split="0.8,0.1,0.1",
        cache=False,
        cache_dir=tmp_path / "cache",
    )
    assert _metrics(tmp_path / "a")["preprocess_cache"] == "off"
    assert not (tmp_path / "cache").exists()
    assert not [p for p in (tmp_path / "a").iterdir() if p.name.startswith(".encoded")]
