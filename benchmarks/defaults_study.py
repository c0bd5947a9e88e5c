#!/usr/bin/env python3
"""The evidence for deepfm's "auto" defaults: each one forced to a fixed value, beside the defaults.

    .venv/bin/python benchmarks/defaults_study.py --datasets criteo-10k,frappe,synth-*-100k --threads 1
    .venv/bin/python benchmarks/defaults_study.py --summary benchmarks/results/defaults-study-DATE.jsonl

It trains `deepfm train` on the data sets of benchmarks/accuracy.py (same files, same splits,
same workdir layout) once per seed and per variant: "defaults", then one setting forced at a
time through a config that holds only `model:` or `train:` (the fields come from `--preset` as
in the accuracy benchmark). Every run appends one JSON line to the results file, with the
values the run resolved (metrics.json "resolved": batch size, init_std, batch_norm,
embedding_lr, rows per table row), so a stopped study keeps what it finished. `--summary`
prints the mean ± sd test AUC and logloss of every (data set, variant) as a Markdown table.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import sys
import tempfile
from collections import defaultdict
from pathlib import Path

import accuracy_data as data
import numpy as np
import yaml
from benchlib import BENCH, check_deepfm, epoch_curve, log, train_deepfm

# Each variant: the config sections it forces (and, under "flags", command-line flags for what
# a config without fields cannot say); everything else stays at the defaults.
VARIANTS: dict[str, dict] = {
    "defaults": {},
    "batch_norm on": {"model": {"batch_norm": True}},
    "batch_norm off": {"model": {"batch_norm": False}},
    "embedding_lr 1e-3": {"train": {"embedding_lr": 1e-3}},
    "embedding_lr 2e-3": {"train": {"embedding_lr": 2e-3}},
    "embedding_lr 3e-3": {"train": {"embedding_lr": 3e-3}},
    "lr 2e-3": {"train": {"lr": 2e-3}},
    "lr 5e-4": {"train": {"lr": 5e-4}},
    "init_std 0.01": {"model": {"init_std": 0.01}},
    "init_std 0.1": {"model": {"init_std": 0.1}},
    "init_std 0.003": {"model": {"init_std": 0.003}},
    "init_std 0.001": {"model": {"init_std": 0.001}},
    "init_std 0.0001": {"model": {"init_std": 0.0001}},
    "no calibration": {"train": {"calibrate": False}},
    "patience 3": {"train": {"patience": 3}},
    "no lr decay": {"train": {"lr_decay": 1.0}},
    "lr_decay 0.3": {"train": {"lr_decay": 0.3}},
    # measured before lr_decay 0.03 and fresh tables were the defaults: pinned to what they ran
    "lr_decay 0.03": {"train": {"lr_decay": 0.03, "reset_embeddings": False}},
    "lr_decay 0.01": {"train": {"lr_decay": 0.01, "reset_embeddings": False}},
    "reset_embeddings on": {"train": {"reset_embeddings": True, "lr_decay": 0.1}},
    "reset_embeddings on lr_decay 0.03": {"train": {"reset_embeddings": True, "lr_decay": 0.03}},
    "lr_decay 0.1": {"train": {"lr_decay": 0.1}},
    "reset_embeddings off": {"train": {"reset_embeddings": False}},
    # what batch_norm and init_std "auto" resolve to on sparse data (embedding_lr "auto" is 3e-3
    # at batches of 4096 either way)
    "sparse settings": {"model": {"batch_norm": False, "init_std": 0.003}},
    "sparse settings at batch 1024": {
        "model": {"batch_norm": False, "init_std": 0.003},
        "train": {"embedding_lr": 2e-3},
    },
    "dropout 0": {"model": {"dropout": 0.0}},
    # the peers' MLP in the accuracy benchmark (FuxiCTR's zoo defaults): no dropout, no batch norm
    "dropout 0 batch_norm off": {"model": {"dropout": 0.0, "batch_norm": False}},
    "batch_size 256": {"train": {"batch_size": 256}},
    "batch_size 512": {"train": {"batch_size": 512}},
    "batch_size 1024": {"train": {"batch_size": 1024}},
    "batch_size 2048": {"train": {"batch_size": 2048}},
    "batch_size 8192": {"train": {"batch_size": 8192}},
    "embedding_dim 10": {"model": {"embedding_dim": 10}},
    "embedding_dim 32": {"model": {"embedding_dim": 32}},
    "dropout 0.1": {"model": {"dropout": 0.1}},
    "dropout 0.4": {"model": {"dropout": 0.4}},
    "min_count 2": {"flags": ["--min-count", "2"]},  # the default before min_count "auto"
    "min_count 5": {"flags": ["--min-count", "5"]},
    "min_count 10": {"flags": ["--min-count", "10"]},
    "min_count 20": {"flags": ["--min-count", "20"]},
}
RECORDED = (
    "test_auc",
    "test_logloss",
    "valid_auc",
    "valid_logloss",
    "epochs",
    "best_epoch",
    "batch_size",
    "train_rows",
    "train_samples_per_s",
    "resolved",
)


def main() -> int:
    args = parse_args()
    if args.summary:
        print(summary_table([json.loads(line) for line in args.summary.read_text().splitlines() if line.strip()]))
        return 0
    datasets = data.select(args.datasets)
    data.check_shared(datasets)
    check_deepfm()
    if args.threads:
        os.environ["OMP_NUM_THREADS"] = os.environ["MKL_NUM_THREADS"] = str(args.threads)
    results = args.results or BENCH / "results" / f"defaults-study-{dt.date.today().isoformat()}.jsonl"
    for ds in datasets:
        log(f"=== {ds.name}")
        prepared = data.prepare(ds, args.workdir, None, quick=False)
        for seed in args.seeds:
            for variant in args.variants:
                row = run_variant(ds, prepared, variant, seed, args)
                with results.open("a") as f:
                    f.write(json.dumps(row) + "\n")
    log(f"results appended to {results}")
    return 0


def run_variant(ds: data.DataSet, prepared: data.Prepared, variant: str, seed: int, args: argparse.Namespace) -> dict:
    """One `deepfm train` with the data set's flags and ``variant``'s config; its metrics."""
    scratch = args.workdir / "study" / ds.name / f"{variant.replace(' ', '_')}-{seed}"
    sections = {k: v for k, v in VARIANTS[variant].items() if k != "flags"}
    flags = list(prepared.deepfm_args) + VARIANTS[variant].get("flags", [])
    if sections:
        config = args.workdir / "study" / ds.name / f"{variant.replace(' ', '_')}.yaml"
        config.parent.mkdir(parents=True, exist_ok=True)
        config.write_text(yaml.safe_dump(sections))
        flags += ["--config", str(config)]
    log(f"{ds.name} seed {seed}: {variant} ...")
    status, seconds, _, stderr, model = train_deepfm(flags, seed, scratch, args.workdir / "deepfm-cache", args.timeout)
    row = {"dataset": ds.name, "variant": variant, "seed": seed, "ok": status == 0, "process_seconds": seconds}
    if status != 0:
        log(f"  failed ({status}): {stderr[-500:]}")
        return row
    m = json.loads((model / "metrics.json").read_text())
    row |= {k: m[k] for k in RECORDED if k in m} | {"curve": epoch_curve(m)}
    log(f"  test AUC {row['test_auc']:.4f}, logloss {row['test_logloss']:.4f}, {row['epochs']} epochs")
    shutil.rmtree(model, ignore_errors=True)
    return row


def study_order(dataset: str, variant: str) -> tuple[str, bool, str]:
    """Where a (data set, variant) goes in the study's tables: by data set, the defaults first."""
    return dataset, variant != "defaults", variant


def summary_table(rows: list[dict]) -> str:
    """Markdown: one line per (data set, variant), mean ± sd over seeds, and the difference of
    the mean test AUC from the defaults' on the same data set at the same batch size: a
    variant run while the defaults resolved another batch (before the batch-size rule changed)
    is set against the ``batch_size N`` row of its own batch."""
    groups: dict[tuple[str, str], list[dict]] = defaultdict(list)
    for r in rows:
        if r.get("ok"):
            groups[(r["dataset"], r["variant"])].append(r)
    lines = [
        "| data set | rows per table row | variant | batch | seeds | test AUC | vs defaults | test logloss | epochs |",
        "|---|---:|---|---:|---:|---:|---:|---:|---:|",
    ]
    for (name, variant), runs in sorted(groups.items(), key=lambda kv: study_order(*kv[0])):
        auc = np.array([r["test_auc"] for r in runs])
        ll = np.array([r["test_logloss"] for r in runs])
        batch = runs[0].get("batch_size")
        base = _baseline(groups, name, variant, batch)
        delta = f"{auc.mean() - np.mean([r['test_auc'] for r in base]):+.4f}" if base else ""
        density = runs[0].get("resolved", {}).get("rows_per_table_row")
        lines.append(
            f"| {name} | {'' if density is None else f'{density:.0f}'} | {variant} | {batch or ''} | {len(runs)} | "
            f"{_mean_sd(auc)} | {delta} | {_mean_sd(ll)} | "
            f"{np.mean([r['epochs'] for r in runs]):.1f} |"
        )
    return "\n".join(lines)


def curve_table(rows: list[dict]) -> str:
    """Markdown: each run with a recorded curve, its valid AUC epoch by epoch; "[lr x]" marks
    the first epoch run at a new dense learning rate (after a fall back to the best weights),
    "*" an epoch that started from a fresh embedding table (train.reset_embeddings)."""
    lines = [
        "| data set | variant | seed | valid AUC by epoch | best epoch | test AUC |",
        "|---|---|---:|---|---:|---:|",
    ]
    for r in sorted(rows, key=lambda r: (*study_order(r["dataset"], r["variant"]), r["seed"])):
        if not r.get("ok") or not r.get("curve"):
            continue
        cells, lr = [], r["curve"][0].get("lr")
        for point in r["curve"]:
            new_lr = point.get("lr")
            mark = f"[lr {new_lr:.0e}] " if new_lr is not None and new_lr != lr else ""
            valid = point.get("valid_auc")  # none where the run had no validation part
            fresh = "*" if point.get("fresh_table") else ""
            cells.append(mark + ("-" if valid is None else f"{valid:.4f}") + fresh)
            lr = new_lr if new_lr is not None else lr
        lines.append(
            f"| {r['dataset']} | {r['variant']} | {r['seed']} | {', '.join(cells)} | {r.get('best_epoch', '')} | "
            f"{r['test_auc']:.4f} |"
        )
    return "\n".join(lines) if len(lines) > 2 else ""


def _baseline(groups: dict[tuple[str, str], list[dict]], name: str, variant: str, batch: int | None) -> list[dict]:
    """The runs a variant is compared with: the defaults' (those of its own time where its runs
    name a ``baseline``), or where they ran at another batch size than the variant, the
    ``batch_size <batch>`` runs; none for a baseline itself."""
    if variant == "defaults":
        return []
    defaults = groups.get((name, groups[(name, variant)][0].get("baseline", "defaults")), [])
    if variant.startswith("batch_size ") or not defaults or defaults[0].get("batch_size") == batch:
        return defaults
    return groups.get((name, f"batch_size {batch}"), [])


def _mean_sd(values: np.ndarray) -> str:
    """ "mean ± sample sd"; one run has no spread to show."""
    return f"{values.mean():.4f} ± {values.std(ddof=1):.4f}" if len(values) > 1 else f"{values.mean():.4f}"


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--datasets", default="criteo-10k,frappe,synth-*-100k", help="names or patterns, as accuracy.py takes"
    )
    p.add_argument("--seeds", default="1,2,3", help="comma-separated seeds (default 1,2,3)")
    p.add_argument("--variants", default=",".join(VARIANTS), help=f"comma-separated subset of: {', '.join(VARIANTS)}")
    p.add_argument(
        "--workdir",
        type=Path,
        default=Path(tempfile.gettempdir()) / "deepfm-accuracy",
        help="data, caches and scratch (shared with accuracy.py)",
    )
    p.add_argument(
        "--results", type=Path, help="JSON lines to append to (default benchmarks/results/defaults-study-DATE.jsonl)"
    )
    p.add_argument("--threads", type=int, help="torch threads of every run")
    p.add_argument("--timeout", type=float, default=4 * 3600, help="seconds before one run is killed")
    p.add_argument("--summary", type=Path, metavar="RESULTS.jsonl", help="print the table of a results file and stop")
    args = p.parse_args()
    args.seeds = [int(s) for s in args.seeds.split(",")]
    args.variants = [v.strip() for v in args.variants.split(",")]
    unknown = [v for v in args.variants if v not in VARIANTS]
    if unknown:
        p.error(f"unknown variants {unknown}; choose from {list(VARIANTS)}")
    return args


if __name__ == "__main__":
    sys.exit(main())
