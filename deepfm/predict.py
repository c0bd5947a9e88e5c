"""Scoring files with a saved model: streamed, so a file larger than memory is fine.

The same Bundle code path (fitted pipeline -> model -> sigmoid) serves the CLI, Python and,
later, the HTTP service.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv

from deepfm.bundle import Bundle
from deepfm.errors import DataError
from deepfm.io import ReadOptions, Reader
from deepfm.metrics import summary


def open_input(bundle: Bundle, path: str | Path, options: ReadOptions | None = None, need_label: bool = False) -> Reader:
    """A Reader for data to score with ``bundle``: same reading settings as training unless
    given; a headerless file may leave out the label column."""
    schema = bundle.config.schema
    reader = Reader(path, options or bundle.config.data, column_names=schema.columns, optional_label=schema.label)
    reader.check_columns(schema.names, what="the model's schema")
    if need_label and schema.label not in reader.columns:
        raise DataError(f"no label column {schema.label!r} to evaluate against; the file has {reader.columns}", path=str(path))
    return reader


def evaluate(bundle: Bundle, path: str | Path, options: ReadOptions | None = None) -> dict[str, Any]:
    """{"auc", "logloss", "rows", "ctr", "mean_prediction"} of the model on a labelled file."""
    reader = open_input(bundle, path, options, need_label=True)
    schema = bundle.config.schema
    labels, probs = [], []
    for chunk in reader.chunks([schema.label, *schema.names], schema.numeric_columns):
        enc = bundle.pipeline.encode(chunk)
        labels.append(enc.labels)
        probs.append(bundle.predict_encoded(enc))
    y, p = np.concatenate(labels), np.concatenate(probs)
    result: dict[str, Any] = summary(y, p)
    if reader.skipped:
        result["skipped_rows"] = reader.skipped
    return result


def predict_file(
    bundle: Bundle,
    path: str | Path,
    out: str | Path,
    keep: list[str] | None = None,
    options: ReadOptions | None = None,
) -> int:
    """Write one probability per input row (in order) to a CSV, with ``keep`` columns copied
    through (an id, say). Streams chunk by chunk. Returns the number of rows written."""
    reader = open_input(bundle, path, options)
    schema = bundle.config.schema
    keep = keep or []
    reader.check_columns(keep, what="--keep")
    columns = list(dict.fromkeys([*schema.names, *keep]))
    out_schema = pa.schema([*(pa.field(k, pa.string()) for k in keep), pa.field("probability", pa.float64())])
    rows = 0
    with pacsv.CSVWriter(str(out), out_schema, write_options=pacsv.WriteOptions(quoting_style="needed")) as writer:
        for chunk in reader.chunks(columns, schema.numeric_columns):
            enc = bundle.pipeline.encode(chunk, with_labels=False)
            p = bundle.predict_encoded(enc)
            cols = [chunk.table.column(k).cast(pa.string()) for k in keep]
            writer.write_table(pa.table([*cols, pa.array(p)], schema=out_schema))
            rows += len(p)
    return rows
