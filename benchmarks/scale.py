"""Criteo-Kaggle-sized run on one machine: wall time and peak memory per stage.

    python benchmarks/scale.py --rows 45000000 --workdir /tmp/s45m

Stages, each in its own process so its peak RSS is its own (``ru_maxrss`` from ``os.wait4``):

1. ``deepfm synth --rows N`` (skipped when the file is there);
2. ``deepfm train --preset criteo --split 0.9,0.05,0.05 --epochs 1``: preprocessing (one parse,
   encoded parts in memory-mapped files), one epoch, scoring the valid and test parts, saving;
   the stage times come from its metrics.json;
3. ``deepfm evaluate`` on the test rows, from raw text (``--rows-eval`` rows cut from the end of
   the file), as a user scoring fresh data would.

Writes benchmarks/results/scale-<rows>-<date>.json and prints a table for docs/scale.md.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def sample_memory(pid: int, every: float, samples: list[tuple[float, int, int, int]], done: threading.Event) -> None:
    """Append (seconds, VmRSS, RssAnon, RssFile) in KiB from /proc/<pid>/status until ``done``.
    RssFile is mapped file pages (the encoded data); RssAnon is the process's own memory."""
    t0 = time.perf_counter()
    while not done.wait(every):
        try:
            text = Path(f"/proc/{pid}/status").read_text()
        except OSError:
            return
        kib = {
            line.split(":")[0]: int(line.split()[1])
            for line in text.splitlines()
            if line.startswith(("VmRSS", "RssAnon", "RssFile"))
        }
        if kib:
            samples.append(
                (round(time.perf_counter() - t0, 1), kib.get("VmRSS", 0), kib.get("RssAnon", 0), kib.get("RssFile", 0))
            )


def run(cmd: list[str], log: Path) -> dict:
    """Run ``cmd``; its wall seconds, peak RSS (GiB, the kernel's high-water mark) and the peaks
    of its anonymous and file-backed parts (sampled every 2 s, written beside ``log``)."""
    samples: list[tuple[float, int, int, int]] = []
    done = threading.Event()
    with open(log, "w") as out:
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT)
        sampler = threading.Thread(target=sample_memory, args=(proc.pid, 2.0, samples, done), daemon=True)
        sampler.start()
        _, status, usage = os.wait4(proc.pid, 0)
        seconds = time.perf_counter() - t0
        done.set()
        sampler.join()
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({code}); see {log}")
    log.with_suffix(".memory.csv").write_text(
        "seconds,rss_kib,anon_kib,file_kib\n" + "".join(",".join(map(str, s)) + "\n" for s in samples)
    )
    gib = 2**20  # KiB per GiB
    return {
        "seconds": round(seconds, 1),
        "peak_rss_gib": round(usage.ru_maxrss / gib, 2),
        "sampled_peak_anon_gib": round(max((s[2] for s in samples), default=0) / gib, 2),
        "sampled_peak_file_gib": round(max((s[3] for s in samples), default=0) / gib, 2),
        "command": " ".join(cmd),
    }


# one epoch with the defaults; every row preprocessed, none from a cache
TRAIN_FLAGS = ["--preset", "criteo", "--split", "0.9,0.05,0.05", "--epochs", "1", "--no-cache"]
# what the results keep of the run's metrics.json
TRAIN_METRICS = (
    "train_rows",
    "preprocess_seconds",
    "preprocess_rows_per_s",
    "train_seconds",
    "train_samples_per_s",
    "valid_predict_samples_per_s",
    "test_predict_samples_per_s",
    "valid_auc",
    "test_auc",
    "test_logloss",
    "total_seconds",
    "batch_size",
)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=45_000_000)
    ap.add_argument(
        "--rows-eval", type=int, default=2_000_000, help="rows at the end of the file for the evaluate stage"
    )
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/deepfm-scale"))
    ap.add_argument("--json", type=Path, help="results file (default benchmarks/results/scale-<rows>-<date>.json)")
    args = ap.parse_args()
    work = args.workdir
    work.mkdir(parents=True, exist_ok=True)
    deepfm = [sys.executable, "-m", "deepfm"]
    data = work / "clicks.tsv"
    stages: dict[str, dict] = {}
    if not data.exists():
        stages["synth"] = run(
            [*deepfm, "synth", "--rows", str(args.rows), "--out", str(data), "--quiet"], work / "synth.log"
        )
    out = work / "model"
    train = ["train", "--data", str(data), *TRAIN_FLAGS, "--out", str(out), "--quiet"]
    stages["train"] = run([*deepfm, *train], work / "train.log")
    m = json.loads((out / "metrics.json").read_text())
    tail = work / "eval.tsv"
    with open(tail, "wb") as f:  # the last rows of the file: the test part's own rows
        subprocess.run(["tail", "-n", str(args.rows_eval), str(data)], stdout=f, check=True)
    stages["evaluate"] = run([*deepfm, "evaluate", str(out), "--data", str(tail), "--quiet"], work / "eval.log")
    evaluated = json.loads((work / "eval.log").read_text().strip().splitlines()[-1])
    result = {
        "date": str(datetime.date.today()),
        "command": f"python benchmarks/scale.py --rows {args.rows}",
        "rows": args.rows,
        "stages": stages,
        "train_metrics": {k: m.get(k) for k in TRAIN_METRICS},
        # the epoch's training metrics, on the sampled rows (TRAIN_METRIC_ROWS)
        "train_epoch": {
            k: m["history"][-1].get(k) for k in ("train_loss", "train_auc", "train_logloss", "train_metric_rows")
        },
        "embedding_rows": json.loads((out / "pipeline.json").read_text())["num_embeddings"],
        "evaluate": evaluated,
    }
    path = args.json or ROOT / "benchmarks" / "results" / f"scale-{args.rows}-{result['date']}.json"
    path.write_text(json.dumps(result, indent=1))
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
