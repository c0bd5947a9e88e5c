"""Tracking: runs in a real MLflow server (loopback, SQLite store in a temporary folder) and in
TensorBoard event files read back with TensorBoard's own reader; the bundle as an MLflow pyfunc
model, loaded and served; a tracker that stops mid-run costs no run."""

from __future__ import annotations

import json
import math
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from deepfm.bundle import Bundle
from deepfm.cli import main
from deepfm.errors import BundleError, ConfigError

from helpers import (
    SIMPLE_FIELDS,
    assert_scores_close,
    simple_records,
    simple_schema,
    small_config,
    write_records_csv,
)

mlflow = pytest.importorskip("mlflow", reason="tracking tests need the deepfm[track] extra")
event_accumulator = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")
pd = pytest.importorskip("pandas")

EPOCHS = 3


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait(url: str, proc: subprocess.Popen[bytes], seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return True
        except OSError:
            time.sleep(0.3)
    return False


def _spawn(command: list[str], log: Path, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    """A server in its own session (so that _stop ends its workers too), output to ``log``."""
    with open(log, "wb") as out:  # the child holds its own copy of the descriptor
        return subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    """Stop a server started in its own session, with the workers it started."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def _start_server(folder: Path) -> tuple[str, subprocess.Popen[bytes]]:
    """``mlflow server`` on a free loopback port with a SQLite store in ``folder``; skips the
    test when it does not answer /health within a minute."""
    port = _free_port()
    folder.mkdir(parents=True, exist_ok=True)
    command = [
        sys.executable, "-m", "mlflow", "server", "--backend-store-uri", f"sqlite:///{folder}/mlflow.db",
        "--default-artifact-root", (folder / "artifacts").as_uri(), "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
    ]  # fmt: skip
    proc = _spawn(command, folder / "server.log")
    if not _wait(f"http://127.0.0.1:{port}/health", proc, 90):
        _stop(proc)
        pytest.skip(f"mlflow server did not start: {(folder / 'server.log').read_text()[-500:]}")
    return f"http://127.0.0.1:{port}", proc


@pytest.fixture(scope="module", autouse=True)
def _no_telemetry() -> Iterator[None]:
    """Nothing leaves this machine: MLflow's usage telemetry off, here and in its servers."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
        yield


@pytest.fixture(scope="module")
def server_process(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """One server for the module (each start costs 10-30 s); the last test stops it mid-run."""
    uri, proc = _start_server(tmp_path_factory.mktemp("mlflow"))
    yield uri, proc
    _stop(proc)


@pytest.fixture(scope="module")
def server(server_process: tuple[str, subprocess.Popen[bytes]]) -> str:
    return server_process[0]


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("data")
    return {
        part: write_records_csv(folder / f"{part}.csv", simple_records(n, seed=seed))
        for part, n, seed in (("train", 3000, 1), ("valid", 800, 2), ("test", 800, 3))
    }


def _config_file(folder: Path) -> Path:
    """A YAML config of the simple table's fields (every kind: categorical, numeric, multi-hot)."""
    import yaml

    raw = small_config(simple_schema(), epochs=EPOCHS, patience=EPOCHS).to_dict()
    path = folder / "config.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


@pytest.fixture(scope="module")
def tracked(server: str, data: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """One ``deepfm train`` tracked in both MLflow and TensorBoard, with a report, registered as "ctr"."""
    folder = tmp_path_factory.mktemp("tracked")
    out, tb = folder / "model", folder / "tb"
    argv = [
        "train", "--data", str(data["train"]), "--valid", str(data["valid"]), "--test", str(data["test"]),
        "--config", str(_config_file(folder)), "--out", str(out), "--no-cache", "--quiet", "--report",
        "--track", f"tensorboard:{tb}", "--track", f"mlflow:{server}", "--register", "ctr",
    ]  # fmt: skip
    assert main(argv) == 0
    record = json.loads((out / "tracking.json").read_text())
    return {"out": out, "tb": tb, "record": record, "metrics": json.loads((out / "metrics.json").read_text())}


def _rows(n: int = 200) -> Any:
    """Test rows as a DataFrame the way a user holds them: tags joined by '|', None for missing."""
    records = simple_records(n, seed=9)
    df = pd.DataFrame([{k: r.get(k) for k in SIMPLE_FIELDS} for r in records])
    df["price"] = df["price"].astype("float64")
    return df


# ---------------------------------------------------------------- MLflow runs
def test_mlflow_run_holds_config_epochs_curve_final_metrics_and_artifacts(server: str, tracked: dict[str, Any]) -> None:
    client = mlflow.MlflowClient(tracking_uri=server)
    run_id = tracked["record"]["mlflow"]["run_id"]
    run = client.get_run(run_id)
    m = tracked["metrics"]
    assert run.info.status == "FINISHED"
    assert run.data.params["train.epochs"] == str(EPOCHS) and run.data.params["model.kind"] == "deepfm"
    assert run.data.params["resolved.batch_size"] == str(m["batch_size"])
    for key in ("valid_auc", "valid_logloss", "train_auc", "train_logloss"):
        history = client.get_metric_history(run_id, key)
        want = [row[key] for row in m["history"]] + ([m[key]] if key in m else [])
        assert [h.step for h in history][: len(m["history"])] == [row["epoch"] for row in m["history"]]
        np.testing.assert_allclose(sorted(h.value for h in history), sorted(want), rtol=1e-6)
    curve = client.get_metric_history(run_id, "curve_loss")
    assert len(curve) == len(m["train_curve"]) > EPOCHS  # several points within each epoch
    assert [c.step for c in curve] == list(np.cumsum([p["rows"] for p in m["train_curve"]]))
    for key in (
        "test_auc",
        "test_logloss",
        "test_ece",
        "valid_ece",
        "train_samples_per_s",
        "test_predict_samples_per_s",
    ):
        assert math.isclose(run.data.metrics[key], m[key], rel_tol=1e-6), key
    top = {a.path for a in client.list_artifacts(run_id)}
    assert {"report.html", "model"} <= top
    bundle_files = {Path(a.path).name for a in client.list_artifacts(run_id, "model/data/bundle")}
    assert {"manifest.json", "model.safetensors", "config.json", "metrics.json"} <= bundle_files


def test_registered_model_predicts_like_the_bundle(
    server: str, tracked: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", server)
    model = mlflow.pyfunc.load_model("models:/ctr/1")
    df = _rows()
    df.loc[3, "tags"], df.loc[4, "price"], df.loc[5, "user"] = None, np.nan, "never-seen"
    got = np.asarray(model.predict(df))
    assert_scores_close(got, Bundle.load(tracked["out"]).predict(df), "pyfunc vs Bundle.predict")
    schema = model.metadata.get_input_schema()
    assert schema.input_names() == list(SIMPLE_FIELDS)
    assert [t.name for t in schema.input_types()] == ["string", "string", "double", "string"]


def test_pyfunc_model_loads_through_the_manifest_and_holds_no_pickle(
    server: str, tracked: dict[str, Any], tmp_path: Path
) -> None:
    local = Path(mlflow.artifacts.download_artifacts(f"runs:/{tracked['record']['mlflow']['run_id']}/model", dst_path=str(tmp_path),
                                                     tracking_uri=server))  # fmt: skip
    assert not [p for p in local.rglob("*") if p.suffix in (".pkl", ".pickle")]
    assert "loader_module: deepfm.integrations.mlflow" in (local / "MLmodel").read_text()
    weights = local / "data" / "bundle" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-8] + b"\0" * 8)  # tampered: the manifest check refuses it
    with pytest.raises(BundleError, match="sha256"):
        mlflow.pyfunc.load_model(str(local))


def test_mlflow_models_serve_returns_the_bundle_probabilities(
    server: str, tracked: dict[str, Any], tmp_path: Path
) -> None:
    port = _free_port()
    # MLflow starts uvicorn by name: this interpreter's scripts first on PATH.
    env = {
        **os.environ,
        "MLFLOW_TRACKING_URI": server,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
    }
    command = [sys.executable, "-m", "mlflow", "models", "serve", "-m", "models:/ctr/1", "--env-manager", "local",
               "-h", "127.0.0.1", "-p", str(port)]  # fmt: skip
    proc = _spawn(command, tmp_path / "serve.log", env)
    try:
        if not _wait(f"http://127.0.0.1:{port}/ping", proc, 120):
            pytest.skip(f"mlflow models serve did not start: {(tmp_path / 'serve.log').read_text()[-500:]}")
        df = _rows(50)
        body = json.dumps({"dataframe_split": json.loads(df.to_json(orient="split", index=False))}).encode()
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/invocations", body, {"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(request, timeout=60) as r:
            got = np.asarray(json.loads(r.read())["predictions"], dtype=np.float64)
    finally:
        _stop(proc)
    assert_scores_close(got, Bundle.load(tracked["out"]).predict(df), "mlflow models serve vs Bundle.predict")


def test_log_model_inside_an_active_run(server: str, tracked: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    from deepfm.integrations.mlflow import log_model

    monkeypatch.setenv("MLFLOW_TRACKING_URI", server)
    bundle = Bundle.load(tracked["out"])
    with pytest.raises(ConfigError, match="needs a run"):
        log_model(bundle)
    with mlflow.start_run():
        uri = log_model(bundle, "ctr-model")
    assert uri.startswith("runs:/") and uri.endswith("/ctr-model")
    df = _rows(30)
    assert_scores_close(
        np.asarray(mlflow.pyfunc.load_model(uri).predict(df)), bundle.predict(df), "log_model in an active run"
    )


# ---------------------------------------------------------------- TensorBoard
def test_tensorboard_events_read_back(tracked: dict[str, Any]) -> None:
    run_dir = Path(tracked["record"]["tensorboard"])
    assert run_dir.parent == tracked["tb"]
    acc = event_accumulator.EventAccumulator(
        str(run_dir), size_guidance={event_accumulator.SCALARS: 0, event_accumulator.TENSORS: 0}
    )
    acc.Reload()
    m = tracked["metrics"]
    valid_auc = acc.Scalars("valid_auc")
    assert [e.step for e in valid_auc][:EPOCHS] == [row["epoch"] for row in m["history"]]
    np.testing.assert_allclose(
        [e.value for e in valid_auc][: len(m["history"])], [r["valid_auc"] for r in m["history"]], rtol=1e-6
    )
    curve = acc.Scalars("curve_loss")
    assert [e.step for e in curve] == list(np.cumsum([p["rows"] for p in m["train_curve"]]))
    assert math.isclose(acc.Scalars("test_auc")[-1].value, m["test_auc"], rel_tol=1e-6)
    assert "params/text_summary" in acc.Tags()["tensors"]


# ---------------------------------------------------------------- tune, compare, estimator, warm start
def test_compare_logs_a_parent_run_with_a_child_per_model(server: str, data: dict[str, Path], tmp_path: Path) -> None:
    from deepfm.training import RunInputs
    from deepfm.training.compare import compare

    config = replace(small_config(simple_schema(), epochs=1), track=(f"mlflow:{server}",))
    compare(config, RunInputs(data["train"], valid=data["valid"], cache=False), tmp_path / "cmp", ["lr", "fm"], seeds=1)
    client = mlflow.MlflowClient(tracking_uri=server)
    runs = client.search_runs(
        [client.get_experiment_by_name("deepfm").experiment_id], "tags.`deepfm.command` = 'compare'"
    )
    parent = runs[0]
    children = client.search_runs([parent.info.experiment_id], f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'")
    assert sorted(c.data.tags["deepfm.model"] for c in children) == ["fm", "lr"]
    assert "lr_auc_mean" in parent.data.metrics
    assert {a.path for a in client.list_artifacts(parent.info.run_id)} >= {"compare.md", "compare.json"}


def test_tune_trials_are_children_of_one_run(data: dict[str, Path], tmp_path: Path) -> None:
    pytest.importorskip("optuna")
    from deepfm.training import RunInputs
    from deepfm.training.tune import tune

    tb = tmp_path / "tb"
    config = replace(small_config(simple_schema(), epochs=1), track=(f"tensorboard:{tb}",))
    tune(config, RunInputs(data["train"], valid=data["valid"], cache=False), tmp_path / "tune", trials=2)
    (parent,) = tb.iterdir()
    trials = sorted(p.name for p in parent.iterdir() if p.is_dir())
    assert trials == ["000", "001"]
    acc = event_accumulator.EventAccumulator(str(parent / "000"))
    acc.Reload()
    assert "valid_auc" in acc.Tags()["scalars"]


def test_warm_start_links_to_yesterdays_run(
    server: str, tracked: dict[str, Any], data: dict[str, Path], tmp_path: Path
) -> None:
    out = tmp_path / "day2"
    argv = ["train", "--warm-start", str(tracked["out"]), "--data", str(data["valid"]), "--split", "0.8,0.2", "--out", str(out),
            "--no-cache", "--quiet", "--epochs", "1", "--track", f"mlflow:{server}"]  # fmt: skip
    assert main(argv) == 0
    run = mlflow.MlflowClient(tracking_uri=server).get_run(
        json.loads((out / "tracking.json").read_text())["mlflow"]["run_id"]
    )
    assert run.data.tags["deepfm.warm_start_run_id"] == tracked["record"]["mlflow"]["run_id"]


def test_track_in_the_config_file_is_a_run_setting_not_a_model_setting(data: dict[str, Path], tmp_path: Path) -> None:
    import yaml

    raw = yaml.safe_load(_config_file(tmp_path).read_text())
    raw["train"]["epochs"] = 1
    (tmp_path / "tracked.yaml").write_text(yaml.safe_dump({**raw, "track": f"tensorboard:{tmp_path / 'tb'}"}))
    argv = ["train", "--data", str(data["train"]), "--config", str(tmp_path / "tracked.yaml"), "--out", str(tmp_path / "m"),
            "--no-cache", "--quiet"]  # fmt: skip
    assert main(argv) == 0
    assert [p.name for p in (tmp_path / "tb").iterdir()] == ["m"]
    assert "track" not in json.loads((tmp_path / "m" / "config.json").read_text())  # not carried by the model


def test_estimator_tracks_its_fit(tmp_path: Path) -> None:
    from deepfm.estimator import DeepFMClassifier

    records = simple_records(600, seed=4)
    X = pd.DataFrame([{k: r[k] for k in ("user", "item", "price")} for r in records])
    y = [r["label"] for r in records]
    DeepFMClassifier(epochs=1, hidden=(8,), track=f"tensorboard:{tmp_path / 'tb'}").fit(X, y)
    (run,) = (tmp_path / "tb").iterdir()
    acc = event_accumulator.EventAccumulator(str(run))
    acc.Reload()
    assert {"valid_auc", "train_logloss", "curve_loss"} <= set(acc.Tags()["scalars"])


# ---------------------------------------------------------------- last: it stops the server
def test_a_tracker_stopped_mid_run_costs_no_run(server_process: tuple[str, subprocess.Popen[bytes]], data: dict[str, Path],
                                                tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:  # fmt: skip
    """The module's last test: it stops the module's server (a second one would cost its start-up)."""
    from deepfm.training import train

    # A stopped server is not retried for minutes here (MLflow's defaults back off for ~2 min).
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "5")
    uri, proc = server_process
    seen: list[int] = []

    def stop_after_first_epoch(row: dict[str, float]) -> None:
        seen.append(int(row["epoch"]))
        if row["epoch"] == 1:
            _stop(proc)

    config = small_config(simple_schema(), epochs=EPOCHS, patience=EPOCHS)
    bundle = train(config, data["train"], tmp_path / "out", valid=data["valid"], test=data["test"], cache=False,
                   on_epoch=stop_after_first_epoch, track=f"mlflow:{uri}")  # fmt: skip
    assert seen == list(range(1, EPOCHS + 1))  # training went on to the end
    warnings = [r for r in caplog.records if r.levelname == "WARNING" and "tracking to mlflow" in r.getMessage()]
    assert len(warnings) == 1, "one warning, then the tracker is quiet"
    saved = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert len(saved["history"]) == EPOCHS and saved["test_auc"] == bundle.metrics["test_auc"]
    Bundle.load(tmp_path / "out")
