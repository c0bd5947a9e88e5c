"""ONNX export: ONNX Runtime gives PyTorch's probabilities (within 1e-5) on 10k generated rows
through the whole scoring path, with a dynamic batch axis and the preprocessing in metadata."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from deepfm.bundle import Bundle
from deepfm.cli import main
from deepfm.errors import BundleError
from deepfm.inference.export import export_onnx, random_encoded
from deepfm.inference.predictor import Predictor
from deepfm.model.layers import pool_bags
from deepfm.training import train

from helpers import SIMPLE_FIELDS, simple_records, simple_schema, small_config, write_records_csv

onnx = pytest.importorskip("onnx")


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, dict]:
    tmp = tmp_path_factory.mktemp("export")
    data = write_records_csv(tmp / "train.csv", simple_records(3000, seed=12))
    bundle = train(small_config(simple_schema(pooling="sum")), data, tmp / "model", split="0.8,0.1,0.1")
    report = export_onnx(bundle, tmp / "model.onnx", check_rows=1000)
    return tmp / "model", tmp / "model.onnx", report


def test_onnx_matches_pytorch_on_10k_generated_rows(exported) -> None:
    model_dir, onnx_path, report = exported
    assert report["max_abs_diff"] <= 1e-5
    rows = [{k: r[k] for k in SIMPLE_FIELDS} for r in simple_records(10_000, seed=21)]
    with_torch = Predictor.load(model_dir).predict(rows)
    with_onnx = Predictor.load(model_dir, engine="onnx", onnx_path=onnx_path).predict(rows)
    assert with_onnx.shape == (10_000,) and np.unique(with_torch).size > 100
    assert np.max(np.abs(with_onnx - with_torch)) <= 1e-5
    # and on every kind of encoded input, OOV and missing rows included, at several batch sizes
    bundle = Bundle.load(model_dir)
    onnx_predictor = Predictor.load(model_dir, engine="onnx", onnx_path=onnx_path)
    for n in (1, 2, 7, 4096):
        chunk = random_encoded(bundle.pipeline, n, seed=n)
        diff = np.abs(onnx_predictor.predict_encoded(chunk) - bundle.predict_encoded(chunk))
        assert diff.shape == (n,) and diff.max() <= 1e-5


def test_criteo_layout_exports_with_ids_only(criteo_tsv: Path, tmp_path: Path) -> None:
    """Bucketized numerics and categoricals only: the graph's one input is ids."""
    from deepfm.data.schema import criteo_schema

    bundle = train(small_config(criteo_schema()), criteo_tsv, tmp_path / "model", split="0.8,0.1,0.1")
    report = export_onnx(bundle, tmp_path / "c.onnx", check_rows=3000)
    assert report["inputs"] == ["ids"] and report["max_abs_diff"] <= 1e-5


def test_graph_has_a_dynamic_batch_and_the_preprocessing_in_metadata(exported) -> None:
    model_dir, onnx_path, _ = exported
    graph = onnx.load(str(onnx_path))
    inputs = {i.name: i.type.tensor_type.shape.dim for i in graph.graph.input}
    assert list(inputs) == ["ids", "values", "mh0_offsets", "mh0_ids"]
    batch = inputs["ids"][0].dim_param
    assert batch and inputs["values"][0].dim_param == batch and inputs["mh0_offsets"][0].dim_param == batch
    assert inputs["mh0_ids"][0].dim_param not in ("", batch)  # bags have their own length
    assert inputs["ids"][1].dim_value == 3 and inputs["values"][1].dim_value == 1
    assert [o.name for o in graph.graph.output] == ["logit", "probability"]
    assert "Loop" not in {n.op_type for n in graph.graph.node}  # bags pooled without a loop
    meta = {p.key: p.value for p in graph.metadata_props}
    assert meta["deepfm.model_id"] == Bundle.load(model_dir).model_id
    assert json.loads(meta["deepfm.pipeline"]) == json.loads((model_dir / "pipeline.json").read_text())
    assert len(meta["deepfm.vocab_sha256"]) == 64
    assert [i["name"] for i in json.loads(meta["deepfm.inputs"])] == list(inputs)
    assert "offset" in meta["deepfm.encoding"]


def test_onnx_from_another_model_is_refused(exported, tmp_path: Path) -> None:
    model_dir, onnx_path, _ = exported
    graph = onnx.load(str(onnx_path))
    for prop in graph.metadata_props:
        if prop.key == "deepfm.model_id":
            prop.value = "0123456789abcdef"
    stale = tmp_path / "stale.onnx"
    onnx.save(graph, str(stale))
    with pytest.raises(BundleError, match="exported from model '0123456789abcdef'.*export again"):
        Predictor.load(model_dir, engine="onnx", onnx_path=stale)
    with pytest.raises(BundleError, match="no ONNX file"):
        Predictor.load(model_dir, engine="onnx", onnx_path=tmp_path / "missing.onnx")


def test_predict_cli_with_the_onnx_engine(exported, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    model_dir, onnx_path, _ = exported
    data = write_records_csv(tmp_path / "score.csv", simple_records(500, seed=30))
    folder = tmp_path / "m"
    shutil.copytree(model_dir, folder)
    shutil.copy(onnx_path, folder / "model.onnx")  # the default place --engine onnx looks
    assert main(["predict", str(folder), "--data", str(data), "--out", str(tmp_path / "t.csv"), "--quiet"]) == 0
    assert (
        main(
            [
                "predict",
                str(folder),
                "--data",
                str(data),
                "--out",
                str(tmp_path / "o.csv"),
                "--engine",
                "onnx",
                "--quiet",
            ]
        )
        == 0
    )
    t = np.loadtxt(tmp_path / "t.csv", skiprows=1)
    o = np.loadtxt(tmp_path / "o.csv", skiprows=1)
    assert t.shape == (500,) and np.max(np.abs(t - o)) <= 1e-5


def test_export_cli_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    assert main(["export", str(tmp_path / "none"), "--onnx", str(tmp_path / "m.onnx")]) == 2
    assert "not a model folder" in capsys.readouterr().err
    monkeypatch.setitem(__import__("sys").modules, "onnxscript", None)  # as if not installed
    assert main(["export", str(tmp_path / "none"), "--onnx", str(tmp_path / "m.onnx")]) == 2
    assert "pip install 'deepfm[onnx]'" in capsys.readouterr().err


def test_serve_without_the_extra_says_what_to_install(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(__import__("sys").modules, "fastapi", None)
    assert main(["serve", str(tmp_path)]) == 2
    assert "pip install 'deepfm[serve]'" in capsys.readouterr().err


@pytest.mark.parametrize("mode", ["mean", "sum"])
def test_pool_bags_is_embedding_bag(mode: str) -> None:
    """The export's loop-free pooling gives embedding_bag's vectors, empty bags included."""
    rng = np.random.default_rng(3)
    lengths = rng.integers(0, 5, 200)
    lengths[[0, 57, -1]] = 0  # empty bags first, inside and last
    offsets = torch.from_numpy(np.concatenate([[0], np.cumsum(lengths)[:-1]]))
    rows = torch.randn(int(lengths.sum()), 5, dtype=torch.float64)
    expected = F.embedding_bag(torch.arange(rows.shape[0]), rows, offsets, mode=mode)
    torch.testing.assert_close(pool_bags(rows, offsets, mode), expected, rtol=0, atol=1e-12)
