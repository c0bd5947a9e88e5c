#!/usr/bin/env python3
"""Accuracy benchmark: deepfm's defaults beside DeepCTR-Torch, FuxiCTR and pytorch-fm.

    .venv/bin/python benchmarks/accuracy.py                       # everything: hours on 2 cores
    .venv/bin/python benchmarks/accuracy.py --quick --workdir /tmp/acc-quick   # smoke run, minutes
    .venv/bin/python benchmarks/accuracy.py --libs deepfm --reuse benchmarks/results/accuracy-DATE.json
    .venv/bin/python benchmarks/accuracy.py --render benchmarks/results/accuracy-DATE.json   # the page only
    .venv/bin/python benchmarks/accuracy.py --render A.json B.json   # one page from runs of other data sets

Run it with the interpreter that has deepfm installed (the project's .venv). For every data
set -- the Criteo 10k sample, Frappe, and `deepfm synth` at 100k, 300k and 1M rows under four
generator settings -- it trains, for every seed:

- deepfm with its defaults (only data, split, preset and seed flags), `--model lr`,
  `--model fm`, and, where the data has a header, with the schema inferred (only `--label`);
- each peer's own DeepFM (benchmarks/peers/, in their own venv) on ids encoded once per data
  set with the common rules of benchmarks/peers/common.py: embedding 10, MLP 400x400x400 ReLU,
  Adam lr 1e-3, the library's defaults otherwise, validation AUC after every epoch, the best
  epoch's weights, patience 2, at most 50 epochs; batch 4096 from 100k training rows up,
  else 256 and 2048, keeping the one with the better mean validation AUC.

It writes benchmarks/results/accuracy-<date>.json (after every data set, so a stopped run
keeps what it finished) and docs/accuracy.md, whose checks say PASS or FAIL. Peers do not
change when deepfm does: --reuse takes their runs from an earlier results file when the data
set's encoded arrays (their fingerprint), the seed, the peer, its version, the batch size and
PROTOCOL match; deepfm's runs are always rerun.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

import accuracy_data as data
import numpy as np
from accuracy_report import checks, render, summarize
from benchlib import (
    BENCH,
    DISPLAY,
    DISTRIBUTION,
    PEERS,
    ROOT,
    check_deepfm,
    command_line,
    describe_environment,
    ensure_peer_env,
    epoch_curve,
    log,
    read_json_line,
    run_measured,
    train_deepfm,
)

# Bump when anything in the peers' protocol changes, so --reuse stops matching older runs.
PROTOCOL = "accuracy-1"
PEER_SETTINGS = {
    "embedding_dim": 10,
    "hidden": "400,400,400",
    "lr": 1e-3,
    "max_epochs": 50,
    "patience": 2,
    "min_count": 2,
    "predict_batch": 16384,
}
SMALL_TRAIN_ROWS = 100_000  # below: batches SMALL_BATCHES, keeping the better; from here: LARGE_BATCH
SMALL_BATCHES = (256, 2048)
LARGE_BATCH = 4096
DEEPFM_VARIANTS = {"defaults": [], "lr": ["--model", "lr"], "fm": ["--model", "fm"]}
ALL_VARIANTS = [*DEEPFM_VARIANTS, "inferred"]  # inferred: the same file, only --label
QUICK_EPOCHS = 2
LIBRARIES = ["deepfm", *PEERS]


def main() -> int:
    args = parse_args()
    if args.render:  # the page again from finished results files, nothing trained
        report = add_checks(merge_results([json.loads(path.read_text()) for path in args.render]))
        (args.docs or ROOT / "docs" / "accuracy.md").write_text(
            render(report, args.render, study_files(args.results_dir), defaults_speed(args.results_dir))
        )
        return 0
    datasets = data.select(args.datasets)
    data.check_shared(datasets)
    check_deepfm()
    if args.threads:  # inherited by every process this script starts, and by the probes below
        os.environ["OMP_NUM_THREADS"] = os.environ["MKL_NUM_THREADS"] = str(args.threads)
    peers = [lib for lib in args.libs if lib != "deepfm"]
    # The peers' venv also encodes their arrays; a deepfm-only run uses it when it is there,
    # so that the arrays' fingerprints match the runs it reuses.
    existing = args.peers_venv / "bin" / "python"
    peer_python = ensure_peer_env(args.peers_venv) if peers else (existing if existing.exists() else None)
    env = describe_environment(peer_python, LIBRARIES if peer_python else ["deepfm"])
    reusable, earlier_env = load_reusable(args.reuse, env) if args.reuse else ({}, {})
    if "peers_env" not in env and earlier_env.get("peers_env"):
        env["peers_env"] = earlier_env["peers_env"] | {"from": "the reused results file"}
    today = dt.date.today().isoformat()
    # A smoke run's results stay in the workdir unless asked for elsewhere.
    default_dir = args.workdir if args.quick else args.results_dir
    results = args.results or (default_dir / f"accuracy-{today}{'-quick' if args.quick else ''}.json")
    report = {
        "date": today,
        "command": command_line("accuracy.py"),
        "quick": args.quick,
        "protocol": PROTOCOL,
        "peer_settings": PEER_SETTINGS
        | {"small_train_rows": SMALL_TRAIN_ROWS, "small_batches": list(SMALL_BATCHES), "large_batch": LARGE_BATCH},
        "seeds": args.seeds,
        "libraries": args.libs,
        "threads": args.threads,
        "environment": env,
        "complete": False,
        "datasets": [],
        "runs": [],
    }
    for ds in datasets:
        log(f"=== {ds.name}")
        prepared = data.prepare(ds, args.workdir, peer_python, args.quick)
        report["datasets"].append(describe(ds, prepared))
        for seed in args.seeds:
            if "deepfm" in args.libs:
                for variant in [v for v in args.variants if v != "inferred" or prepared.inferred_args]:
                    report["runs"].append(run_deepfm(ds, prepared, variant, seed, args))
            for peer in PEERS:  # reused runs count for every peer; --libs says which may run
                for batch in batch_sizes(prepared.meta["rows"]["train"]):
                    key = reuse_key(ds.name, prepared.meta["fingerprint"], seed, peer, batch)
                    if key in reusable:
                        report["runs"].append(reusable[key] | {"reused": True})
                    elif peer in peers:
                        report["runs"].append(run_peer(ds, prepared, peer, batch, seed, peer_python, args))
        write_results(report, results)
    report["complete"] = True
    finish(add_checks(report), results, args)
    return 0 if all(r["ok"] for r in report["runs"]) else 1


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--datasets", help="comma-separated names or patterns (default: all), e.g. criteo-10k,frappe,synth-*-100k"
    )
    p.add_argument("--seeds", default="3", help="how many seeds (1..N), or a list like 1,2,3 (default 3)")
    p.add_argument("--libs", default=",".join(LIBRARIES), help=f"comma-separated subset of {','.join(LIBRARIES)}")
    p.add_argument(
        "--variants",
        default=",".join(ALL_VARIANTS),
        help=f"deepfm's runs: comma-separated subset of {','.join(ALL_VARIANTS)} (inferred: where the data has a "
        "header)",
    )
    p.add_argument(
        "--quick",
        action="store_true",
        help=f"smoke run: a few thousand rows per data set, {QUICK_EPOCHS} epochs at most",
    )
    p.add_argument(
        "--workdir",
        type=Path,
        default=Path(tempfile.gettempdir()) / "deepfm-accuracy",
        help="data, encoded arrays and scratch, outside the repository (default $TMPDIR/deepfm-accuracy)",
    )
    p.add_argument(
        "--render",
        type=Path,
        nargs="+",
        metavar="RESULTS.json",
        help="write the page from these results files and stop (a data set in several: each library's runs "
        "from the last file that ran it)",
    )
    p.add_argument(
        "--reuse", type=Path, metavar="RESULTS.json", help="take matching peer runs from this earlier results file"
    )
    p.add_argument("--peers-venv", type=Path, default=BENCH / ".venv-peers", help="the peers' virtual environment")
    p.add_argument(
        "--results-dir", type=Path, default=BENCH / "results", help="(default benchmarks/results; --quick: the workdir)"
    )
    p.add_argument("--results", type=Path, help="results file (default <results-dir>/accuracy-<date>.json)")
    p.add_argument("--docs", type=Path, help="page to rewrite (default docs/accuracy.md; --quick: none)")
    p.add_argument("--timeout", type=float, default=4 * 3600, help="seconds before one run is killed (default 14400)")
    p.add_argument(
        "--threads",
        type=int,
        help="torch threads of every run, deepfm's and the peers' alike (sets "
        "OMP_NUM_THREADS; default: PyTorch's, one per core). 1 on a machine shared with other jobs: a "
        "thread that waits for a busy core stalls every parallel op of its run",
    )
    return p


def parse_args() -> argparse.Namespace:
    """The command line, checked: lists split, seeds expanded, the page and workdir placed."""
    p = _parser()
    args = p.parse_args()
    args.libs = [s.strip() for s in args.libs.split(",") if s.strip()]
    args.variants = [s.strip() for s in args.variants.split(",") if s.strip()]
    if not args.variants or any(v not in ALL_VARIANTS for v in args.variants):
        p.error(f"--variants takes names from {','.join(ALL_VARIANTS)}, got {','.join(args.variants) or 'nothing'}")
    if not args.libs or any(lib not in LIBRARIES for lib in args.libs) or len(set(args.libs)) != len(args.libs):
        p.error(f"--libs takes distinct names from {','.join(LIBRARIES)}, got {','.join(args.libs) or 'nothing'}")
    try:
        seeds = [int(s) for s in args.seeds.split(",")]
    except ValueError:
        p.error(f"--seeds wants a count or a list like 1,2,3, got {args.seeds!r}")
    args.seeds = list(range(1, seeds[0] + 1)) if len(seeds) == 1 else seeds
    if not args.seeds or len(set(args.seeds)) != len(args.seeds):
        p.error("--seeds must name at least one seed, each once")
    if args.threads is not None and args.threads < 1:
        p.error(f"--threads must be at least 1, got {args.threads}")
    if args.docs is None and not args.quick:
        args.docs = ROOT / "docs" / "accuracy.md"
    if args.workdir.resolve().is_relative_to(ROOT):
        p.error("--workdir must lie outside the repository: it holds data whose licences forbid redistribution")
    return args


def batch_sizes(train_rows: int) -> tuple[int, ...]:
    return SMALL_BATCHES if train_rows < SMALL_TRAIN_ROWS else (LARGE_BATCH,)


def describe(ds: data.DataSet, prepared: data.Prepared) -> dict:
    """What the results file says about a data set (no machine-local paths)."""
    meta = prepared.meta
    return {
        "name": ds.name,
        "title": ds.title,
        "family": ds.family,
        "rows": ds.rows,
        "setting": ds.setting,
        "header": prepared.inferred_args is not None,
        "fingerprint": meta["fingerprint"],
        "parts": meta["rows"],
        "fields": len(meta["fields"]),
        "peer_vocabulary": sum(meta["vocab_sizes"]),
        "truth": prepared.truth,
        "test_click_rate": float(np.load(prepared.encoded / "test_y.npy").mean()),
        "source": prepared.source,
    }


# ---------------------------------------------------------------- runs
def run_deepfm(ds: data.DataSet, prepared: data.Prepared, variant: str, seed: int, args: argparse.Namespace) -> dict:
    """deepfm train through its CLI: no hyperparameter flags besides --model for lr and fm."""
    scratch = args.workdir / "runs" / ds.name / f"deepfm-{variant}-{seed}"
    flags = prepared.inferred_args if variant == "inferred" else prepared.deepfm_args + DEEPFM_VARIANTS[variant]
    if args.quick:
        flags = [*flags, "--epochs", str(QUICK_EPOCHS)]
    log(f"{ds.name} seed {seed}: deepfm {variant} ...")
    # Encoded data is cached between the variants and seeds of one data set, inside the workdir.
    status, seconds, rss, stderr, model = train_deepfm(
        flags, seed, scratch, args.workdir / "deepfm-cache", args.timeout
    )
    run = {
        "dataset": ds.name,
        "library": "deepfm",
        "variant": variant,
        "seed": seed,
        "ok": False,
        "process_seconds": seconds,
        "peak_rss_mib": rss,
    }
    if status != 0:
        return _failed(run, status, stderr)
    m = json.loads((model / "metrics.json").read_text())
    config = json.loads((model / "config.json").read_text())
    max_epochs = config.get("train", {}).get("epochs")
    run |= {
        k: m[k]
        for k in (
            "test_auc",
            "test_logloss",
            "valid_auc",
            "epochs",
            "best_epoch",
            "batch_size",
            "train_seconds",
            "train_samples_per_s",
            "train_rows",
            "resolved",
        )
        if k in m
    } | {"curve": epoch_curve(m)}
    run |= {"ok": True, "max_epochs": max_epochs, "stopped_early": m["epochs"] < max_epochs if max_epochs else None}
    _log_run(run)
    shutil.rmtree(scratch / "model", ignore_errors=True)
    return run


def run_peer(
    ds: data.DataSet,
    prepared: data.Prepared,
    peer: str,
    batch: int,
    seed: int,
    peer_python: Path | None,
    args: argparse.Namespace,
) -> dict:
    """One peer runner in its venv on the encoded arrays: early stopping, best weights."""
    scratch = args.workdir / "runs" / ds.name / f"{peer}-{batch}-{seed}"
    shutil.rmtree(scratch, ignore_errors=True)
    scratch.mkdir(parents=True)
    s = PEER_SETTINGS
    cmd = [
        str(peer_python),
        str(BENCH / "peers" / f"{peer}_run.py"),
        "--encoded",
        str(prepared.encoded),
        "--workdir",
        str(scratch),
        "--batch-size",
        str(batch),
        "--seed",
        str(seed),
        "--embedding-dim",
        str(s["embedding_dim"]),
        "--hidden",
        s["hidden"],
        "--lr",
        str(s["lr"]),
        "--max-epochs",
        str(QUICK_EPOCHS if args.quick else s["max_epochs"]),
        "--patience",
        str(s["patience"]),
        "--predict-batch",
        str(s["predict_batch"]),
    ]
    log(f"{ds.name} seed {seed}: {DISPLAY[peer]} batch {batch} ...")
    status, seconds, rss, stdout, stderr = run_measured(cmd, scratch, args.timeout)
    run = {
        "dataset": ds.name,
        "library": peer,
        "variant": "peer",
        "seed": seed,
        "batch_size": batch,
        "ok": False,
        "protocol": PROTOCOL,
        "fingerprint": prepared.meta["fingerprint"],
        "process_seconds": seconds,
        "peak_rss_mib": rss,
    }
    if status != 0:
        return _failed(run, status, stderr)
    measured = read_json_line(stdout)
    run |= {k: v for k, v in measured.items() if k != "library"} | {"ok": True}
    _log_run(run)
    shutil.rmtree(scratch, ignore_errors=True)  # its copies of the arrays and checkpoints
    return run


def _failed(run: dict, status: int, stderr: str) -> dict:
    tail = " | ".join(stderr.strip().splitlines()[-3:])
    log(f"  FAILED (exit status {status}): {tail}")
    return run | {"error": f"exit status {status}: {tail}"}


def _log_run(run: dict) -> None:
    log(
        f"  test AUC {run['test_auc']:.4f}, logloss {run['test_logloss']:.4f}, {run['epochs']} epochs, "
        f"{run['train_seconds']:.1f} s training"
    )


# ---------------------------------------------------------------- reuse and results
def reuse_key(dataset: str, fingerprint: str, seed: int, peer: str, batch: int) -> str:
    return json.dumps([dataset, fingerprint, seed, peer, batch, PROTOCOL])


def load_reusable(path: Path, env: dict) -> tuple[dict[str, dict], dict]:
    """The earlier file's successful peer runs by reuse_key, and its environment. A run of
    another peer version than the one installed here (when the peers' venv is here) is not
    taken."""
    earlier = json.loads(path.read_text())
    installed = env.get("peers_env", {}).get("versions", {})
    out = {}
    for run in earlier.get("runs", []):
        if run.get("library") not in PEERS or not run.get("ok") or run.get("protocol") != PROTOCOL:
            continue
        if installed and installed.get(DISTRIBUTION[run["library"]]) != run.get("version"):
            continue
        key = reuse_key(run["dataset"], run["fingerprint"], run["seed"], run["library"], run["batch_size"])
        out[key] = {k: v for k, v in run.items() if k != "reused"}
    log(f"--reuse: {len(out)} peer runs in {path.name}")
    return out, earlier.get("environment", {})


def write_results(report: dict, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".partial")
    tmp.write_text(json.dumps(report, indent=1) + "\n")
    tmp.replace(path)


def defaults_speed(folder: Path) -> Path | None:
    """The newest speed-*.json in folder that timed deepfm's defaults (speed.py's
    deepfm-defaults) in at least one run that did not fail, if any."""
    for path in sorted(folder.glob("speed-*.json"), reverse=True):
        report = json.loads(path.read_text())
        if report.get("medians", {}).get("deepfm-defaults", {}).get("runs"):  # a run that did not fail
            return path
    return None


def study_files(folder: Path) -> list[Path]:
    """Every defaults-study-*.jsonl in folder, oldest first (names sort by date): the study
    grows over days, each day's runs in their own file."""
    return sorted(folder.glob("defaults-study-*.jsonl"))


def add_checks(report: dict) -> dict:
    """The report with each data set's summary and the checks (of what ran so far)."""
    report["summary"] = {
        ds["name"]: summarize([r for r in report["runs"] if r["dataset"] == ds["name"]]) for ds in report["datasets"]
    }
    report["checks"] = checks(report["datasets"], report["summary"])
    return report


def merge_results(reports: list[dict]) -> dict:
    """One report from the results of separate runs (data sets run at other times): the data
    sets and runs of all. A data set in several takes the last file's runs of each library and
    deepfm variant it ran, and the earlier files' runs of those it did not (deepfm and the
    peers run apart, side by side; `--variants fm` runs one of deepfm's again), as long as the
    data's fingerprint is the same. The commands and the
    deepfm commits of each are kept, so the page says what made which rows."""
    out = dict(reports[0])
    out["datasets"], out["runs"] = list(out["datasets"]), list(out["runs"])
    commits = {d["name"]: out["environment"].get("deepfm_commit") for d in out["datasets"]}
    for other in reports[1:]:
        earlier = {d["name"]: d for d in out["datasets"]}
        for d in other["datasets"]:
            if d["name"] in earlier and earlier[d["name"]]["fingerprint"] != d["fingerprint"]:
                raise SystemExit(f"--render: {d['name']} has other data in {other['command']!r}; run it again")
        ran = {(r["dataset"], r["library"], r.get("variant")) for r in other["runs"]}
        replaced = [(r["dataset"], r["library"], r.get("variant")) in ran for r in out["runs"]]
        # kept for the study's table, which sets runs of earlier defaults against them
        out["superseded"] = out.get("superseded", []) + [r for r, old in zip(out["runs"], replaced) if old]
        names = {d["name"] for d in other["datasets"]}
        out["datasets"] = [d for d in out["datasets"] if d["name"] not in names] + other["datasets"]
        out["runs"] = [r for r, old in zip(out["runs"], replaced) if not old] + other["runs"]
        commits |= _deepfm_commits(commits, other, ran, out["runs"])
        out["command"] = f"{out['command']}\n{other['command']}"
        out["date"] = max(out["date"], other["date"])
        out["complete"] = out["complete"] and other["complete"]
    order = {d.name: i for i, d in enumerate(data.catalogue())}  # the page in the catalogue's order
    out["datasets"].sort(key=lambda d: order.get(d["name"], len(order)))
    if len(reports) > 1:
        out["environment"] = dict(out["environment"]) | {
            "deepfm_commit": ", ".join(f"{c} ({name})" for name, c in commits.items())
        }
    return out


def _deepfm_commits(commits: dict, other: dict, ran: set, merged: list[dict]) -> dict:
    """The deepfm commit of each data set ``other`` ran deepfm on: "A, B" where the ``merged``
    runs keep some of an earlier file's deepfm variants beside it."""
    mine, new = other["environment"].get("deepfm_commit"), {id(r) for r in other["runs"]}
    out = {}
    for name in sorted({name for name, lib, _ in ran if lib == "deepfm"}):
        kept = any(r["dataset"] == name and r["library"] == "deepfm" and id(r) not in new for r in merged)
        before = commits.get(name)
        if not (kept and before):
            out[name] = mine
        elif mine in before.split(", "):
            out[name] = before
        else:
            out[name] = f"{before}, {mine}"
    return out


def finish(report: dict, results: Path, args: argparse.Namespace) -> None:
    """Summaries and checks into the results file; the page, when one is asked for."""
    write_results(report, results)
    log(f"wrote {results.relative_to(ROOT) if results.is_relative_to(ROOT) else results}")
    for c in report["checks"]:
        print(f"{c['result']:>4}  {c['line']}")
    if args.docs:
        args.docs.parent.mkdir(parents=True, exist_ok=True)
        args.docs.write_text(render(report, results, study_files(args.results_dir), defaults_speed(args.results_dir)))
        log(f"wrote {args.docs.relative_to(ROOT) if args.docs.is_relative_to(ROOT) else args.docs}")


if __name__ == "__main__":
    sys.exit(main())
