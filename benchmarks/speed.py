#!/usr/bin/env python3
"""Speed benchmark: deepfm side by side with DeepCTR-Torch, FuxiCTR and pytorch-fm.

    .venv/bin/python benchmarks/speed.py                      # 1,000,000 rows, 3 repeats, all four
    .venv/bin/python benchmarks/speed.py --rows 50000 --repeats 1 --libs deepfm,torchfm   # smoke run

Run it with the interpreter that has deepfm installed (the project's .venv). It

1. writes Criteo-layout data once with `deepfm synth` (reused on later runs);
2. installs the peers into their own virtual environment, benchmarks/.venv-peers (never a
   dependency of deepfm), with torch held at the project's CPU pin;
3. trains the same DeepFM with every library: same split, fields, vocabulary rules and
   hyperparameters (HYPERPARAMETERS below), each run in its own process, the libraries
   alternated and their order rotated every repeat so that machine noise hits all sides;
4. prints one Markdown table of medians, writes benchmarks/results/speed-<date>.json and
   rewrites docs/benchmarks.md.

deepfm runs through its CLI and reports from metrics.json; each peer runs
benchmarks/peers/<name>_run.py inside the peers' environment, which prints one JSON line.
"""

from __future__ import annotations

import argparse
import datetime as dt
import functools
import json
import shutil
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

from benchlib import (
    BENCH,
    DISPLAY,
    DISTRIBUTION,
    ROOT,
    check_deepfm,
    command_line,
    describe_environment,
    ensure_peer_env,
    fail,
    log,
    read_json_line,
    run_measured,
)
from speed_report import render_docs

# One set of hyperparameters for every library (the "same model").
HYPERPARAMETERS: dict[str, Any] = {
    "split": "0.8,0.1,0.1",  # by row order: train, validation, test
    "embedding_dim": 10,
    "hidden": "400,400,400",  # ReLU, dropout 0, no batch norm
    "batch_size": 4096,
    "lr": 1e-3,  # Adam
    "l2": 0.0,
    "min_count": 2,  # rarer training values share the field's OOV index
    "seed": 2024,
}
# deepfm scores in batches of 16384 (TrainConfig.eval_batch_size); the peers get the same.
PREDICT_BATCH = 16384

# deepfm-defaults: `deepfm train` with no model or training flags, the speed a user gets
LIBRARIES = ["deepfm", "deepfm-defaults", "deepctr", "fuxictr", "torchfm"]

# What each run reports, how the table shows it, and whether more is better.
METRICS = [
    # key, column title, format, higher is better
    ("train_samples_per_s", "train samples/s", "{:,.0f}", True),
    ("test_predict_samples_per_s", "predict samples/s", "{:,.0f}", True),
    ("preprocess_rows_per_s", "preprocess rows/s", "{:,.0f}", True),
    ("total_seconds", "end-to-end s", "{:,.1f}", False),
    ("test_auc", "test AUC", "{:.4f}", True),
    ("test_logloss", "test logloss", "{:.4f}", False),
    ("peak_rss_mib", "peak RSS MiB", "{:,.0f}", False),
]
SPEED = {"train_samples_per_s", "test_predict_samples_per_s", "preprocess_rows_per_s", "total_seconds"}
QUALITY = {"test_auc", "test_logloss"}


def main() -> int:
    args = parse_args()
    libs = args.libs
    peers = [lib for lib in libs if not lib.startswith("deepfm")]
    workdir = args.workdir / f"rows-{args.rows}"
    workdir.mkdir(parents=True, exist_ok=True)

    check_deepfm()
    data = ensure_data(workdir / "clicks.tsv", args.rows)
    peer_python = ensure_peer_env(args.peers_venv) if peers else None

    runs: list[dict] = []
    for repeat in range(args.repeats):
        # Rotate the order each repeat: a slow minute on the machine falls on a different library.
        k = repeat % len(libs)
        order = libs[k:] + libs[:k]
        for position, lib in enumerate(order):
            log(f"repeat {repeat + 1}/{args.repeats}: {DISPLAY[lib]} ...")
            run = run_library(lib, data, workdir, peer_python, args)
            run.update({"repeat": repeat + 1, "position": position + 1})
            runs.append(run)
            if run["ok"]:
                log(
                    f"  {run['process_seconds']:.1f} s, train {run['train_samples_per_s']:,.0f} samples/s, "
                    f"test AUC {run['test_auc']:.4f}"
                )
            else:
                log(f"  FAILED: {run['error']}")

    medians = summarize(runs, libs)
    ratios = {mine: compare(medians, peers, mine) for mine in ("deepfm", "deepfm-defaults") if mine in libs and peers}
    table = markdown_table(medians, ratios, libs, peers)
    print(table)

    today = dt.date.today().isoformat()
    environment = describe_environment(peer_python, libs)
    report = {
        "date": today,
        "command": command_line("speed.py"),
        "rows": args.rows,
        "repeats": args.repeats,
        "epochs": args.epochs,
        "hyperparameters": HYPERPARAMETERS | {"epochs": args.epochs, "predict_batch": PREDICT_BATCH},
        "libraries": libs,
        "environment": environment,
        "medians": medians,
        "deepfm_vs_best_peer": ratios.get("deepfm", {}).get("best", {}),
        "deepfm_vs_each_peer": ratios.get("deepfm", {}).get("each", {}),
        "deepfm_defaults_vs_best_peer": ratios.get("deepfm-defaults", {}).get("best", {}),
        "runs": runs,
    }
    results = args.results_dir / f"speed-{today}.json"
    results.parent.mkdir(parents=True, exist_ok=True)
    results.write_text(json.dumps(report, indent=1) + "\n")
    log(f"wrote {results.relative_to(ROOT) if results.is_relative_to(ROOT) else results}")
    if args.docs:
        args.docs.parent.mkdir(parents=True, exist_ok=True)
        args.docs.write_text(render_docs(report, table, results))
        log(f"wrote {args.docs.relative_to(ROOT) if args.docs.is_relative_to(ROOT) else args.docs}")
    return 0 if all(medians[lib]["runs"] for lib in libs) else 1


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rows", type=int, default=1_000_000, help="rows of generated data (default 1000000)")
    p.add_argument("--repeats", type=int, default=3, help="runs per library; the table shows medians (default 3)")
    p.add_argument("--epochs", type=int, default=1, help="training epochs for every library (default 1)")
    p.add_argument("--libs", default=",".join(LIBRARIES), help=f"comma-separated subset of {','.join(LIBRARIES)}")
    p.add_argument("--workdir", type=Path, default=BENCH / ".work", help="data and scratch (default benchmarks/.work)")
    p.add_argument("--peers-venv", type=Path, default=BENCH / ".venv-peers", help="the peers' virtual environment")
    p.add_argument("--results-dir", type=Path, default=BENCH / "results")
    p.add_argument("--docs", type=Path, default=ROOT / "docs" / "benchmarks.md", help="page to rewrite")
    p.add_argument("--no-docs", dest="docs", action="store_const", const=None, help="leave docs/benchmarks.md alone")
    p.add_argument("--timeout", type=float, default=3600, help="seconds before one run is killed (default 3600)")
    args = p.parse_args()
    args.libs = [s.strip() for s in args.libs.split(",") if s.strip()]
    unknown = [lib for lib in args.libs if lib not in LIBRARIES]
    if unknown or not args.libs or len(set(args.libs)) != len(args.libs):
        p.error(f"--libs takes distinct names from {','.join(LIBRARIES)}, got {','.join(args.libs) or 'nothing'}")
    if args.rows < 1000 or args.repeats < 1 or args.epochs < 1:
        p.error("--rows must be at least 1000, --repeats and --epochs at least 1")
    return args


# ---------------------------------------------------------------- setup
def ensure_data(path: Path, rows: int) -> Path:
    """`deepfm synth` once per row count; a marker written after it finishes makes it reusable."""
    marker = path.with_suffix(".synth.json")
    if path.exists() and marker.exists() and json.loads(marker.read_text()).get("rows") == rows:
        log(f"reusing {path} ({rows:,} rows)")
        return path
    log(f"generating {rows:,} rows with deepfm synth -> {path}")
    cmd = [sys.executable, "-m", "deepfm", "synth", "--rows", str(rows), "--out", str(path), "--quiet"]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        fail(f"deepfm synth failed:\n{done.stderr[-2000:]}")
    marker.write_text(done.stdout.strip().splitlines()[-1] + "\n")
    return path


# ---------------------------------------------------------------- one run
def _command(lib: str, data: Path, scratch: Path, peer_python: Path | None, args: argparse.Namespace) -> list[str]:
    """The command line of one library's run (deepfm writes its model to scratch/model)."""
    if lib.startswith("deepfm"):
        cmd = [sys.executable, "-m", "deepfm", "train", "--data", str(data), "--preset", "criteo"]
        cmd += ["--device", "cpu", "--out", str(scratch / "model")]
        if lib == "deepfm-defaults":  # no model or training flags: the defaults as a user gets them
            cmd += [
                "--split",
                HYPERPARAMETERS["split"],
                "--epochs",
                str(args.epochs),
                "--seed",
                str(HYPERPARAMETERS["seed"]),
            ]
        else:
            hp = HYPERPARAMETERS
            cmd += _fixed_settings(args) + [
                "--dropout",
                "0",
                "--embedding-lr",
                str(hp["lr"]),
                "--l2-embedding",
                str(hp["l2"]),
            ]
        # deepfm can keep encoded data between runs on the same file; a hit would skip the
        # preprocessing this benchmark measures, so every run starts from the raw file.
        return cmd + (["--no-cache"] if deepfm_has_flag("--no-cache") else [])
    runner = [str(peer_python), str(BENCH / "peers" / f"{lib}_run.py"), "--data", str(data), "--workdir", str(scratch)]
    return runner + _fixed_settings(args) + ["--predict-batch", str(PREDICT_BATCH)]


def _fixed_settings(args: argparse.Namespace) -> list[str]:
    """The flags every library's run at the fixed settings takes alike (deepfm's runner and
    the peers' name them the same)."""
    hp = HYPERPARAMETERS
    return [
        "--split", hp["split"], "--embedding-dim", str(hp["embedding_dim"]), "--hidden", hp["hidden"],
        "--batch-size", str(hp["batch_size"]), "--epochs", str(args.epochs), "--lr", str(hp["lr"]),
        "--min-count", str(hp["min_count"]), "--seed", str(hp["seed"]),
    ]  # fmt: skip


def run_library(lib: str, data: Path, workdir: Path, peer_python: Path | None, args: argparse.Namespace) -> dict:
    """One library, one fresh process. Returns its measurements (or the error)."""
    scratch = workdir / "runs" / lib
    shutil.rmtree(scratch, ignore_errors=True)
    scratch.mkdir(parents=True)
    out = scratch / "model"
    cmd = _command(lib, data, scratch, peer_python, args)
    status, seconds, peak_rss_mib, stdout, stderr = run_measured(cmd, scratch, args.timeout)
    run: dict = {"library": lib, "ok": False, "process_seconds": seconds, "peak_rss_mib": peak_rss_mib}
    if status != 0:
        tail = stderr.strip().splitlines()[-3:]
        return run | {"error": f"exit status {status}: " + " | ".join(tail)}
    try:
        measured = read_deepfm_metrics(out / "metrics.json") if lib.startswith("deepfm") else read_json_line(stdout)
    except (OSError, ValueError, KeyError) as exc:
        return run | {"error": f"no measurements: {exc}"}
    shutil.rmtree(out, ignore_errors=True)  # the saved bundle is not needed any more
    measured["distribution"] = measured.pop("library", DISTRIBUTION[lib])
    return run | measured | {"ok": True}


@functools.cache
def deepfm_has_flag(flag: str) -> bool:
    """Whether this deepfm's `train` knows a flag (the CLI grows while it is optimized)."""
    done = subprocess.run([sys.executable, "-m", "deepfm", "train", "--help"], capture_output=True, text=True)
    return flag in done.stdout


def read_deepfm_metrics(path: Path) -> dict:
    """The keys of deepfm's metrics.json that the table uses (a missing one is an error)."""
    m = json.loads(path.read_text())
    keys = [
        "train_samples_per_s",
        "test_predict_samples_per_s",
        "preprocess_rows_per_s",
        "preprocess_seconds",
        "total_seconds",
        "test_auc",
        "test_logloss",
    ]
    missing = [k for k in keys if k not in m]
    if missing:
        raise KeyError(f"metrics.json lacks {', '.join(missing)}")
    extra = {
        k: m[k]
        for k in ("train_seconds", "train_rows", "test_rows", "valid_auc", "preprocess_cache", "resolved")
        if k in m
    }
    return {k: m[k] for k in keys} | extra


# ---------------------------------------------------------------- summary
def summarize(runs: list[dict], libs: list[str]) -> dict[str, dict]:
    """Median of every metric over a library's successful runs."""
    medians: dict[str, dict] = {}
    for lib in libs:
        ok = [r for r in runs if r["library"] == lib and r["ok"]]
        row: dict = {"runs": len(ok), "failed": sum(1 for r in runs if r["library"] == lib and not r["ok"])}
        for key, *_ in METRICS:
            values = [r[key] for r in ok if r.get(key) is not None]
            row[key] = statistics.median(values) if values else None
        medians[lib] = row
    return medians


def compare(medians: dict[str, dict], peers: list[str], mine_lib: str = "deepfm") -> dict:
    """deepfm (``mine_lib``: its fixed-settings row or its defaults' row) against the best peer
    on each metric, and against every peer.

    Speed: how many times as fast deepfm is (> 1: deepfm faster); for end-to-end seconds
    that is peer seconds / deepfm seconds. Memory: deepfm's peak RSS / the peer's (< 1:
    deepfm smaller). Quality: deepfm minus the peer (AUC: > 0 better; logloss: < 0 better).
    """
    mine = medians[mine_lib]

    def ratio(key: str, peer_value: float) -> float | None:
        value = mine[key]
        if value is None or peer_value is None:
            return None
        if key in QUALITY:
            return value - peer_value
        if key == "total_seconds":
            return peer_value / value
        return value / peer_value

    best, each = {}, {}
    for key, _, _, higher in METRICS:
        values = [medians[p][key] for p in peers if medians[p][key] is not None]
        if values:
            best[key] = ratio(key, max(values) if higher else min(values))
    for p in peers:
        each[p] = {key: ratio(key, medians[p][key]) for key, *_ in METRICS}
    return {"best": best, "each": each}


def markdown_table(medians: dict, ratios: dict, libs: list[str], peers: list[str]) -> str:
    header = ["library", *[title for _, title, _, _ in METRICS]]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] + ["---:"] * len(METRICS)) + "|"]
    for lib in libs:
        row = medians[lib]
        cells = [fmt.format(row[key]) if row[key] is not None else "failed" for key, _, fmt, _ in METRICS]
        name = DISPLAY[lib] + (f" ({row['failed']} failed)" if row["failed"] and row["runs"] else "")
        lines.append("| " + " | ".join([name, *cells]) + " |")
    for mine, title in (("deepfm", "deepfm vs best peer"), ("deepfm-defaults", "deepfm defaults vs best peer")):
        best = ratios.get(mine, {}).get("best")
        if best:
            lines.append("| " + " | ".join([f"**{title}**", *_ratio_cells(best)]) + " |")
    return "\n".join(lines)


# ---------------------------------------------------------------- report
def _ratio_cells(best: dict) -> list[str]:
    """A comparison row's cells: speed and memory as ×, quality as a difference."""
    cells = []
    for key, *_ in METRICS:
        value = best.get(key)
        if value is None:
            cells.append("")
        elif key in QUALITY:
            cells.append(f"{value:+.4f}")
        else:
            cells.append(f"{value:.2f}×")
    return cells


if __name__ == "__main__":
    sys.exit(main())
