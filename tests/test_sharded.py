"""Sharded embedding tables (torchrec DistributedModelParallel, gloo on CPU): 2 processes,
one table split row-wise and the others placed whole, train to the same weights as 1 process
at the same global batch; each rank holds only its share of the rows; the result is a plain
DeepFM bundle. Needs torchrec and fbgemm-gpu-cpu (the [shard] extra, torchrec --no-deps)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from sklearn.metrics import roc_auc_score

from deepfm.training.sharded import FieldTable, plan_tables

from helpers import REPO, simple_records, simple_schema, write_records_csv


def test_plan_splits_large_tables_and_balances_the_rest() -> None:
    tables = [
        FieldTable("a", 0, 5000, "sum"),
        FieldTable("b", 5000, 40, "sum"),
        FieldTable("c", 5040, 30, "sum"),
        FieldTable("d", 5070, 20, "mean"),
        FieldTable("e", 5090, 10, "sum"),
    ]
    plan = plan_tables(tables, world=2, row_wise_min_rows=1000)
    assert plan["a"] == ("row_wise", [0, 1])
    whole = {n: ranks[0] for n, (how, ranks) in plan.items() if how == "table_wise"}
    assert set(whole) == {"b", "c", "d", "e"}
    load = [sum(t.rows for t in tables if whole.get(t.name) == r) for r in (0, 1)]
    assert sorted(load) == [50, 50]  # largest first onto the lighter rank: 40+10 and 30+20
    # one process: everything whole on rank 0, however large
    assert all(p == ("table_wise", [0]) for p in plan_tables(tables, world=1, row_wise_min_rows=1000).values())


def _torchrun(n: int, data: Path, out: Path) -> dict:
    env = {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{REPO / 'tests'}", "OMP_NUM_THREADS": "1"}
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc-per-node",
        str(n),
        str(REPO / "tests" / "sharded_worker.py"),
        str(data),
        str(out),
    ]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    return json.loads((out / "report.json").read_text())


def test_two_processes_with_sharded_tables_match_one(tmp_path: Path) -> None:
    from deepfm.bundle import Bundle
    from deepfm.errors import ConfigError
    from deepfm.training.sharded import require_torchrec

    try:
        require_torchrec()
    except ConfigError as e:
        pytest.skip(str(e))

    data = write_records_csv(tmp_path / "d.csv", simple_records(6000, seed=3))
    one = _torchrun(1, data, tmp_path / "one")
    two = _torchrun(2, data, tmp_path / "two")

    # The sharded model is DeepFM: before any step its logits are the plain model's.
    assert one["logit_gap_before_training"] < 1e-5 and two["logit_gap_before_training"] < 1e-5
    # Placement: "user" split over both ranks, every other field whole on one of them.
    assert two["placement"]["user"] == ["row_wise", [0, 1]]
    whole = {n: ranks for n, (how, ranks) in two["placement"].items() if how == "table_wise"}
    assert set(whole) == set(simple_schema().names) - {"user"} and {r[0] for r in whole.values()} == {0, 1}
    # Each rank holds part of the rows, and together exactly the table: no replica.
    n = two["num_embeddings"]
    assert sum(two["rows_held"]) == n and max(two["rows_held"]) < n and min(two["rows_held"]) > 0
    assert one["rows_held"] == [n]

    # The same steps on the same rows: equal losses and weights up to float summation order.
    assert two["epoch_loss"] == pytest.approx(one["epoch_loss"], rel=1e-4)
    assert two["epoch_loss"][-1] < two["epoch_loss"][0]
    a, b = (
        load_file(str(tmp_path / "one" / "weights.safetensors")),
        load_file(str(tmp_path / "two" / "weights.safetensors")),
    )
    assert set(a) == set(b) and all(torch.allclose(a[k], b[k], atol=1e-4) for k in a)
    auc_one = roc_auc_score(one["valid_labels"], one["valid_scores"])
    auc_two = roc_auc_score(two["valid_labels"], two["valid_scores"])
    assert auc_two == pytest.approx(auc_one, abs=0.003) and auc_two > 0.75  # it learned the planted signal

    # Rank 0 saved an ordinary bundle: it loads and holds the trained weights.
    bundle = Bundle.load(tmp_path / "two" / "bundle")
    assert torch.equal(bundle.model.embedding.weight.detach(), b["embedding.weight"])
