"""The Predictor: a saved model's scoring path, with PyTorch or ONNX Runtime as its engine,
and the same path over files: scores, evaluation, calibration and prediction CSVs.

Files are streamed chunk by chunk, so a file larger than memory is fine.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv

from deepfm.bundle import Bundle
from deepfm.data.readers import open_reader
from deepfm.data.source import Reader, ReadOptions
from deepfm.errors import ConfigError, DataError
from deepfm.inference.export import OnnxEngine
from deepfm.model.calibration import Calibration, describe, fit, postprocess
from deepfm.scoring import ScoredModel, Scorer
from deepfm.util.metrics import calibration, summary


class Predictor(Scorer):
    """Scores raw rows with a bundle's fitted preprocessing and an engine (PyTorch by default):
    :class:`deepfm.scoring.Scorer` for a saved model folder."""

    @classmethod
    def load(
        cls, folder: str | Path, engine: str = "torch", onnx_path: str | Path | None = None, threads: int = 0
    ) -> Predictor:
        """A Predictor for a model folder; ``engine="onnx"`` runs ``onnx_path`` (default
        ``<folder>/model.onnx``, written by ``deepfm export``) with ONNX Runtime on ``threads``
        threads (0: one per core). PyTorch's threads are the process's: torch.set_num_threads."""
        bundle = Bundle.load(folder)
        if engine == "torch":
            return cls(bundle)
        if engine == "onnx":
            local = bundle.path or Path(folder)  # a URI's bundle: its downloaded copy
            return cls(bundle, OnnxEngine(onnx_path or local / "model.onnx", bundle, threads=threads))
        raise ConfigError(f"engine must be 'torch' or 'onnx', got {engine!r}")


# ---------------------------------------------------------------- files
def open_input(
    bundle: ScoredModel, path: str | Path, options: ReadOptions | None = None, need_label: bool = False
) -> Reader:
    """A Reader for data to score with ``bundle``: same reading settings as training unless
    given; a headerless file may leave out the label column."""
    schema = bundle.config.schema
    reader = open_reader(path, options or bundle.config.data, column_names=schema.columns, optional_label=schema.label)
    reader.check_columns(schema.names, what="the model's schema")
    if need_label and schema.label not in reader.columns:
        raise DataError(
            f"no label column {schema.label!r} to evaluate against; the file has {reader.columns}", path=str(path)
        )
    return reader


def evaluate(model: Bundle | Scorer, path: str | Path, options: ReadOptions | None = None) -> dict[str, Any]:
    """{"auc", "logloss", "rows", "ctr", "mean_prediction", "ece"} of the model on a labelled file."""
    y, p, skipped = scores(model, path, options)
    result: dict[str, Any] = summary(y, p)
    if skipped:
        result["skipped_rows"] = skipped
    return result


def scores(
    model: Bundle | Scorer, path: str | Path, options: ReadOptions | None = None, calibrated: bool = True
) -> tuple[np.ndarray, np.ndarray, int]:
    """(labels (N,), probabilities (N,), rows skipped) of a labelled file, streamed by chunk.
    ``calibrated=False``: the model's own probabilities (see Scorer.predict_encoded)."""
    predictor = _predictor(model)
    reader = open_input(predictor.bundle, path, options, need_label=True)
    schema = predictor.schema
    labels, probs = [], []
    for chunk in reader.chunks([schema.label, *schema.names], schema.numeric_columns):
        enc = predictor.pipeline.encode(chunk)
        assert enc.labels is not None  # open_input checked the label column
        labels.append(enc.labels)
        probs.append(predictor.predict_encoded(enc, calibrated=calibrated))
    return np.concatenate(labels), np.concatenate(probs), reader.skipped


def calibrate(
    bundle: Bundle, path: str | Path, method: str = "platt", options: ReadOptions | None = None
) -> dict[str, Any]:
    """Fit ``method`` (isotonic or platt) on the labelled rows of ``path`` -- rows the model
    did not train on -- and save it into the bundle's folder (calibration.json, manifest
    signed again). metrics.json gains ``calibration_fit``: the summary and reliability bins of
    those rows before and after. Returns that record."""
    if bundle.path is None:
        raise ValueError("calibrate needs a bundle loaded from (or saved to) a folder")
    y, raw, _ = scores(bundle, path, options, calibrated=False)
    base = Calibration(neg_sample_rate=bundle.calibration.neg_sample_rate)  # a fit replaces the old one
    fitted = fit(postprocess(raw, base), y, method, base)
    record: dict[str, Any] = {"method": method, "data": str(path), **describe(fitted)}
    for name, state in (("before", base), ("after", fitted)):
        p = postprocess(raw, state)
        record[name] = {**summary(y, p), "calibration": calibration(y, p)}
    bundle.calibration = fitted
    bundle.metrics["calibration_fit"] = record
    bundle.save(bundle.path)
    return record


def predict_file(
    model: Bundle | Scorer,
    path: str | Path,
    out: str | Path,
    keep: list[str] | None = None,
    options: ReadOptions | None = None,
) -> int:
    """Write one probability per input row (in order) to a CSV, with ``keep`` columns copied
    through (an id, say). Streams chunk by chunk. Returns the number of rows written."""
    predictor = _predictor(model)
    reader = open_input(predictor.bundle, path, options)
    schema = predictor.schema
    keep = keep or []
    reader.check_columns(keep, what="--keep")
    columns = list(dict.fromkeys([*schema.names, *keep]))
    out_schema = pa.schema([*(pa.field(k, pa.string()) for k in keep), pa.field("probability", pa.float64())])
    rows = 0
    with pacsv.CSVWriter(str(out), out_schema, write_options=pacsv.WriteOptions(quoting_style="needed")) as writer:
        for chunk in reader.chunks(columns, schema.numeric_columns):
            p = predictor.predict_chunk(chunk)
            cols = [chunk.table.column(k).cast(pa.string()) for k in keep]
            writer.write_table(pa.table([*cols, pa.array(p)], schema=out_schema))
            rows += len(p)
    return rows


def _predictor(model: Bundle | Scorer) -> Scorer:
    return model if isinstance(model, Scorer) else model.predictor()
