"""Data-parallel training (`deepfm train --nproc N`) against one process at the same global batch.

    python benchmarks/data_parallel.py --rows 200000 --nproc 2 --repeats 3

Criteo-layout rows from ``deepfm synth`` (made once in --workdir), ``--preset criteo``, the
default model (embedding 16, MLP 400-400-400), split 0.8/0.1/0.1, one epoch. One process
trains at ``--batch`` rows a step; N processes at ``--batch / N`` each, so both take the same
steps. Every process gets one thread (``--threads 1``), the encoded data is cached before the
first timed run, and the configurations alternate ``--repeats`` times so that other work on
the machine falls on both alike.

Writes ``benchmarks/results/data-parallel-<rows>-<date>.json`` and prints a table: training
rows/s, validation scoring rows/s and test AUC per configuration (medians), and N processes'
training speed as a ratio of one process's in the same run.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


def run_train(args: argparse.Namespace, data: Path, nproc: int, out: Path) -> dict[str, Any]:
    """One `deepfm train` run; its metrics.json plus the wall time of the whole command."""
    command = [
        sys.executable,
        "-m",
        "deepfm",
        "train",
        "--preset",
        "criteo",
        "--data",
        str(data),
        "--split",
        "0.8,0.1,0.1",
        "--epochs",
        "1",
        "--batch-size",
        str(args.batch // nproc),
        "--threads",
        "1",
        "--quiet",
        "--cache-dir",
        str(args.workdir / "cache"),
        "--out",
        str(out),
    ]
    if nproc > 1:
        command += ["--nproc", str(nproc)]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    t0 = time.perf_counter()
    subprocess.run(command, check=True, env=env, stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - t0
    metrics = json.loads((out / "metrics.json").read_text())
    return {
        "train_rows_per_s": metrics["train_samples_per_s"],
        "valid_rows_per_s": metrics["valid_predict_samples_per_s"],
        "test_auc": metrics["test_auc"],
        "train_seconds": metrics["train_seconds"],
        "wall_seconds": wall,
        "preprocess_cache": metrics["preprocess_cache"],
    }


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=200_000)
    ap.add_argument("--nproc", type=int, default=2)
    ap.add_argument("--batch", type=int, default=4096, help="global batch: one process's batch, N processes' together")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/deepfm-data-parallel"))
    ap.add_argument("--results", type=Path, default=ROOT / "benchmarks" / "results")
    args = ap.parse_args()
    if args.nproc < 2:
        ap.error(f"--nproc is the processes to compare with one: at least 2, got {args.nproc}")
    if args.batch % args.nproc:
        ap.error(f"--batch {args.batch} must split evenly over --nproc {args.nproc}")
    return args


def main() -> None:
    args = parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    data = args.workdir / f"clicks-{args.rows}.tsv"
    if not data.exists():
        subprocess.run(
            [sys.executable, "-m", "deepfm", "synth", "--rows", str(args.rows), "--out", str(data), "--quiet"],
            check=True,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )
    run_train(args, data, 1, args.workdir / "warmup")  # fills the cache: every timed run reads the same encoded files
    load_before = os.getloadavg()[0]
    runs: dict[int, list[dict[str, Any]]] = {1: [], args.nproc: []}
    for i in range(args.repeats):
        for nproc in runs:
            runs[nproc].append(run_train(args, data, nproc, args.workdir / f"run-{nproc}-{i}"))
    summary = {
        str(n): {
            key: statistics.median(r[key] for r in rs)
            for key in ("train_rows_per_s", "valid_rows_per_s", "test_auc", "wall_seconds")
        }
        for n, rs in runs.items()
    }
    one, many = summary["1"], summary[str(args.nproc)]
    result = {
        "benchmark": "data_parallel",
        "date": datetime.date.today().isoformat(),
        "rows": args.rows,
        "nproc": args.nproc,
        "global_batch": args.batch,
        "repeats": args.repeats,
        "cpu_count": os.cpu_count(),
        "load_average_before": load_before,
        "load_average_after": os.getloadavg()[0],
        "median": summary,
        "train_speed_ratio": many["train_rows_per_s"] / one["train_rows_per_s"],
        "valid_speed_ratio": many["valid_rows_per_s"] / one["valid_rows_per_s"],
        "test_auc_difference": many["test_auc"] - one["test_auc"],
        "runs": {str(n): rs for n, rs in runs.items()},
    }
    args.results.mkdir(parents=True, exist_ok=True)
    path = args.results / f"data-parallel-{args.rows}-{result['date']}.json"
    path.write_text(json.dumps(result, indent=1) + "\n")
    print_table(args, summary, result, path)


def print_table(args: argparse.Namespace, summary: dict, result: dict, path: Path) -> None:
    """The medians as a Markdown table, then the speed ratios and the machine's load."""
    print(
        "| processes | batch per process | train rows/s | valid scoring rows/s | test AUC | whole command |\n|---|---|---:|---:|---:|---:|"
    )
    for n, s in summary.items():
        print(
            f"| {n} | {args.batch // int(n)} | {s['train_rows_per_s']:,.0f} | {s['valid_rows_per_s']:,.0f} | {s['test_auc']:.4f} "
            f"| {s['wall_seconds']:.1f} s |"
        )
    print(
        f"{args.nproc} processes / 1: training x{result['train_speed_ratio']:.2f}, scoring x{result['valid_speed_ratio']:.2f}; "
        f"load average {result['load_average_before']:.2f} before, {result['load_average_after']:.2f} after; {path}"
    )


if __name__ == "__main__":
    main()
