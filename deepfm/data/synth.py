"""Synthetic click logs in Criteo's raw layout, with a known true click probability.

The generator writes what Criteo's DAC ``train.txt`` looks like -- ``label \\t I1..I13 \\t
C1..C26``, no header, empty fields for missing values -- so the rest of the package can be
exercised end to end without the real 45M-row file, and, unlike the real file, every row comes
with the probability that produced its label. That makes model quality measurable against a
ceiling: the Bayes-optimal AUC (AUC of the labels against ``p_true``) and log loss.

How rows are made
-----------------
* Numeric fields I1..I13 are count-like integers drawn from per-field log-normal shapes
  (some zero-inflated; I2 is sometimes -1..-3 as in the real data), each with its own missing
  rate. Some fields share one missing draw, because in the real logs they go missing together.
* Categorical fields C1..C26 draw a frequency rank from a Zipf law (exponent 1.05-1.2) over a
  per-field vocabulary of 3 to 1,000,000 values (about 3M values in all). Each rank maps to
  a distinct 8-character lowercase hex string through a keyed 32-bit bijection, so strings
  depend only on (seed, field, rank).
* A hidden teacher gives the true logit: bias + first-order weights + a factorization-machine
  pairwise term over per-value vectors (k = 6) + a small tanh MLP (24 units) over the
  concatenated vectors. Each value's parameters are scaled by ``(1 + rank / 25) ** -0.9``, so
  the signal lives in frequent values and rare ones carry almost nothing, as in real logs.
  Missing values have their own (full-scale) parameters. The three parts are normalised on a
  fixed calibration sample, then a global scale and the bias are solved for so the expected
  click rate is 0.23 and the expected Bayes AUC is 0.80. Labels are Bernoulli(p_true).

Settings (``setting=``, ``deepfm synth --setting NAME``)
------------------------------------------------------
The knobs above -- the FM and MLP parts' weights, the vocabulary sizes, the Zipf exponents,
the numeric fields' share of the signal and the target Bayes AUC -- come from a
``SynthSetting`` (``deepfm/data/synth_settings.py``), so that no default gets fitted to one
generator. ``criteo`` (the default) is the generator described above, byte for byte.
Measured on 1,000,000 rows of seed 0:

==============  =====  =====  ==========  ====  ==============  =========  =====  ==========
setting         FM     MLP    card scale  Zipf  numeric share   Bayes AUC  CTR    Bayes LL
==============  =====  =====  ==========  ====  ==============  =========  =====  ==========
criteo          0.7    0.5    1 (3.0M)    +0    drawn (0.23)    0.8002     0.230  0.4283
interactions    1.4    1.0    0.3 (0.9M)  +0    0.5             0.8200     0.231  0.4088
tail            0.7    0.6    3 (9.1M)    -0.1  0.15            0.7799     0.230  0.4449
noisy           1.0    0.7    0.6 (1.8M)  +0    0.4             0.7012     0.230  0.4922
==============  =====  =====  ==========  ====  ==============  =========  =====  ==========

(card scale: in brackets the values of all 26 fields together.) ``header=True``
(``--header``) starts the file with the line ``label I1 .. C26``.

Days (``day=K``, ``deepfm synth --day K``)
------------------------------------------
Day 1 is the data above, byte for byte. Each later day simulates a day of a live system:

* New ids appear and old ones fade: on each day d = 2..K, a seeded ``DAY_CHURN`` share (10%)
  of the frequency-rank slots of every categorical field with at least ``CHURN_MIN_CARD`` (100)
  values gets a new value -- a string never seen before -- with freshly drawn hidden
  parameters of the slot's scale; the value it replaces is never drawn again. By day 5 about
  34% of slots hold a value that day 1 did not have, head slots included.
* The base CTR moves: the true logit's bias shifts by ``DAY_BIAS_SHIFT`` (-0.08) per day; with
  the new values' own effects the click rate falls from 0.231 on day 1 to 0.210, 0.181 and
  0.156 on days 2, 3 and 5 (65,536 rows of seed 0). The Bayes AUC stays at 0.80-0.805.
* Rows of day K are drawn from their own seeded stream, so the days are disjoint samples.

Determinism
-----------
Rows are produced in fixed internal blocks of ``BLOCK_ROWS`` rows; block ``b`` draws all its
randomness from ``default_rng([seed, _BLOCK_TAG, b])`` and is always generated whole, then
sliced. The teacher, vocabularies and calibration use their own seeded streams and never see
``rows`` or ``chunk_rows``. Hence the first n rows of any larger run equal a run of n rows,
and output is byte-identical for the same (rows, seed) on a given platform and NumPy/BLAS
build (the MLP goes through BLAS, whose rounding may differ between machines; 1 and 2
OpenBLAS threads were checked to give identical bytes).

Measured (seed 0, 1,000,000 rows, this 2-core machine)
------------------------------------------------------
* Bayes-optimal AUC (labels vs p_true): 0.8002
* positive rate: 0.2297
* ``write_synth`` time: about 7.2 s per 1M rows (3M rows in 22 s), plus ~2.3 s one-off setup
  per seed for vocabularies, teacher and calibration. Peak RSS with ``chunk_rows=1_000_000``
  is about 1.25 GB and does not grow with ``rows``.
* For scale: a one-hot logistic regression (values seen >= 10 times) trained on 500k rows
  reaches test AUC 0.744 against the 0.80 ceiling, so the data are learnable but leave room
  for models that capture interactions.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from deepfm.data.synth_settings import SETTINGS, SynthSetting, get_setting
from deepfm.data.synth_world import (
    BLOCK_ROWS,
    CATEGORICAL_SPECS,
    CRITEO_COLUMNS,
    NUMERIC_SPECS,
    SCHEMA,
    TARGET_CTR,
    World,
    world_for,
)

logger = logging.getLogger(__name__)

__all__ = [
    "CRITEO_COLUMNS",
    "SETTINGS",
    "SynthResult",
    "SynthSetting",
    "generate_table",
    "truth_path_for",
    "write_synth",
]
# Also here for the tests and benchmarks that read the generator's shape.
_ = (BLOCK_ROWS, CATEGORICAL_SPECS, NUMERIC_SPECS, TARGET_CTR, World)


@dataclass(frozen=True)
class SynthResult:
    """What ``write_synth`` produced."""

    path: Path  # the TSV written
    truth_path: Path  # the true click probabilities
    rows: int
    positive_rate: float  # observed mean label
    setting: SynthSetting = SETTINGS["criteo"]


def _resolve(setting: SynthSetting | str) -> SynthSetting:
    return get_setting(setting) if isinstance(setting, str) else setting


def _check_args(rows: int, seed: int, day: int = 1) -> None:
    if rows < 0:
        raise ValueError(f"rows must be >= 0, got {rows}")
    if seed < 0:
        raise ValueError(f"seed must be >= 0, got {seed}")
    if not isinstance(day, int) or day < 1:
        raise ValueError(f"day must be an integer >= 1, got {day!r}")


def _iter_chunks(
    rows: int, seed: int, chunk_rows: int, day: int = 1, setting: SynthSetting = SETTINGS["criteo"]
) -> Iterator[tuple[pa.Table, np.ndarray]]:
    """Yield (table, p_true) for consecutive row ranges of at most chunk_rows rows."""
    world = world_for(seed, day, setting)
    cached_b, cached = -1, (pa.table({}), np.empty(0))
    for start in range(0, rows, chunk_rows):
        stop = min(rows, start + chunk_rows)
        tables, probs = [], []
        for b in range(start // BLOCK_ROWS, (stop - 1) // BLOCK_ROWS + 1):
            if b != cached_b:  # keep one block so small chunks don't regenerate it
                cached_b, cached = b, world.block(b)
            lo = max(start, b * BLOCK_ROWS) - b * BLOCK_ROWS
            hi = min(stop, (b + 1) * BLOCK_ROWS) - b * BLOCK_ROWS
            tables.append(cached[0].slice(lo, hi - lo))
            probs.append(cached[1][lo:hi])
        chunk: tuple[pa.Table, np.ndarray] | None = (pa.concat_tables(tables), np.concatenate(probs))
        del tables, probs
        assert chunk is not None
        yield chunk
        # Release our reference before building the next chunk, so at most one is alive.
        chunk = None


def generate_table(
    rows: int, seed: int = 0, day: int = 1, setting: SynthSetting | str = "criteo"
) -> tuple[pa.Table, np.ndarray]:
    """Return (table with the 40 Criteo columns, p_true float64 array of shape (rows,)) of
    simulated day ``day`` under a generator setting (see the module docstring)."""
    _check_args(rows, seed, day)
    setting = _resolve(setting)
    if rows == 0:
        return SCHEMA.empty_table(), np.empty(0, dtype=np.float64)
    parts = list(_iter_chunks(rows, seed, BLOCK_ROWS, day, setting))
    table = pa.concat_tables([t for t, _ in parts]).combine_chunks()
    return table, np.concatenate([p for _, p in parts])


def truth_path_for(out: str | Path) -> Path:
    """``data/train.txt`` -> ``data/train.truth.csv``."""
    return Path(out).with_suffix(".truth.csv")


def write_synth(
    rows: int,
    out: str | Path,
    seed: int = 0,
    chunk_rows: int = 1_000_000,
    day: int = 1,
    setting: SynthSetting | str = "criteo",
    header: bool = False,
) -> SynthResult:
    """Write a tab-separated file in Criteo's raw layout plus `<out minus suffix>.truth.csv`
    (one column with header `p_true`, one line per row, same order). Generates in chunks of
    chunk_rows so 45M rows fit in bounded memory; the result must not depend on chunk_rows.
    ``day``: the simulated day (1 = no drift; see the module docstring). ``setting``: the
    generator's knobs (a name from SETTINGS or a SynthSetting). ``header``: start with the
    line ``label I1 .. C26`` (tab-separated), so the file can be read without a schema;
    without it the file is headerless, like Criteo's train.txt."""
    _check_args(rows, seed, day)
    setting = _resolve(setting)
    if chunk_rows < 1:
        raise ValueError(f"chunk_rows must be >= 1, got {chunk_rows}")
    path = Path(out)
    truth = truth_path_for(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # Write to temporaries and rename at the end so a crash never leaves a plausible-looking
    # truncated data set behind.
    tmp_path = path.with_name(path.name + ".partial")
    tmp_truth = truth.with_name(truth.name + ".partial")
    data_opts = pacsv.WriteOptions(
        include_header=header, delimiter="\t", quoting_style="none", quoting_header="none", batch_size=BLOCK_ROWS
    )
    truth_opts = pacsv.WriteOptions(
        include_header=True, quoting_style="none", quoting_header="none", batch_size=BLOCK_ROWS
    )
    truth_schema = pa.schema([pa.field("p_true", pa.float64())])
    t0 = time.perf_counter()
    positives = 0
    written = 0
    try:
        with (
            pacsv.CSVWriter(str(tmp_path), SCHEMA, write_options=data_opts) as data_w,
            pacsv.CSVWriter(str(tmp_truth), truth_schema, write_options=truth_opts) as truth_w,
        ):
            for table, p in _iter_chunks(rows, seed, chunk_rows, day, setting):
                data_w.write_table(table)
                truth_w.write_table(pa.table({"p_true": p}, schema=truth_schema))
                positives += int(pc.sum(table.column("label")).as_py() or 0)
                written += table.num_rows
                del table, p  # free this chunk before the next one is generated
                logger.info("synth: %d/%d rows written (%.1fs)", written, rows, time.perf_counter() - t0)
        os.replace(tmp_path, path)
        os.replace(tmp_truth, truth)
    finally:
        for leftover in (tmp_path, tmp_truth):
            if leftover.exists():
                leftover.unlink()
    rate = positives / rows if rows else 0.0
    logger.info("synth: wrote %d rows to %s (positive rate %.4f) in %.1fs", rows, path, rate, time.perf_counter() - t0)
    return SynthResult(path=path, truth_path=truth, rows=rows, positive_rate=rate, setting=setting)


def _teacher_value_norms(field: str, seed: int = 0, setting: SynthSetting | str = "criteo") -> np.ndarray:
    """Norm of each value's hidden parameters (weight and vector) of categorical ``field``,
    indexed by frequency rank. Internal: lets tests check the signal sits in frequent values."""
    f = [s.name for s in CATEGORICAL_SPECS].index(field)
    world = world_for(seed, 1, _resolve(setting))
    o, c = int(world.offsets[f]), int(world.cards[f])
    w = world.cat_w[o : o + c].astype(np.float64)
    v = world.cat_v[o : o + c].astype(np.float64)
    return np.sqrt(w * w + (v * v).sum(axis=1))
