"""Sharded per-field tables (deepfm.sharded, torchrec DMP) against data-parallel replicas.

    python benchmarks/sharded.py --rows 1000000 --nproc 2      # launches itself under torchrun

Criteo-layout rows from ``deepfm synth`` (made once in --workdir), the criteo preset, default
model (embedding 16, MLP 400-400-400), one epoch at a global batch of 4096:

- ``sharded``: ShardedDeepFM, tables of at least --row-wise-min-rows rows row-wise (on 1M
  rows: none at the default 100,000, five at 40,000), the others whole; fused row-wise
  Adagrad on the tables, Adam on the MLP; each rank uses cores / ranks threads;
- what each rank holds: table rows and bytes (weights + row-wise Adagrad state) against the
  whole table a data-parallel rank keeps (plus its two Adam moments).

Prints one JSON line (rank 0): samples/s of the epoch, rows and bytes per rank, peak RSS per
rank. ``--json PATH`` also writes it to PATH, with the date, the command, the model config,
the commit, and the machine's CPU count and load averages (other work shares the cores).
Compare with ``deepfm train --nproc N`` on the same file for the data-parallel speed.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

import torch
import torch.distributed as dist

if TYPE_CHECKING:  # deepfm is imported inside the functions that use it
    from deepfm.config import RunConfig

ROOT = Path(__file__).resolve().parent.parent


def worker(args: argparse.Namespace) -> None:
    """One rank under torchrun: encode the file (rank 0, once), train one epoch sharded,
    gather what each rank held and print (and write) the result on rank 0."""
    from deepfm.config import RunConfig
    from deepfm.data.schema import PRESETS
    from deepfm.model.deepfm import DeepFM, InputLayout
    from deepfm.training.sharded import ShardedDeepFM, field_tables, rank_batches

    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    threads = max(1, (os.cpu_count() or 1) // world)
    torch.set_num_threads(threads)
    config = RunConfig(schema=PRESETS["criteo"]())
    pipeline, train = _encoded(args, config, rank)
    layout = InputLayout.of(pipeline)
    torch.manual_seed(0)
    model = ShardedDeepFM(layout, config.model, field_tables(pipeline), row_wise_min_rows=args.row_wise_min_rows)
    model.load_from(DeepFM(layout, config.model))
    load_before = os.getloadavg()[0]  # other work on the machine: the epoch shares its cores
    steps, rows, t0 = 0, 0, time.perf_counter()
    for batch in rank_batches(train, args.batch, seed=1):
        model.step(batch, args.batch)
        steps, rows = steps + 1, rows + len(batch)
    seconds = time.perf_counter() - t0
    held = torch.zeros(world, dtype=torch.int64)
    held[rank] = model.local_rows()
    rss = torch.zeros(world, dtype=torch.float64)
    rss[rank] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    done = torch.tensor([float(rows)], dtype=torch.float64)
    for t in (held, rss, done):
        dist.all_reduce(t)
    if rank == 0:
        d1 = config.model.embedding_dim + 1
        n = layout.num_embeddings
        result = {
            "rows": args.rows,
            "world": world,
            "global_batch": args.batch,
            "steps": steps,
            "samples_per_s": round(float(done[0]) / seconds),
            "seconds": round(seconds, 1),
            "num_embeddings": n,
            "rows_held": held.tolist(),
            # weights + row-wise Adagrad
            "table_mib_per_rank": [round(int(h) * (model.width * 4 + 4) / 2**20, 1) for h in held],
            "data_parallel_table_mib_per_rank": round(n * d1 * 4 * 3 / 2**20, 1),  # weights + Adam's two moments
            "placement": {k: v[0] for k, v in model.placement.items() if v[0] == "row_wise"},
            "peak_rss_gib_per_rank": [round(float(x), 2) for x in rss],
        }
        print(json.dumps(result))
        if args.json is not None:
            _write_record(args, config, threads, load_before, result)
    dist.destroy_process_group()


def _encoded(args: argparse.Namespace, config: RunConfig, rank: int) -> tuple:
    """The file encoded once into --workdir by rank 0 (the others wait): (pipeline, train part)."""
    from deepfm.data.encoded import EncodedDataset
    from deepfm.features.pipeline import FeaturePipeline
    from deepfm.training import prepare

    encoded = args.workdir / f"encoded-{args.rows}"
    if rank == 0 and not (encoded / "done").exists():
        pipeline, _ = prepare(config, args.workdir / "clicks.tsv", encoded, split=(1.0, 0.0, 0.0))
        (encoded / "pipeline").mkdir(parents=True, exist_ok=True)
        pipeline.save(encoded / "pipeline")
        (encoded / "done").write_text("")
    dist.barrier()
    return FeaturePipeline.load(encoded / "pipeline"), EncodedDataset(encoded / "train")


def _write_record(args: argparse.Namespace, config: RunConfig, threads: int, load_before: float, result: dict) -> None:
    """--json: the result with the date, the command, the settings, the commit and the load."""
    record = {
        "benchmark": "sharded",
        "date": datetime.date.today().isoformat(),
        "command": args.command,
        "config": {
            "model": dataclasses.asdict(config.model),
            "row_wise_min_rows": args.row_wise_min_rows,
            "global_batch": args.batch,
            "epochs": 1,
            "threads_per_rank": threads,
            "table_optimizer": "fbgemm fused row-wise Adagrad",
            "dense_optimizer": "Adam",
        },
        "deepfm_commit": _git("rev-parse", "--short", "HEAD"),
        "deepfm_tree_dirty": bool(_git("status", "--porcelain", "--", "deepfm")),
        "cpu_count": os.cpu_count(),
        "load_average_before": load_before,
        "load_average_after": os.getloadavg()[0],
        **result,
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(record, indent=1) + "\n")


def _git(*args: str) -> str:
    done = subprocess.run(["git", "-C", str(ROOT), *args], capture_output=True, text=True)
    return done.stdout.strip() if done.returncode == 0 else ""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--nproc", type=int, default=2)
    ap.add_argument("--batch", type=int, default=4096, help="global batch (rows over all ranks)")
    ap.add_argument("--row-wise-min-rows", type=int, default=100_000)
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/deepfm-sharded"))
    ap.add_argument("--json", type=Path, help="also write the result, with date, command and config, to this file")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--command", default="", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        worker(args)
        return
    args.workdir.mkdir(parents=True, exist_ok=True)
    data = args.workdir / "clicks.tsv"
    if not data.exists():
        subprocess.run(
            [sys.executable, "-m", "deepfm", "synth", "--rows", str(args.rows), "--out", str(data), "--quiet"],
            check=True,
        )
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc-per-node",
        str(args.nproc),
        __file__,
        "--worker",
        "--rows",
        str(args.rows),
        "--batch",
        str(args.batch),
        "--row-wise-min-rows",
        str(args.row_wise_min_rows),
        "--workdir",
        str(args.workdir),
    ]
    if args.json is not None:
        command = " ".join(["python benchmarks/sharded.py", *sys.argv[1:]])
        cmd += ["--json", str(args.json.resolve()), "--command", command]
    subprocess.run(cmd, check=True, env={**os.environ, "PYTHONPATH": str(ROOT)})


if __name__ == "__main__":
    main()
