"""The Predictor: raw rows -> probabilities, the one scoring path of the CLI, Python and HTTP.

    rows (records, a DataFrame, a file chunk)
      -> validated Arrow table          records: unknown fields, wrong types named by record
      -> FeaturePipeline.encode         the fitted preprocessing of training
      -> engine                         the PyTorch model, or an ONNX Runtime session
      -> probabilities (N,) float64

Files are streamed chunk by chunk, so a file larger than memory is fine.
"""

from __future__ import annotations

import difflib
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import torch

from deepfm.bundle import Bundle
from deepfm.model.calibration import Calibration, describe, fit, postprocess
from deepfm.data.encoded import Batch
from deepfm.errors import ConfigError, DataError
from deepfm.features.pipeline import EncodedChunk, FeaturePipeline
from deepfm.data.readers import Chunk, ReadOptions, Reader, TableSource, as_table, record_value, to_float
from deepfm.util.metrics import calibration, summary
from deepfm.model.deepfm import DeepFM
from deepfm.data.schema import FieldSpec, Schema


class Engine(Protocol):
    """Runs the model on encoded rows: EncodedChunk -> probabilities (N,) float64."""

    name: str

    def __call__(self, chunk: EncodedChunk) -> np.ndarray: ...


class TorchEngine:
    """The bundle's PyTorch model in inference mode (no autograd bookkeeping)."""

    name = "torch"

    def __init__(self, model: DeepFM) -> None:
        self.model = model.eval()
        self.device = next(model.parameters()).device

    def __call__(self, chunk: EncodedChunk) -> np.ndarray:
        with torch.inference_mode():
            batch = Batch.from_chunk(chunk).to(self.device)
            return torch.sigmoid(self.model(batch)).double().cpu().numpy()


@dataclass
class CheckedRecords:
    """Records that passed ``Predictor.check_records``, by column: for each field given, one
    value per record (None: missing; float for numeric fields, text for the others)."""

    rows: int
    columns: dict[str, list[object]]


class Predictor:
    """Scores raw rows with a bundle's fitted preprocessing and an engine (PyTorch by default).

    Everything per model is built once here; a call only validates, encodes and runs.
    """

    def __init__(self, bundle: Bundle, engine: Engine | None = None) -> None:
        self.bundle = bundle
        self.engine: Engine = engine or TorchEngine(bundle.model)
        self.schema: Schema = bundle.config.schema
        self.pipeline: FeaturePipeline = bundle.pipeline
        self._specs = {f.name: f for f in self.schema.fields}
        self._numeric = {f.name for f in self.schema.fields if f.kind == "numeric"}
        self._multi_hot = {f.name: f.separator for f in self.schema.fields if f.kind == "multi_hot"}
        # The label and the file's other declared columns may ride along in a record; they are
        # dropped. Anything else is a mistake worth reporting (a typo would be a missing value).
        self._ignored = {self.schema.label, *(self.schema.columns or ())} - set(self._specs)

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
            from deepfm.inference.export import OnnxEngine  # a sibling module; needs the [onnx] extra

            return cls(bundle, OnnxEngine(onnx_path or Path(folder) / "model.onnx", bundle, threads=threads))
        raise ConfigError(f"engine must be 'torch' or 'onnx', got {engine!r}")

    @property
    def model_id(self) -> str:
        return self.bundle.model_id

    # ------------------------------------------------------------ rows -> probabilities
    def predict(self, data: object, batch_size: int = 65536) -> np.ndarray:
        """Probabilities for records (a list of dicts, or one dict), a pandas/polars DataFrame
        or an Arrow table. A missing field is a missing value and an unseen value goes to its
        field's OOV row, as in training. Records are checked strictly (see ``records_table``);
        a table is read like a file, its extra columns ignored. -> (N,) float64"""
        if isinstance(data, dict):
            data = [data]
        if isinstance(data, (list, tuple)):
            table = self.records_table(data)
        else:
            table = as_table(data, numeric=self._numeric, multi_hot=self._multi_hot)
        return self.predict_table(table, batch_size)

    def predict_table(self, table: pa.Table, batch_size: int = 65536) -> np.ndarray:
        """Probabilities for a table holding (some of) the schema's fields. -> (N,) float64"""
        out = [self.predict_chunk(c) for c in TableSource(table).chunks(self.schema.names, batch_size)]
        return np.concatenate(out) if out else np.zeros(0, dtype=np.float64)

    def predict_chunk(self, chunk: Chunk) -> np.ndarray:
        """Probabilities for one chunk of a file or table. -> (N,) float64"""
        return self.predict_encoded(self.pipeline.encode(chunk, with_labels=False))

    def predict_encoded(self, chunk: EncodedChunk, calibrated: bool = True) -> np.ndarray:
        """Probabilities for rows already encoded by the pipeline, through the bundle's
        :func:`deepfm.calibration.postprocess` (the downsampling correction, then any fitted
        calibration) unless ``calibrated=False``. -> (N,) float64"""
        if len(chunk) == 0:
            return np.zeros(0, dtype=np.float64)
        p = self.engine(chunk)
        # Read at call time: `deepfm calibrate` may have fitted a new one into this bundle.
        return postprocess(p, self.bundle.calibration) if calibrated else p

    # ------------------------------------------------------------ validation
    def records_table(self, records: object) -> pa.Table:
        """Records -> a table with exactly the schema's fields, every value checked (see
        ``check_records``). Numeric fields float64, the others text, absent fields null."""
        return self.table([self.check_records(records)])

    def check_records(self, records: object) -> CheckedRecords:
        """Check records (a list of {field: value}) and put their values in columns. Raises
        DataError naming the record index and the field: an unknown field, a list or object
        where one value belongs, a boolean, a number that does not parse or is not finite.
        ``None`` or an absent field is a missing value. Pure Python for plain values, so a
        request of one record costs microseconds; see ``table`` for the Arrow side."""
        if not isinstance(records, (list, tuple)):
            raise DataError(f"expected a list of records (objects of field -> value), got {json_type(records)}")
        n = len(records)
        columns: dict[str, list[object]] = {}
        text_numbers: set[str] = set()
        for i, rec in enumerate(records):
            if not isinstance(rec, dict):
                raise DataError(f"expected an object of field -> value, got {json_type(rec)}", line=f"record {i}")
            for key, v in rec.items():
                spec = self._specs.get(key)
                if spec is None:
                    if key in self._ignored:
                        continue
                    raise DataError(self._unknown_message(key), line=f"record {i}", field=str(key))
                column = columns.get(key)
                if column is None:
                    column = columns[key] = [None] * n
                # Plain JSON values take a shortcut; record_value has the full rules (same results).
                kind, t = spec.kind, type(v)
                try:
                    if kind == "numeric":
                        x = float(v) if t is float or t is int else record_value(v, True)
                    else:
                        x = v if t is str else record_value(v, False, self._multi_hot.get(key))
                except ValueError as exc:
                    raise DataError(str(exc), line=f"record {i}", field=key) from None
                except OverflowError:  # an integer beyond any float
                    raise DataError(f"expected a finite number, got an integer of {len(str(v))} digits", line=f"record {i}", field=key) from None
                if type(x) is float:
                    if x != x:
                        x = None  # NaN is a missing value, as in a file
                    elif x in (math.inf, -math.inf):
                        raise DataError(f"expected a finite number, got {v!r}", line=f"record {i}", field=key)
                elif kind == "numeric" and x is not None:
                    text_numbers.add(key)  # a string, parsed below
                column[i] = x
        for name in text_numbers:  # numbers written as text: parsed and checked as in a file
            table = pa.table({name: pa.array([None if v is None else str(v) for v in columns[name]], pa.string())})
            x = to_float(Chunk(table=table, row0=0, reader=TableSource(table)), name)  # type: ignore[arg-type]
            columns[name] = [None if v != v else float(v) for v in x.tolist()]
        return CheckedRecords(rows=n, columns=columns)

    def table(self, parts: list[CheckedRecords]) -> pa.Table:
        """One table of the schema's fields from checked records (several requests at once).
        Numeric fields float64, the others text, absent fields null."""
        arrays = []
        for spec in self.schema.fields:
            values: list[object] = []
            for part in parts:
                values.extend(part.columns.get(spec.name) or [None] * part.rows)
            arrays.append(pa.array(values, pa.float64() if spec.kind == "numeric" else pa.string()))
        return pa.table(arrays, names=self.schema.names)

    def _unknown_message(self, key: object) -> str:
        names = self.schema.names
        close = difflib.get_close_matches(key, names, n=1) if isinstance(key, str) else []
        if close:
            return f"unknown field; did you mean {close[0]!r}?"
        shown = ", ".join(names[:12]) + (f", ... ({len(names)} fields)" if len(names) > 12 else "")
        return f"unknown field; the model's fields are {shown}"

    # ------------------------------------------------------------ description
    def describe(self) -> dict[str, Any]:
        """The fields a record may hold, their kinds and what each accepts, and an example."""
        fields = []
        for spec in self.schema.fields:
            entry: dict[str, Any] = {"name": spec.name, "kind": spec.kind, "accepts": _accepts(spec)}
            if spec.kind == "numeric":
                entry["mode"] = spec.mode
            if spec.kind == "multi_hot":
                entry["separator"] = spec.separator
            if spec.is_hashed:  # any value is accepted; values may share a row
                entry["hash_buckets"] = spec.hash_buckets
            fields.append(entry)
        return {"model": self.model_id, "label": self.schema.label, "fields": fields, "example": self.example_record()}

    def example_record(self) -> dict[str, Any]:
        """A record of typical values: each categorical's most frequent value, numbers inside
        the most common bin or at the training mean."""
        out: dict[str, Any] = {}
        for spec in self.schema.fields:
            st = self.pipeline.states[spec.name]
            vocab = [] if st.vocab is None else st.vocab.slice(0, 2).to_pylist()
            if spec.kind == "categorical":
                out[spec.name] = vocab[0] if vocab else "a"
            elif spec.kind == "multi_hot":
                out[spec.name] = vocab or ["a"]
            elif spec.is_scaled:
                m = st.mean if "standardize" in spec.transform else 0.0
                out[spec.name] = round(float(np.sign(m) * np.expm1(abs(m))) if "log1p" in spec.transform else m, 3)
            elif spec.binning == "quantile":
                out[spec.name] = round(st.edges[len(st.edges) // 2], 3) if st.edges else 0.0
            else:
                out[spec.name] = _log_bin_value(int(vocab[0])) if vocab else 0
        return out

    def warm_up(self) -> None:
        """Score the example record once: builds the lookup dicts and the engine's kernels, so
        the first real request does not pay for them."""
        self.predict([self.example_record()])


def _log_bin_value(key: int) -> int | float:
    """A number in log bin ``key`` (features._log_bin_keys): small keys are the value itself,
    larger ones sign * (100 + floor(log(|x|)^2))."""
    if abs(key) < 100:
        return key
    b = abs(key) - 100
    return int(np.sign(key)) * round(float(np.exp(np.sqrt(b + 0.5))), 1)


def _accepts(spec: FieldSpec) -> str:
    if spec.kind == "numeric":
        return "a number (or a string holding one); null or absent = missing"
    if spec.kind == "multi_hot":
        return f"a list of strings or numbers, or one string joined by {spec.separator!r}; null, [] or absent = missing"
    return "a string or number; null or absent = missing"


def json_type(value: object) -> str:
    """How a JSON reader would name a value's type: an object, a list, a string, ..."""
    names = {dict: "an object", list: "a list", str: "a string", bool: "a boolean", type(None): "null"}
    return names.get(type(value), "a number" if isinstance(value, (int, float)) else type(value).__name__)


# ---------------------------------------------------------------- files
def open_input(bundle: Bundle, path: str | Path, options: ReadOptions | None = None, need_label: bool = False) -> Reader:
    """A Reader for data to score with ``bundle``: same reading settings as training unless
    given; a headerless file may leave out the label column."""
    schema = bundle.config.schema
    reader = Reader(path, options or bundle.config.data, column_names=schema.columns, optional_label=schema.label)
    reader.check_columns(schema.names, what="the model's schema")
    if need_label and schema.label not in reader.columns:
        raise DataError(f"no label column {schema.label!r} to evaluate against; the file has {reader.columns}", path=str(path))
    return reader


def evaluate(model: Bundle | Predictor, path: str | Path, options: ReadOptions | None = None) -> dict[str, Any]:
    """{"auc", "logloss", "rows", "ctr", "mean_prediction", "ece"} of the model on a labelled file."""
    y, p, skipped = scores(model, path, options)
    result: dict[str, Any] = summary(y, p)
    if skipped:
        result["skipped_rows"] = skipped
    return result


def scores(
    model: Bundle | Predictor, path: str | Path, options: ReadOptions | None = None, calibrated: bool = True
) -> tuple[np.ndarray, np.ndarray, int]:
    """(labels (N,), probabilities (N,), rows skipped) of a labelled file, streamed by chunk.
    ``calibrated=False``: the model's own probabilities (see Predictor.predict_encoded)."""
    predictor = _predictor(model)
    reader = open_input(predictor.bundle, path, options, need_label=True)
    schema = predictor.schema
    labels, probs = [], []
    for chunk in reader.chunks([schema.label, *schema.names], schema.numeric_columns):
        enc = predictor.pipeline.encode(chunk)
        labels.append(enc.labels)
        probs.append(predictor.predict_encoded(enc, calibrated=calibrated))
    return np.concatenate(labels), np.concatenate(probs), reader.skipped


def calibrate(bundle: Bundle, path: str | Path, method: str = "platt", options: ReadOptions | None = None) -> dict[str, Any]:
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
    model: Bundle | Predictor,
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


def _predictor(model: Bundle | Predictor) -> Predictor:
    return model if isinstance(model, Predictor) else model.predictor()

