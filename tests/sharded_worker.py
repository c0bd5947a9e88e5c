"""One rank of a sharded-table training run, started by tests/test_sharded.py under torchrun.

    torchrun --standalone --nproc-per-node N tests/sharded_worker.py DATA OUT

Every rank encodes the same data, builds the same seeded DeepFM, loads it into a
ShardedDeepFM (one table per field, "user" split row-wise, the others placed whole), checks
that both give the same logits, trains 3 epochs at a global batch of 256 rows and writes
(rank 0) the trained weights, a Bundle and what each rank held to OUT.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
import torch.distributed as dist
from safetensors.torch import save_file

from deepfm.bundle import Bundle
from deepfm.model.deepfm import DeepFM, InputLayout
from deepfm.training import prepare
from deepfm.training.sharded import ShardedDeepFM, field_tables, rank_batches

from helpers import simple_schema, small_config

GLOBAL_BATCH = 256


def main() -> None:
    data, out = Path(sys.argv[1]), Path(sys.argv[2])
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    torch.set_num_threads(1)
    config = small_config(simple_schema(), model={"embedding_dim": 4, "hidden": (16,), "dropout": 0.0})
    pipeline, parts = prepare(config, data, out / f"encoded-{rank}", split=(0.8, 0.2, 0.0))
    layout = InputLayout.of(pipeline)
    tables = field_tables(pipeline)
    torch.manual_seed(7)
    start = DeepFM(layout, config.model)
    user_rows = next(t.rows for t in tables if t.name == "user")
    sharded = ShardedDeepFM(layout, config.model, tables, lr=0.01, table_lr=0.05, row_wise_min_rows=user_rows)
    sharded.load_from(start)

    # The same model: logits of this rank's rows equal the plain model's.
    probe = parts.valid.batch(slice(rank * 64, rank * 64 + 64))
    gap = float((sharded.logits(probe) - start(probe)).abs().max())

    losses = []
    for epoch in range(3):
        total = torch.zeros(2, dtype=torch.float64)
        for batch in rank_batches(parts.train, GLOBAL_BATCH, seed=100 + epoch):
            total += torch.tensor([sharded.step(batch, GLOBAL_BATCH), len(batch)], dtype=torch.float64)
        dist.all_reduce(total)
        losses.append(float(total[0] / total[1]))

    held = torch.zeros(world, dtype=torch.int64)
    held[rank] = sharded.local_rows()
    dist.all_reduce(held)
    trained = sharded.to_deepfm()  # collective: every rank
    if rank == 0:
        with torch.no_grad():
            scores = torch.sigmoid(trained(parts.valid.batch(slice(0, len(parts.valid))))).numpy()
        save_file(dict(trained.state_dict()), str(out / "weights.safetensors"))
        Bundle(config, pipeline, trained).save(out / "bundle")
        report = {
            "world": world,
            "logit_gap_before_training": gap,
            "epoch_loss": losses,
            "valid_scores": scores.tolist(),
            "valid_labels": parts.valid.labels.tolist(),
            "rows_held": held.tolist(),
            "num_embeddings": layout.num_embeddings,
            "placement": sharded.placement,
        }
        (out / "report.json").write_text(json.dumps(report))
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
