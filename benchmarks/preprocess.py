"""Preprocessing throughput and memory: fit + encode of a Criteo-layout TSV.

    python benchmarks/preprocess.py --rows 10000000
    python benchmarks/preprocess.py --rows 10000000 --ranks 1,2 --files 8

Generates the data with ``deepfm synth`` once (kept in --workdir), then runs the same
preparation ``deepfm train --preset criteo --split 0.8,0.1,0.1`` does (count rows, one
parse that fits on the training rows and encodes every row to memory-mapped files), without
the cache, in a fresh process, and reports rows/s and the process's peak RSS.

With ``--ranks``, the rows are cut into ``--files`` files (a dataset, as the day files of
Criteo-1TB) and prepared by 1 process (``prepare``) and by each number of ranks under
torchrun (``prepare_ranked``, what ``deepfm train --nproc N`` does with such a dataset: each
rank parses its own files, the counts are merged, each rank encodes its rows), alternating,
``--repeats`` times; it reports rows/s in all and per rank, and each rank's peak RSS.
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
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


def child_ranks(folder: str) -> None:
    """One rank of a torchrun preparing the dataset in ``folder`` together (or, alone, what
    one process does); rank 0 prints the figures."""
    import os

    import numpy as np
    import torch.distributed as dist

    from deepfm.config import RunConfig
    from deepfm.data.schema import criteo_schema
    from deepfm.training import prepare
    from deepfm.training.distributed import Context
    from deepfm.training.parts import prepare_ranked

    world = int(os.environ.get("WORLD_SIZE", "1"))
    ctx = Context()
    if world > 1:
        dist.init_process_group("gloo")
        ctx = Context(rank=dist.get_rank(), world=world)
    config, files = RunConfig(schema=criteo_schema()), sorted(str(p) for p in Path(folder).glob("*.tsv"))
    tmp = Path(folder) / f".prepared-{world}"  # one folder every rank sees, beside the data
    if ctx.main:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
    ctx.barrier()
    t0, cpu0 = time.perf_counter(), _cpu_seconds()
    if ctx.active:
        _, parts = prepare_ranked(config, files, tmp, ctx, split=(0.8, 0.1, 0.1))
    else:
        _, parts = prepare(config, files, tmp, split=(0.8, 0.1, 0.1))
    ctx.barrier()
    seconds, cpu = time.perf_counter() - t0, _cpu_seconds() - cpu0
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    peaks = [float(x[0]) for x in ctx.gather_arrays(np.array([rss]))]
    cpus = [float(x[0]) for x in ctx.gather_arrays(np.array([cpu]))]
    if ctx.main:
        rate = parts.rows_read / seconds
        row = {"ranks": world, "rows": parts.rows_read, "files": len(files), "seconds": round(seconds, 2)}
        row.update(rows_per_s=round(rate), rows_per_s_per_rank=round(rate / world))
        row.update(cpu_s_per_rank=[round(c, 2) for c in cpus], peak_rss_mb_per_rank=[round(p) for p in peaks])
        print(json.dumps(row))
    ctx.barrier()
    if ctx.main:
        shutil.rmtree(tmp, ignore_errors=True)
    if ctx.active:
        dist.destroy_process_group()


def write_files(data: Path, folder: Path, files: int) -> None:
    """``data``'s lines cut into ``files`` consecutive files of ``folder``."""
    lines = data.read_bytes().splitlines(keepends=True)
    folder.mkdir(parents=True, exist_ok=True)
    step = -(-len(lines) // files)
    for k in range(files):
        (folder / f"part-{k:03d}.tsv").write_bytes(b"".join(lines[k * step : (k + 1) * step]))


def compare_ranks(data: Path, ranks: list[int], files: int, repeats: int, workdir: Path) -> None:
    """1 process against each number of ranks, alternating, ``repeats`` rounds; medians."""
    folder = workdir / f"{data.stem}-{files}-files"
    if not folder.exists():
        write_files(data, folder, files)
    runs: dict[int, list[dict]] = {n: [] for n in ranks}
    for _ in range(repeats):
        for n in ranks:
            launch = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={n}"]
            command = [*(launch if n > 1 else [sys.executable]), __file__, "--child-ranks", str(folder)]
            out = subprocess.run(command, check=True, capture_output=True, text=True)
            runs[n].append(json.loads(out.stdout.strip().splitlines()[-1]))
            print(json.dumps(runs[n][-1]), flush=True)
    for n, rows in runs.items():
        best = sorted(rows, key=lambda r: r["rows_per_s"])[len(rows) // 2]
        print(
            f"{n} rank(s), median of {len(rows)}: {best['rows_per_s']:,} rows/s "
            f"({best['rows_per_s_per_rank']:,} per rank), peak RSS per rank {best['peak_rss_mb_per_rank']} MB"
        )


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/deepfm-bench"))
    ap.add_argument("--ranks", help="compare these numbers of ranks, e.g. 1,2 (a dataset of --files files)")
    ap.add_argument("--files", type=int, default=8, help="files to cut the rows into for --ranks (default 8)")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--child-ranks", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args.child)
        return
    if args.child_ranks:
        child_ranks(args.child_ranks)
        return
    args.workdir.mkdir(parents=True, exist_ok=True)
    data = args.workdir / f"synth-{args.rows}.tsv"
    if not data.exists():
        subprocess.run(
            [sys.executable, "-m", "deepfm", "synth", "--rows", str(args.rows), "--out", str(data), "--quiet"],
            check=True,
        )
    if args.ranks:
        compare_ranks(data, [int(n) for n in args.ranks.split(",")], args.files, args.repeats, args.workdir)
        return
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
