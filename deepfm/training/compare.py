"""``deepfm compare``: the paper's comparison on your data.

Trains each model kind (lr, fm, dnn, wide_deep, dcn, deepfm) with several seeds on the same
split and the same training budget, and reports test AUC and logloss as mean ± std over the
seeds, with training time. The data is encoded once (the encoded-data cache) and shared.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from deepfm.config import MODEL_KINDS, RunConfig
from deepfm.errors import ConfigError
from deepfm.training.inputs import RunInputs
from deepfm.training.job import run_training

log = logging.getLogger(__name__)


def compare(
    config: RunConfig, inputs: RunInputs, out: str | Path, models: list[str], seeds: int = 3, tracker: Any = None
) -> dict[str, Any]:
    """Train every model kind with ``seeds`` seeds on ``inputs``; write ``compare.json`` and
    ``compare.md`` to ``out`` and return the summary. Runs are kept in ``out/runs/<model>-seed<k>``.
    ``tracker``: a started run whose children the runs are (default: one from config.track)."""
    if config.track and tracker is None:  # one parent run, each model and seed a child run
        from deepfm.training.tracking import group

        files = lambda: [Path(out) / "compare.md", Path(out) / "compare.json"]  # noqa: E731
        with group(config.track, f"compare {Path(out).name}", config, files) as parent:
            return compare(replace(config, track=()), inputs, out, models, seeds, parent)
    unknown = [m for m in models if m not in MODEL_KINDS]
    if unknown or not models:
        raise ConfigError(f"--models must name some of {list(MODEL_KINDS)}, got {models}")
    if seeds < 1:
        raise ConfigError(f"--seeds must be >= 1, got {seeds}")
    out = Path(out)
    runs: list[dict[str, Any]] = []
    for kind in models:
        for k in range(seeds):
            seed = config.train.seed + k
            run_config = replace(config, model=replace(config.model, kind=kind), train=replace(config.train, seed=seed))
            t0 = time.perf_counter()
            track = tracker.child() if tracker is not None else None
            bundle = run_training(run_config, inputs, out / "runs" / f"{kind}-seed{seed}", track=track)
            m = bundle.metrics
            part = "test" if "test_auc" in m else "valid"
            runs.append(
                {
                    "model": kind,
                    "seed": seed,
                    "part": part,
                    "auc": m[f"{part}_auc"],
                    "logloss": m[f"{part}_logloss"],
                    "epochs": m["epochs"],
                    "train_seconds": m["train_seconds"],
                    "seconds": time.perf_counter() - t0,
                }
            )
            log.info("%s seed %d: %s AUC %.4f logloss %.4f", kind, seed, part, runs[-1]["auc"], runs[-1]["logloss"])
    summary: dict[str, Any] = {"data": inputs.data, "seeds": seeds, "models": _summarize(runs, models), "runs": runs}
    out.mkdir(parents=True, exist_ok=True)
    (out / "compare.json").write_text(json.dumps(summary, indent=1))
    (out / "compare.md").write_text(to_markdown(summary))
    for i, row in enumerate(summary["models"] if tracker is not None else []):  # step: the model's place in --models
        tracker.log_metrics({f"{row['model']}_{k}": v for k, v in row.items()}, step=i)
    return summary


def _summarize(runs: list[dict[str, Any]], models: list[str]) -> list[dict[str, Any]]:
    rows = []
    for kind in models:
        mine = [r for r in runs if r["model"] == kind]
        aucs, losses = np.array([r["auc"] for r in mine]), np.array([r["logloss"] for r in mine])
        rows.append(
            {
                "model": kind,
                "part": mine[0]["part"],
                "auc_mean": float(aucs.mean()),
                "auc_std": float(aucs.std()),
                "logloss_mean": float(losses.mean()),
                "logloss_std": float(losses.std()),
                "train_seconds_mean": float(np.mean([r["train_seconds"] for r in mine])),
                "epochs_mean": float(np.mean([r["epochs"] for r in mine])),
            }
        )
    return rows


def to_markdown(summary: dict[str, Any]) -> str:
    """One table: model, AUC and logloss (mean ± std over seeds), training time."""
    part = summary["models"][0]["part"]
    lines = [
        f"Data: `{summary['data']}`; {part} part; mean ± std over {summary['seeds']} seed(s).",
        "",
        f"| model | {part} AUC | {part} logloss | epochs | train s |",
        "|---|---:|---:|---:|---:|",
    ]
    for r in summary["models"]:
        lines.append(
            f"| {r['model']} | {r['auc_mean']:.4f} ± {r['auc_std']:.4f} | {r['logloss_mean']:.4f} ± {r['logloss_std']:.4f} "
            f"| {r['epochs_mean']:.1f} | {r['train_seconds_mean']:.1f} |"
        )
    return "\n".join(lines) + "\n"
