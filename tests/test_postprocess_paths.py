"""A downsampled and calibrated model gives the same corrected probabilities on every path:
Python (Bundle.predict), the CLI (deepfm predict), HTTP (deepfm serve) and ONNX (the graph's
metadata carries the correction; the ONNX engine applies it)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow.csv as pacsv
import pytest

from deepfm.bundle import Bundle
from deepfm.cli import main
from deepfm.inference.predictor import Predictor, calibrate
from deepfm.model.calibration import Calibration, postprocess
from deepfm.training import train

from helpers import SIMPLE_FIELDS, simple_records, simple_schema, small_config, write_records_csv

pytest.importorskip("onnxruntime")
pytest.importorskip("fastapi")
from serving import start  # noqa: E402


def test_every_path_returns_the_corrected_probability(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    records = simple_records(3000, seed=8)
    data = write_records_csv(tmp_path / "d.csv", records)
    folder = tmp_path / "m"
    train(small_config(simple_schema()), data, folder, split="0.7,0.3", cache=False, neg_sample_rate=0.5)
    holdout = write_records_csv(tmp_path / "h.csv", simple_records(800, seed=9))
    calibrate(Bundle.load(folder), holdout, method="platt")  # a fitted part after the correction

    bundle = Bundle.load(folder)
    assert bundle.calibration.neg_sample_rate == 0.5 and bundle.calibration.method == "platt"
    rows = [{k: r[k] for k in SIMPLE_FIELDS} for r in records[:200]]
    python = bundle.predict(rows)
    predictor = Predictor(bundle)
    raw = predictor.engine(bundle.pipeline.encode(next(iter(_chunks(predictor, rows))), with_labels=False))
    assert np.allclose(python, postprocess(raw, bundle.calibration)) and not np.allclose(python, raw)

    # CLI
    scores = tmp_path / "scores.csv"
    rows_csv = write_records_csv(tmp_path / "rows.csv", records[:200])
    assert main(["predict", str(folder), "--data", str(rows_csv), "--out", str(scores)]) == 0
    cli = pacsv.read_csv(scores).column("probability").to_numpy()
    np.testing.assert_allclose(cli, python, rtol=1e-6)

    # ONNX: the graph holds the model's own probability and, in its metadata, the correction
    assert main(["export", str(folder), "--onnx", str(folder / "model.onnx"), "--quiet"]) == 0
    capsys.readouterr()
    import onnx

    meta = {p.key: p.value for p in onnx.load(str(folder / "model.onnx")).metadata_props}
    assert Calibration.from_json(meta["deepfm.postprocess"]) == bundle.calibration
    onnx_p = Predictor.load(folder, engine="onnx").predict(rows)
    np.testing.assert_allclose(onnx_p, python, rtol=1e-5, atol=1e-6)

    # HTTP
    for server in start(folder, tmp_path / "server.log"):
        status, body = server.post({"records": rows})
        assert status == 200
        np.testing.assert_allclose(body["probabilities"], python, rtol=1e-6)


def _chunks(predictor: Predictor, rows: list[dict]):  # type: ignore[no-untyped-def]
    from deepfm.data.tables import TableSource

    return TableSource(predictor.records_table(rows)).chunks(predictor.schema.names, 10_000)


def test_metrics_report_the_corrected_mean_prediction(tmp_path: Path) -> None:
    data = write_records_csv(tmp_path / "d.csv", simple_records(3000, seed=8))
    bundle = train(
        small_config(simple_schema()), data, tmp_path / "m", split="0.7,0.3", cache=False, neg_sample_rate=0.3
    )
    m = json.loads((tmp_path / "m" / "metrics.json").read_text())
    assert m == bundle.metrics
    # Trained on 30% of the negatives, the model's own mean would be near 0.75 for a CTR of
    # 0.47 (0.47 / (0.47 + 0.3 * 0.53)); corrected, a 2-epoch toy model lands within 0.08.
    assert abs(m["valid_mean_prediction"] - m["valid_ctr"]) < 0.08
