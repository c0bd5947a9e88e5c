"""ONNX export of a trained model, over encoded inputs, and the engine that serves it.

The graph is the model after the FeaturePipeline: raw values still go through the bundle's
fitted preprocessing (vocabularies, bins, scaling), which the graph's metadata describes.

    inputs   ids             (B, S)   int64    one id per single-valued field, offset per field
             values          (B, V)   float32  scaled numeric values (only if the schema has any)
             mh{k}_offsets   (B,)     int64    start of each row's bag in mh{k}_ids, k-th multi-hot field
             mh{k}_ids       (nnz_k,) int64    the bags' ids, concatenated
    outputs  logit (B,) float32, probability (B,) float32          B is dynamic (>= 1)

Metadata (``metadata_props``): ``deepfm.model_id`` (the bundle it came from),
``deepfm.pipeline`` (pipeline.json: schema, field offsets, numeric statistics, bin edges),
``deepfm.vocab_sha256`` (vocab.arrow, which maps values to ids), ``deepfm.inputs``,
``deepfm.encoding`` (how a raw value becomes an id) and ``deepfm.postprocess`` (the
negative-downsampling rate and any fitted calibration, as calibration.json: the graph's
``probability`` is the model's own; the Predictor, serving the graph, applies them after it).

Exported with torch.onnx's dynamo exporter (the maintained one; it needs ``onnxscript``).
Multi-hot bags are pooled by a segment sum (layers.pool_bags), not embedding_bag, which the
exporter would turn into a Loop over rows.
"""

from __future__ import annotations

import contextlib
import copy
import io
import json
import logging
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from deepfm.bundle import Bundle
from deepfm.data.encoded import EncodedChunk
from deepfm.errors import BundleError, DeepFMError, require_extra
from deepfm.features.pipeline import FeaturePipeline
from deepfm.model.deepfm import DeepFM
from deepfm.scoring import TorchEngine
from deepfm.util.files import sha256_file

ENCODING = (
    "ids[:, j] = offset_j + local id of field j (0: unseen or rare value, 1: missing, 2 + i: "
    "the i-th value of the field's vocabulary in vocab.arrow); numeric fields are binned (log: "
    "floor(log(x)^2), or quantile edges) then looked up, or scaled: ids[:, j] = offset_j (or "
    "offset_j + 1 if missing) and values[:, v] = (transform(x) - mean) / std (1 if missing); "
    "multi-hot lists are split on the separator and each token looked up like a categorical. "
    "Field offsets, statistics and edges are in deepfm.pipeline."
)


class _EncodedGraph(nn.Module):
    """The model as a function of flat tensors, the shape the ONNX graph takes."""

    def __init__(self, model: DeepFM) -> None:
        super().__init__()
        self.model = model
        self.n_values = len(model.layout.scaled_positions)
        self.n_multi_hot = len(model.layout.poolings)

    def forward(self, ids: torch.Tensor, *rest: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """ids (B,S), [values (B,V)], then (offsets (B,), ids (nnz,)) per multi-hot field
        -> logit (B,), probability (B,)"""
        if self.n_values:
            values, rest = rest[0], rest[1:]
        else:
            values = torch.zeros((ids.shape[0], 0), dtype=torch.float32)
        bags = [(rest[2 * k], rest[2 * k + 1]) for k in range(self.n_multi_hot)]
        logit = self.model.logits(ids, values, bags)
        return logit, torch.sigmoid(logit)


def input_names(model: DeepFM) -> list[str]:
    names = ["ids"] + (["values"] if model.layout.scaled_positions else [])
    for k in range(len(model.layout.poolings)):
        names += [f"mh{k}_offsets", f"mh{k}_ids"]
    return names


def graph_inputs(chunk: EncodedChunk, names: list[str]) -> dict[str, np.ndarray]:
    """An EncodedChunk as the graph's named inputs (bag starts without the closing offset)."""
    feeds = {"ids": chunk.ids}
    if "values" in names:
        feeds["values"] = chunk.values
    for k, (offsets, ids) in enumerate(chunk.multi_hot):
        feeds[f"mh{k}_offsets"] = offsets[:-1]
        feeds[f"mh{k}_ids"] = ids
    return feeds


def random_encoded(pipeline: FeaturePipeline, n: int, seed: int = 0) -> EncodedChunk:
    """``n`` rows of valid encoded inputs: every id inside its field's rows (OOV and missing
    included), scaled values ~ N(0, 1), bags of 1-4 ids. For checking an export."""
    rng = np.random.default_rng(seed)
    singles = pipeline.single_fields
    ids = np.empty((n, len(singles)), dtype=np.int64)
    for j, spec in enumerate(singles):
        st = pipeline.states[spec.name]
        ids[:, j] = st.offset + rng.integers(0, st.size, n)
    values = rng.normal(size=(n, len(pipeline.scaled_positions))).astype(np.float32)
    multi = []
    for spec in pipeline.multi_hot_fields:
        st = pipeline.states[spec.name]
        lengths = rng.integers(1, 5, n)
        offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        multi.append((offsets, st.offset + rng.integers(0, st.size, int(offsets[-1]))))
    return EncodedChunk(ids=ids, values=values, multi_hot=multi, labels=None)


def export_onnx(bundle: Bundle, path: str | Path, check_rows: int = 2000) -> dict[str, Any]:
    """Write ``bundle``'s model as an ONNX graph with a dynamic batch axis, then check that
    ONNX Runtime gives PyTorch's probabilities (within 1e-5) on ``check_rows`` generated rows.
    Returns {"path", "inputs", "model", "check_rows", "max_abs_diff", "seconds"}."""
    require_extra("onnx", "onnx", "onnxscript", "onnxruntime")
    if bundle.path is None:
        raise BundleError("save the bundle before exporting it (the export names the folder's model id)")
    path = Path(path)
    t0 = time.perf_counter()
    model = bundle.model if bundle.device.type == "cpu" else copy.deepcopy(bundle.model).cpu()
    model.eval()
    names = input_names(model)
    # An example of 3 rows whose bags hold 5 ids: batch and bag sizes differ, so the exporter
    # keeps them apart, and neither is 0 or 1 (sizes it would fix as constants).
    example = random_encoded(bundle.pipeline, 3, seed=1)
    for k, spec in enumerate(bundle.pipeline.multi_hot_fields):
        offset = bundle.pipeline.states[spec.name].offset
        example.multi_hot[k] = (np.array([0, 1, 3, 5], dtype=np.int64), np.full(5, offset, dtype=np.int64))
    feeds = graph_inputs(example, names)
    batch = torch.export.Dim("batch", min=1)
    dynamic = [{0: torch.export.Dim(f"nnz_{n[:-4]}", min=1)} if n.endswith("_ids") else {0: batch} for n in names]
    args = tuple(torch.from_numpy(feeds[n]) for n in names)
    model.embedding.loop_free_pooling = True  # same vectors, no ONNX Loop over bags
    try:
        with _quiet():
            program = _export(_EncodedGraph(model), args, names, dynamic)
    except Exception as exc:  # torch.export raises many types; the first line says what failed
        summary = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DeepFMError(f"torch.onnx could not export {bundle.path}: {summary}") from exc
    finally:
        model.embedding.loop_free_pooling = False
    meta = program.model.metadata_props
    meta["deepfm.model_id"] = bundle.model_id
    meta["deepfm.pipeline"] = (bundle.path / "pipeline.json").read_text()
    meta["deepfm.vocab_sha256"] = sha256_file(bundle.path / "vocab.arrow")
    meta["deepfm.inputs"] = json.dumps(_describe_inputs(model))
    meta["deepfm.encoding"] = ENCODING
    # The graph's probability is the model's own; users get it after this (deepfm.calibration.postprocess).
    meta["deepfm.postprocess"] = bundle.calibration.to_json()
    path.parent.mkdir(parents=True, exist_ok=True)
    with _quiet():
        program.save(str(path))
    diff = check_onnx(path, bundle, check_rows) if check_rows else None
    return {
        "path": str(path),
        "model": bundle.model_id,
        "inputs": names,
        "check_rows": check_rows,
        "max_abs_diff": diff,
        "seconds": round(time.perf_counter() - t0, 2),
    }


def check_onnx(path: str | Path, bundle: Bundle, rows: int = 2000, tolerance: float = 1e-5) -> float:
    """Max |p_onnx - p_torch| over ``rows`` generated encoded rows; raises past ``tolerance``."""
    chunk = random_encoded(bundle.pipeline, rows, seed=2)
    onnx_p = OnnxEngine(path, bundle)(chunk)
    torch_p = TorchEngine(bundle.model)(chunk)
    diff = float(np.max(np.abs(onnx_p - torch_p))) if rows else 0.0
    if diff > tolerance:
        raise DeepFMError(f"{path}: ONNX Runtime differs from PyTorch by {diff:.3g} (> {tolerance}) on generated rows")
    return diff


def _describe_inputs(model: DeepFM) -> list[dict[str, Any]]:
    s, v = model.layout.n_single, len(model.layout.scaled_positions)
    out = [{"name": "ids", "dtype": "int64", "shape": ["batch", s]}]
    if v:
        out.append({"name": "values", "dtype": "float32", "shape": ["batch", v]})
    for k in range(len(model.layout.poolings)):
        out.append({"name": f"mh{k}_offsets", "dtype": "int64", "shape": ["batch"]})
        out.append({"name": f"mh{k}_ids", "dtype": "int64", "shape": [f"nnz_mh{k}"]})
    return out


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Without the exporter's progress lines, its optimizer's INFO logs and warnings about
    packages we do not use (torchvision)."""
    loggers = [logging.getLogger(n) for n in ("torch.onnx", "torch.export", "torch._export", "onnxscript", "onnx_ir")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


def _export(module: nn.Module, args: tuple[torch.Tensor, ...], names: list[str], dynamic: list[dict[int, Any]]) -> Any:
    # forward(ids, *rest): the shapes follow that structure, and an empty *rest is left out.
    shapes = (dynamic[0], tuple(dynamic[1:])) if len(dynamic) > 1 else (dynamic[0],)
    return torch.onnx.export(
        module,
        args,
        dynamo=True,
        input_names=names,
        output_names=["logit", "probability"],
        dynamic_shapes=shapes,
        verbose=False,
    )


class OnnxEngine:
    """Runs an exported graph with ONNX Runtime on the CPU: EncodedChunk -> (N,) float64.
    Refuses a graph exported from another model than ``bundle``'s."""

    name = "onnx"

    def __init__(self, path: str | Path, bundle: Bundle, threads: int = 0) -> None:
        """``threads``: intra-op threads, 0 for ONNX Runtime's default (one per core); a server
        running many small batches wants 1."""
        require_extra("onnx", "onnxruntime")
        import onnxruntime as ort

        path = Path(path)
        if not path.is_file():
            raise BundleError(f"{path}: no ONNX file; write one with: deepfm export {bundle.path} --onnx {path}")
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.log_severity_level = 3  # errors only
        try:
            self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own types for unreadable graphs
            raise BundleError(f"{path}: not a loadable ONNX graph ({exc})") from None
        meta = self.session.get_modelmeta().custom_metadata_map
        exported_from = meta.get("deepfm.model_id")
        if exported_from != bundle.model_id:
            raise BundleError(
                f"{path} was exported from model {exported_from!r}, but {bundle.path} holds model "
                f"{bundle.model_id!r}; export again with: deepfm export {bundle.path} --onnx {path}"
            )
        self.names = [i.name for i in self.session.get_inputs()]

    def __call__(self, chunk: EncodedChunk) -> np.ndarray:
        (p,) = self.session.run(["probability"], graph_inputs(chunk, self.names))
        return p.astype(np.float64)
