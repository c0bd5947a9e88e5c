"""Preprocessing throughput and memory: fit + encode of a Criteo-layout TSV.

    python benchmarks/preprocess.py --rows 10000000

Generates the data with ``deepfm synth`` once (kept in --workdir), then runs the same
preparation ``deepfm train --preset criteo --split 0.8,0.1,0.1`` does (count rows, one
parse that fits on the training rows and encodes every row to memory-mapped files), without
the cache, in a fresh process, and reports rows/s and the process's peak RSS.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def child(path: str) -> None:
    from deepfm.config import RunConfig
    from deepfm.data.schema import criteo_schema
    from deepfm.training import prepare

    with tempfile.TemporaryDirectory() as tmp:
        t0, cpu0 = time.perf_counter(), _cpu_seconds()
        pipeline, parts = prepare(RunConfig(schema=criteo_schema()), path, Path(tmp), split=(0.8, 0.1, 0.1))
        seconds, cpu = time.perf_counter() - t0, _cpu_seconds() - cpu0
        print(
            json.dumps(
                {
                    "rows": parts.rows_read,
                    "seconds": round(seconds, 2),
                    "rows_per_s": round(parts.rows_read / seconds),
                    "cpu_s": round(cpu, 2),  # all threads: a check on wall time when the machine is busy
                    "embedding_rows": pipeline.num_embeddings,
                    "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
                }
            )
        )


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/deepfm-bench"))
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args.child)
        return
    args.workdir.mkdir(parents=True, exist_ok=True)
    data = args.workdir / f"synth-{args.rows}.tsv"
    if not data.exists():
        subprocess.run(
            [sys.executable, "-m", "deepfm", "synth", "--rows", str(args.rows), "--out", str(data), "--quiet"],
            check=True,
        )
    runs = []
    for _ in range(args.repeats):
        out = subprocess.run(
            [sys.executable, __file__, "--child", str(data)], check=True, capture_output=True, text=True
        )
        runs.append(json.loads(out.stdout.strip().splitlines()[-1]))
        print(json.dumps(runs[-1]))
    best = sorted(runs, key=lambda r: r["rows_per_s"])[len(runs) // 2]
    print(
        f"median of {len(runs)}: {best['rows_per_s']:,} rows/s, peak RSS {best['peak_rss_mb']:,} MB ({args.rows:,} rows)"
    )


if __name__ == "__main__":
    main()
