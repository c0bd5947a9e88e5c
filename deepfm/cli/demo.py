"""``deepfm demo``: generate Criteo-layout data with known truth, train, compare with the truth.

The generator's teacher knows each row's true click probability, so the best any model can
do on the test rows (the Bayes-optimal AUC and logloss) is printed beside what DeepFM got.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.csv as pacsv

from deepfm.config import RunConfig
from deepfm.data.schema import criteo_schema
from deepfm.data.synth import write_synth
from deepfm.training.job import train
from deepfm.util.metrics import auc, logloss

log = logging.getLogger(__name__)
SPLIT = (0.8, 0.1, 0.1)


def run_demo(rows: int, folder: Path, seed: int = 0, config: RunConfig | None = None) -> dict[str, Any]:
    """Generate ``rows`` rows into ``folder``, train on them, return the comparison."""
    t0 = time.perf_counter()
    folder.mkdir(parents=True, exist_ok=True)
    data = write_synth(rows, folder / "clicks.tsv", seed=seed)
    log.info("generated %d rows in %.1f s: %s", rows, time.perf_counter() - t0, data.path)
    # No cache: the demo data is thrown away with its folder, so an entry would be an orphan.
    bundle = train(config or RunConfig(schema=criteo_schema()), data.path, folder / "model", split=SPLIT, cache=False)
    m = bundle.metrics
    p_true = pacsv.read_csv(data.truth_path).column("p_true").to_numpy()
    # The test part is the last rows of the file (split by row order).
    test = slice(m["train_rows"] + m["valid_rows"], None)
    labels = _labels(data.path)[test]
    return {
        "rows": rows,
        "test_rows": int(labels.size),
        "test_auc": round(m["test_auc"], 4),
        "test_logloss": round(m["test_logloss"], 4),
        "bayes_optimal_test_auc": round(auc(labels, p_true[test]), 4),
        "bayes_optimal_test_logloss": round(logloss(labels, p_true[test]), 4),
        "epochs": m["epochs"],
        "train_samples_per_s": round(m["train_samples_per_s"]),
        "seconds": round(time.perf_counter() - t0, 1),
        "model": str(folder / "model"),
    }


def _labels(path: Path) -> np.ndarray:
    table = pacsv.read_csv(
        path,
        read_options=pacsv.ReadOptions(autogenerate_column_names=True),
        parse_options=pacsv.ParseOptions(delimiter="\t"),
        convert_options=pacsv.ConvertOptions(include_columns=["f0"]),
    )
    return table.column("f0").to_numpy()
