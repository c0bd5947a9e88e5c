"""Synthetic click logs as a day-partitioned dataset: ``day=YYYY-MM-DD/part-0.parquet``.

``deepfm synth --days D --out FOLDER`` cuts the rows of :func:`deepfm.data.synth.
generate_table` (the same rows, in the same order, as one file of ``--rows N``) into D
consecutive days of about N/D rows each, one hive partition folder per day: Parquet, or
gzip-compressed TSV with a header (``--format tsv.gz``). The days share day 1's world (no
drift between them: ``--day K`` simulates drift in a single file), so a model trained on the
dataset and one trained on the rows concatenated into one file see the same rows. Each day's
true probabilities go to ``_truth.csv`` beside its data; names starting with ``_`` are not
data files to the readers.
"""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from deepfm.data.synth import generate_table
from deepfm.data.synth_settings import SynthSetting

DAY_FORMATS = ("parquet", "tsv.gz")
FIRST_DAY = dt.date(2026, 1, 1)


def write_synth_days(
    rows: int,
    days: int,
    out: str | Path,
    fmt: str = "parquet",
    seed: int = 0,
    setting: SynthSetting | str = "criteo",
) -> list[Path]:
    """Write ``rows`` rows as ``days`` day partitions under ``out`` (see the module
    docstring). Returns the data files in reading order. Holds the rows in memory."""
    if fmt not in DAY_FORMATS:
        raise ValueError(f"format must be one of {list(DAY_FORMATS)}, got {fmt!r}")
    if not 1 <= days <= rows:
        raise ValueError(f"days must be between 1 and the number of rows ({rows}), got {days}")
    table, p_true = generate_table(rows, seed, setting=setting)
    written = []
    for i in range(days):
        lo, hi = rows * i // days, rows * (i + 1) // days
        folder = Path(out) / f"day={FIRST_DAY + dt.timedelta(days=i)}"
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"part-0.{fmt}"
        _write_atomic(table.slice(lo, hi - lo), path, fmt)
        _write_atomic(pa.table({"p_true": p_true[lo:hi]}), folder / "_truth.csv", "csv")
        written.append(path)
    return written


def _write_atomic(table: pa.Table, path: Path, fmt: str) -> None:
    """Write to a hidden temporary and rename, so a crash leaves no plausible half file."""
    tmp = path.with_name(f".{path.name}.partial")
    if fmt == "parquet":
        pq.write_table(table, tmp)
    else:
        options = pacsv.WriteOptions(
            delimiter="\t" if fmt == "tsv.gz" else ",", quoting_style="none", quoting_header="none"
        )
        with pa.output_stream(tmp, compression="gzip" if fmt == "tsv.gz" else None) as f:
            pacsv.write_csv(table, f, write_options=options)
    os.replace(tmp, path)
