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

# One set of hyperparameters for every library (the "same model").
HYPERPARAMETERS = {
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

LIBRARIES = ["deepfm", "deepctr", "fuxictr", "torchfm"]

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
    peers = [lib for lib in libs if lib != "deepfm"]
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
    ratios = compare(medians, peers) if "deepfm" in libs and peers else {}
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
        "deepfm_vs_best_peer": ratios.get("best", {}),
        "deepfm_vs_each_peer": ratios.get("each", {}),
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
def run_library(lib: str, data: Path, workdir: Path, peer_python: Path | None, args: argparse.Namespace) -> dict:
    """One library, one fresh process. Returns its measurements (or the error)."""
    scratch = workdir / "runs" / lib
    shutil.rmtree(scratch, ignore_errors=True)
    scratch.mkdir(parents=True)
    hp = HYPERPARAMETERS
    if lib == "deepfm":
        out = scratch / "model"
        cmd = [
            sys.executable,
            "-m",
            "deepfm",
            "train",
            "--data",
            str(data),
            "--preset",
            "criteo",
            "--split",
            hp["split"],
            "--embedding-dim",
            str(hp["embedding_dim"]),
            "--hidden",
            hp["hidden"],
            "--dropout",
            "0",
            "--batch-size",
            str(hp["batch_size"]),
            "--epochs",
            str(args.epochs),
            "--lr",
            str(hp["lr"]),
            "--embedding-lr",
            str(hp["lr"]),
            "--l2-embedding",
            str(hp["l2"]),
            "--min-count",
            str(hp["min_count"]),
            "--seed",
            str(hp["seed"]),
            "--device",
            "cpu",
            "--out",
            str(out),
        ]
        # deepfm can keep encoded data between runs on the same file; a hit would skip the
        # preprocessing this benchmark measures, so every run starts from the raw file.
        if deepfm_has_flag("--no-cache"):
            cmd.append("--no-cache")
    else:
        cmd = [
            str(peer_python),
            str(BENCH / "peers" / f"{lib}_run.py"),
            "--data",
            str(data),
            "--workdir",
            str(scratch),
            "--split",
            hp["split"],
            "--embedding-dim",
            str(hp["embedding_dim"]),
            "--hidden",
            hp["hidden"],
            "--batch-size",
            str(hp["batch_size"]),
            "--predict-batch",
            str(PREDICT_BATCH),
            "--epochs",
            str(args.epochs),
            "--lr",
            str(hp["lr"]),
            "--min-count",
            str(hp["min_count"]),
            "--seed",
            str(hp["seed"]),
        ]
    status, seconds, peak_rss_mib, stdout, stderr = run_measured(cmd, scratch, args.timeout)
    run: dict = {"library": lib, "ok": False, "process_seconds": seconds, "peak_rss_mib": peak_rss_mib}
    if status != 0:
        tail = stderr.strip().splitlines()[-3:]
        return run | {"error": f"exit status {status}: " + " | ".join(tail)}
    try:
        measured = read_deepfm_metrics(out / "metrics.json") if lib == "deepfm" else read_json_line(stdout)
    except (OSError, ValueError, KeyError) as exc:
        return run | {"error": f"no measurements: {exc}"}
    shutil.rmtree(scratch / "model", ignore_errors=True)  # the saved bundle is not needed any more
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
    extra = {k: m[k] for k in ("train_seconds", "train_rows", "test_rows", "valid_auc", "preprocess_cache") if k in m}
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


def compare(medians: dict[str, dict], peers: list[str]) -> dict:
    """deepfm against the best peer on each metric, and against every peer.

    Speed: how many times as fast deepfm is (> 1: deepfm faster); for end-to-end seconds
    that is peer seconds / deepfm seconds. Memory: deepfm's peak RSS / the peer's (< 1:
    deepfm smaller). Quality: deepfm minus the peer (AUC: > 0 better; logloss: < 0 better).
    """
    mine = medians["deepfm"]

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
    best = ratios.get("best")
    if best:
        cells = []
        for key, *_ in METRICS:
            value = best.get(key)
            if value is None:
                cells.append("")
            elif key in QUALITY:
                cells.append(f"{value:+.4f}")
            else:
                cells.append(f"{value:.2f}×")
        lines.append("| " + " | ".join(["**deepfm vs best peer**", *cells]) + " |")
    return "\n".join(lines)


# ---------------------------------------------------------------- report
def render_docs(report: dict, table: str, results: Path) -> str:
    env = report["environment"]
    mine, theirs = env.get("deepfm_env", {}), env.get("peers_env", {})
    versions = mine.get("versions", {})
    peer_versions = theirs.get("versions", {})
    lib_versions = ", ".join(
        f"{DISPLAY[lib]} {versions.get('deepfm') if lib == 'deepfm' else peer_versions.get(DISTRIBUTION[lib], '?')}"
        for lib in report["libraries"]
    )
    threads = sorted({e.get("torch_threads") for e in (mine, theirs) if e.get("torch_threads")})
    hp = report["hyperparameters"]
    commit = env.get("deepfm_commit") or "unknown"
    if env.get("deepfm_tree_dirty"):
        commit += " with uncommitted changes in deepfm/"
    rel = results.relative_to(ROOT) if results.is_relative_to(ROOT) else results
    peer_stack = ", ".join(
        f"{k} {v}" for k, v in peer_versions.items() if k not in ("deepctr-torch", "fuxictr", "torchfm")
    )
    nice_note = (
        "\n(`nice`: other jobs shared the machine; the raised priority, which every library's run inherits"
        " alike, keeps them off its cores.)"
        if report["command"].startswith("nice ")
        else ""
    )
    return f"""# Speed: deepfm beside DeepCTR-Torch, FuxiCTR and pytorch-fm

Generated by `benchmarks/speed.py` on {report["date"]}; do not edit by hand, rerun it.

```bash
{report["command"]}    # with the project's .venv active
```

{report["rows"]:,} rows of `deepfm synth` data, {report["epochs"]} epoch(s), medians of {report["repeats"]} run(s)
per library, the libraries alternated and their order rotated every repeat.{nice_note}

{table}

The last row compares deepfm with the best peer on each column: for speed, how many times as fast
deepfm is (above 1× deepfm is faster); for memory, deepfm's peak RSS over the smallest peer's (below
1× deepfm is smaller); for AUC and logloss, deepfm minus the best peer. Raw runs, per-peer ratios and
versions: [`{rel}`](../{rel}).

## What is measured

- **train samples/s**: training rows × epochs / seconds of the training loop only. Validation at the
  end of each epoch (and FuxiCTR's checkpoint save and reload) is timed apart and left out.
- **predict samples/s**: scoring the already preprocessed test part ({PREDICT_BATCH:,} rows a batch
  everywhere, deepfm's own scoring batch).
- **preprocess rows/s**: all rows / seconds from the raw TSV to encoded train, validation and test
  parts (reading, bucketizing, fitting vocabularies on the training part, encoding), each library's
  usual way: deepfm's FeaturePipeline (streamed Arrow chunks into memory-mapped arrays); DeepCTR-Torch
  and pytorch-fm: pandas `read_csv` + one scikit-learn `LabelEncoder` per field, as DeepCTR-Torch
  documents; FuxiCTR: its `FeatureProcessor` (polars) into its `NpzDataLoader`.
- **end-to-end s**: from the raw file to test metrics inside the process (preprocessing, model
  construction, training with per-epoch validation, test scoring); interpreter start-up and imports
  are left out for every library.
- **test AUC / logloss**: on the test part (scikit-learn's metrics for the peers, deepfm's own).
- **peak RSS**: the largest resident set of the run's process tree (`ru_maxrss` from `os.wait4` on
  the run's own process, which also covers the DataLoader workers it waited for).

## Same model, same data

- Data: `deepfm synth --rows {report["rows"]}`, Criteo layout (label, I1..I13 counts, C1..C26 hashed
  categoricals, tab-separated), split by row order {hp["split"]} (train, validation, test).
- Fields: all 39 categorical. I1..I13 bucketized with the Criteo log trick (v > 2: floor(log(v)²),
  kept apart from the small values; else v itself); a missing value is a value of its own;
  vocabularies fitted on the training part; values seen fewer than {hp["min_count"]} times there, and unseen
  values, share one OOV index per field.
- Model: DeepFM, one embedding of size {hp["embedding_dim"]} per field shared by the FM and the MLP, a
  first-order term, MLP {hp["hidden"].replace(",", "-")} ReLU, dropout 0, no batch norm, sigmoid output.
- Training: Adam, lr {hp["lr"]:g}, batch {hp["batch_size"]}, {hp["epochs"]} epoch(s), L2 {hp["l2"]:g}, seed {hp["seed"]}, CPU, torch's
  default thread count in every process ({", ".join(str(t) for t in threads) or "?"} here).

Per library:

- **deepfm**: `deepfm train --preset criteo --split {hp["split"]} --embedding-dim {hp["embedding_dim"]} --hidden {hp["hidden"]}
  --dropout 0 --batch-size {hp["batch_size"]} --epochs {hp["epochs"]} --lr {hp["lr"]:g} --embedding-lr {hp["lr"]:g} --min-count {hp["min_count"]}
  --device cpu --no-cache`; numbers from its `metrics.json`. `--no-cache` turns off its cache of encoded
  data, so every run preprocesses the raw file like the peers.
- **DeepCTR-Torch**: `deepctr_torch.models.DeepFM` over 39 `SparseFeat`s (L2 terms set to 0),
  `compile('adam', 'binary_crossentropy')`, `fit(..., validation_data=...)`, `predict`. Its loss is
  summed over the batch rather than averaged (Adam is nearly blind to the scale), and it feeds ids
  to the model as float32 before casting them back.
- **FuxiCTR**: the pip package has no model zoo, so `benchmarks/peers/fuxictr_run.py` builds the
  zoo's DeepFM from the package's `FeatureEmbedding`, `FactorizationMachine` and `MLP_Block` on its
  `BaseModel` (`fit` clips gradients at norm 10, its default). FuxiCTR 2.3 normally runs
  `FeatureProcessor.transform` through Ray and reads Parquet back through Ray; on a small machine that
  mostly measures Ray starting, so the runner calls the same `transform` in-process and uses
  FuxiCTR's `NpzDataLoader` (one worker process, its default).
- **pytorch-fm**: `torchfm.model.dfm.DeepFactorizationMachineModel` with the plain loop of its
  examples (`DataLoader` over tensors, `BCELoss`, Adam). Its MLP always inserts `BatchNorm1d`; those
  layers are replaced by identities to match the model above. Its first-order weights start at
  N(0, 1) (`nn.Embedding`'s default), which one epoch does not undo: expect a poor logloss.

## Machine and versions

- CPU: {env.get("cpu")}, {env.get("cores")} cores, {env.get("ram_gib")} GiB RAM; {env.get("os")}
- Python {mine.get("python", "?")}; torch {versions.get("torch", "?")} (deepfm's venv) and {peer_versions.get("torch", "?")} (peers' venv)
- Libraries: {lib_versions}
- Peers' stack: {peer_stack or "-"}
- deepfm commit: {commit}

The peers live in their own virtual environment, `benchmarks/.venv-peers`, created by the script;
they are never dependencies of deepfm. The machine may have been shared with other work while this
ran: compare the columns within one table rather than across pages.
"""


if __name__ == "__main__":
    sys.exit(main())
