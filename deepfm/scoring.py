"""The one scoring path: raw rows -> probabilities, for the CLI, Python and HTTP alike.

    rows (records, a DataFrame, a file chunk)
      -> validated Arrow table          records: unknown fields, wrong types named by record
      -> FeaturePipeline.encode         the fitted preprocessing of training
      -> engine                         the PyTorch model, or an ONNX Runtime session
      -> postprocess                    downsampling correction, fitted calibration
      -> probabilities (N,) float64

A :class:`Scorer` reads what it needs from a model (a Bundle, or anything shaped like one);
``Bundle.predict`` uses one with the PyTorch engine, and :class:`deepfm.Predictor` is one
loaded from a folder, with PyTorch or ONNX Runtime.
"""

from __future__ import annotations

from typing import Any, Protocol

import numpy as np
import pyarrow as pa
import torch

from deepfm.config import RunConfig
from deepfm.data.encoded import Batch, EncodedChunk
from deepfm.data.source import Chunk
from deepfm.data.tables import TableSource
from deepfm.features.pipeline import FeaturePipeline
from deepfm.features.records import CheckedRecords, RecordChecker, describe_fields, example_record
from deepfm.model.calibration import Calibration, postprocess
from deepfm.model.deepfm import DeepFM


class Engine(Protocol):
    """Runs the model on encoded rows: EncodedChunk -> probabilities (N,) float64."""

    name: str

    def __call__(self, chunk: EncodedChunk) -> np.ndarray: ...


class TorchEngine:
    """A PyTorch model in inference mode (no autograd bookkeeping)."""

    name = "torch"

    def __init__(self, model: DeepFM) -> None:
        self.model = model.eval()
        self.device = next(model.parameters()).device

    def __call__(self, chunk: EncodedChunk) -> np.ndarray:
        with torch.inference_mode():
            batch = Batch.from_chunk(chunk).to(self.device)
            return torch.sigmoid(self.model(batch)).double().cpu().numpy()


class ScoredModel(Protocol):
    """What a Scorer reads from a model: a Bundle has all of it."""

    config: RunConfig
    pipeline: FeaturePipeline
    model: DeepFM
    calibration: Calibration

    @property
    def model_id(self) -> str: ...


class Scorer:
    """Scores raw rows with a model's fitted preprocessing and an engine (PyTorch by default).

    Everything per model is built once here; a call only validates, encodes and runs.
    """

    def __init__(self, bundle: ScoredModel, engine: Engine | None = None) -> None:
        self.bundle = bundle
        self.engine: Engine = engine or TorchEngine(bundle.model)
        self.schema = bundle.config.schema
        self.pipeline = bundle.pipeline
        self.records = RecordChecker(self.schema)

    @property
    def model_id(self) -> str:
        return self.bundle.model_id

    # ------------------------------------------------------------ rows -> probabilities
    def predict(self, data: object, batch_size: int = 65536) -> np.ndarray:
        """Probabilities for records (a list of dicts, or one dict), a pandas/polars DataFrame
        or an Arrow table. A missing field is a missing value and an unseen value goes to its
        field's OOV row, as in training. Records are checked strictly (see ``check_records``);
        a table is read like a file, its extra columns ignored. -> (N,) float64"""
        return self.predict_table(self.records.to_table(data), batch_size)

    def predict_table(self, table: pa.Table, batch_size: int = 65536) -> np.ndarray:
        """Probabilities for a table holding (some of) the schema's fields. -> (N,) float64"""
        out = [self.predict_chunk(c) for c in TableSource(table).chunks(self.schema.names, batch_size)]
        return np.concatenate(out) if out else np.zeros(0, dtype=np.float64)

    def predict_chunk(self, chunk: Chunk) -> np.ndarray:
        """Probabilities for one chunk of a file or table. -> (N,) float64"""
        return self.predict_encoded(self.pipeline.encode(chunk, with_labels=False))

    def predict_encoded(self, chunk: EncodedChunk, calibrated: bool = True) -> np.ndarray:
        """Probabilities for rows already encoded by the pipeline, through the model's
        :func:`deepfm.model.calibration.postprocess` (the downsampling correction, then any
        fitted calibration) unless ``calibrated=False``. -> (N,) float64"""
        if len(chunk) == 0:
            return np.zeros(0, dtype=np.float64)
        p = self.engine(chunk)
        # Read at call time: `deepfm calibrate` may have fitted a new one into this bundle.
        return postprocess(p, self.bundle.calibration) if calibrated else p

    # ------------------------------------------------------------ records
    def records_table(self, records: object) -> pa.Table:
        """Records -> a table with exactly the schema's fields (see ``check_records``)."""
        return self.records.records_table(records)

    def check_records(self, records: object) -> CheckedRecords:
        """Check records and put their values in columns; a DataError names the record index
        and the field (:meth:`deepfm.features.records.RecordChecker.check`)."""
        return self.records.check(records)

    def table(self, parts: list[CheckedRecords]) -> pa.Table:
        """One table of the schema's fields from checked records (several requests at once)."""
        return self.records.table(parts)

    # ------------------------------------------------------------ description
    def describe(self) -> dict[str, Any]:
        """The fields a record may hold, their kinds and what each accepts, and an example."""
        return {
            "model": self.model_id,
            "label": self.schema.label,
            "fields": describe_fields(self.schema),
            "example": self.example_record(),
        }

    def example_record(self) -> dict[str, Any]:
        """A record of typical values: each categorical's most frequent value, numbers inside
        the most common bin or at the training mean."""
        return example_record(self.pipeline)

    def warm_up(self) -> None:
        """Score the example record once: builds the lookup dicts and the engine's kernels, so
        the first real request does not pay for them."""
        self.predict([self.example_record()])
