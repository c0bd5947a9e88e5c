"""Datasets and model bundles in an object store: s3:// URIs against moto's S3 server, started
on loopback by these tests (skipped where it cannot start). Credentials come from the
environment, as they would from a profile or a role, and end up in no file deepfm writes."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.fs as pafs
import pytest

from deepfm import Bundle, DataError, evaluate, predict_file
from deepfm.cli import main
from deepfm.data.readers import open_reader
from deepfm.data.synth_days import write_synth_days

from helpers import assert_scores_close

SECRET = "s3cret-never-written-4d1f"
ROWS, DAYS = 1200, 24
FLAGS = ["--preset", "criteo", "--epochs", "1", "--embedding-dim", "4", "--hidden", "8", "--seed", "5", "--quiet"]
FLAGS += ["--split-by", "day", "--valid-from", "2026-01-19", "--test-from", "2026-01-22", "--no-cache"]


@pytest.fixture(scope="module")
def s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """A moto S3 server on 127.0.0.1 holding bucket ``clicks`` with a 24-day Parquet log under
    ``logs/``; the same log on the local disk."""
    server_mod = pytest.importorskip("moto.server", reason="moto[server] is not installed")
    boto3 = pytest.importorskip("boto3")
    try:
        server = server_mod.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        server.start()
        host, port = server.get_host_and_port()
    except Exception as exc:  # no loopback sockets in this sandbox, say
        pytest.skip(f"cannot start moto's S3 server: {exc}")
    env = {
        "AWS_ACCESS_KEY_ID": "deepfm-test",
        "AWS_SECRET_ACCESS_KEY": SECRET,
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ENDPOINT_URL": f"http://{host}:{port}",
        "AWS_EC2_METADATA_DISABLED": "true",
    }
    with pytest.MonkeyPatch.context() as mp:
        for k, v in env.items():
            mp.setenv(k, v)
        boto3.client("s3", endpoint_url=env["AWS_ENDPOINT_URL"]).create_bucket(Bucket="clicks")
        local = tmp_path_factory.mktemp("s3-logs") / "logs"
        write_synth_days(ROWS, DAYS, local, "parquet", seed=2)
        fs, _ = pafs.FileSystem.from_uri("s3://clicks/logs")
        pafs.copy_files(str(local), "clicks/logs", destination_filesystem=fs)
        yield {"local": local, "fs": fs}
    server.stop()


def test_train_to_s3_from_s3_matches_the_local_run(s3: dict[str, Any], tmp_path: Path) -> None:
    assert main(["train", "--data", "s3://clicks/logs", "--out", "s3://clicks/models/m", *FLAGS]) == 0
    assert main(["train", "--data", str(s3["local"]), "--out", str(tmp_path / "local"), *FLAGS]) == 0
    remote = Bundle.load("s3://clicks/models/m")  # downloaded, its manifest checked
    local = Bundle.load(tmp_path / "local")
    for key in ("valid_auc", "valid_logloss", "test_auc", "test_logloss", "train_rows"):
        assert remote.metrics[key] == local.metrics[key], key
    # Evaluate and predict from the bucket: a folder URI and a glob URI, as from the disk.
    want = evaluate(local, str(s3["local"] / "day=2026-01-2[234]"))
    assert evaluate(remote, "s3://clicks/logs/day=2026-01-2[234]/*.parquet") == want
    assert predict_file(remote, "s3://clicks/logs", tmp_path / "p.csv") == ROWS
    predict_file(local, s3["local"], tmp_path / "q.csv")
    got, expected = (np.loadtxt(tmp_path / n, skiprows=1) for n in ("p.csv", "q.csv"))
    assert_scores_close(got, expected, "the same model and rows from the bucket and from the disk")
    # Credentials came from the environment; nothing deepfm wrote holds them.
    assert remote.path is not None
    for f in remote.path.iterdir():
        assert SECRET not in f.read_bytes().decode("utf-8", "replace"), f.name


def test_missing_objects_are_named_by_their_uri(s3: dict[str, Any]) -> None:
    with pytest.raises(DataError, match="s3://clicks/nothing"):
        open_reader("s3://clicks/nothing/here")
    with pytest.raises(DataError, match="s3://clicks/no-model"):
        Bundle.load("s3://clicks/no-model")
    assert os.environ["AWS_SECRET_ACCESS_KEY"] == SECRET  # the fixture's environment, still set
