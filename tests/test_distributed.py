"""Data-parallel training: 2 CPU processes (gloo, launched through torchrun by --nproc) reach
the test AUC of 1 process at the same global batch size, with the same tables; each rank's
part of a global batch is what one process would have drawn."""

from __future__ import annotations

import functools
import json
import math
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

from deepfm.data.encoded import EpochOrder
from deepfm.training import train
from deepfm.training.distributed import Context, global_batches, my_slice

from helpers import REPO, kill_in_epoch, simple_records, simple_schema, small_config, spawn_ranks, write_records_csv

yaml = pytest.importorskip("yaml")


def test_ranks_split_each_global_batch() -> None:
    order = EpochOrder(1003, seed=5, block=128)  # global batches straddle blocks
    ranks = [list(global_batches(order, 100, Context(rank=r, world=3))) for r in range(3)]
    assert len({len(parts) for parts in ranks}) == 1  # every rank steps alike
    for i, start in enumerate(range(0, 1003, 300)):  # the global batches one process would draw
        together = np.concatenate([parts[i][0] for parts in ranks])
        assert np.array_equal(together, np.sort(order[start : start + 300]))
        assert {parts[i][1] for parts in ranks} == {len(order[start : start + 300])}  # each rank knows the global size
    # a last global batch of 2 rows cannot give 3 ranks a row each: left out on every rank
    assert [len(list(global_batches(EpochOrder(302, 1), 100, Context(rank=r, world=3)))) for r in range(3)] == [1, 1, 1]
    assert sum(len(range(1003)[my_slice(1003, Context(rank=r, world=3))]) for r in range(3)) == 1003


# Without dropout both runs take the same steps: the weights match too. With the defaults
# (dropout 0.2, L2 on the rows used, which are then gathered too) each rank draws its own
# masks, so only the AUC can match. No batch norm: each rank normalizes by its own part of
# the batch (as DistributedDataParallel does), which one process does not.
@pytest.mark.parametrize(("l2_embedding", "dropout"), [(0.0, 0.0), (1e-5, 0.2)])
def test_two_processes_match_one_at_equal_global_batch(tmp_path: Path, l2_embedding: float, dropout: float) -> None:
    data = write_records_csv(tmp_path / "d.csv", simple_records(6000, seed=3))
    fields = tuple(replace(f, hash_buckets=64) if f.name == "user" else f for f in simple_schema().fields)
    model = {"dropout": dropout, "batch_norm": False}
    config = small_config(replace(simple_schema(), fields=fields), model, epochs=2, l2_embedding=l2_embedding)
    one = train(
        replace(config, train=replace(config.train, batch_size=256)), data, tmp_path / "one", split="0.7,0.15,0.15"
    )

    cfg_file = tmp_path / "two.yaml"
    two_config = replace(config, train=replace(config.train, batch_size=128))  # x 2 processes = 256
    cfg_file.write_text(yaml.safe_dump(two_config.to_dict()))
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    command = [
        sys.executable,
        "-m",
        "deepfm",
        "train",
        "--config",
        str(cfg_file),
        "--data",
        str(data),
        "--split",
        "0.7,0.15,0.15",
        "--out",
        str(tmp_path / "two"),
        "--cache-dir",
        str(tmp_path / "cache"),
        "--nproc",
        "2",
        "--quiet",
    ]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]

    metrics = json.loads((tmp_path / "two" / "metrics.json").read_text())
    assert metrics["world_size"] == 2 and metrics["batch_size"] == 128
    assert metrics["test_auc"] == pytest.approx(one.metrics["test_auc"], abs=0.003)
    assert 0.75 < metrics["test_auc"] < 0.95  # a model that learned the planted signal
    if dropout == 0.0:  # the same steps on the same rows: the tables differ only by float summation order
        a = load_file(str(tmp_path / "one" / "model.safetensors"))
        b = load_file(str(tmp_path / "two" / "model.safetensors"))
        assert set(a) == set(b) and all(torch.allclose(a[k], b[k], atol=1e-4) for k in a)
    # The learning curve's positions count every rank's rows: the same as one process's.
    positions = [p["epoch"] for p in metrics["train_curve"]]
    assert positions == pytest.approx([p["epoch"] for p in one.metrics["train_curve"]])
    assert positions[-1] == 2.0 and 1.0 in positions and positions == sorted(positions)
    # only rank 0 wrote, and it cleaned up what a finished run leaves no need for
    leftovers = {p.name for p in (tmp_path / "two").iterdir()}
    assert "run.json" not in leftovers and "checkpoint.safetensors" not in leftovers and "manifest.json" in leftovers
    assert done.stdout.count('"test_auc"') == 1  # one summary, from rank 0


def test_nproc_must_be_positive(capsys: pytest.CaptureFixture[str]) -> None:
    from deepfm.cli import main

    assert main(["train", "--data", "x.csv", "--nproc", "0"]) == 2
    assert "--nproc must be at least 1" in capsys.readouterr().err


def test_nproc_checks_the_config_before_it_starts_any_process(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from deepfm.cli import main
    from deepfm.cli import train as cli_train

    monkeypatch.setattr(cli_train, "_launch", lambda *a: pytest.fail("launched processes for a config that cannot run"))
    data = write_records_csv(tmp_path / "d.csv", simple_records(50, seed=1))
    bad = tmp_path / "bad.yaml"
    bad.write_text("model:\n  embedding_dim: -4\n")
    assert main(["train", "--data", str(data), "--config", str(bad), "--nproc", "2", "--out", str(tmp_path / "m")]) == 2
    assert (
        capsys.readouterr().err.strip()
        == f"deepfm train: error: {bad}: model.embedding_dim must be a positive integer, got -4"
    )
    assert (
        main(["train", "--data", str(data), "--nproc", "2", "--neg-sample-rate", "2", "--out", str(tmp_path / "m")])
        == 2
    )
    assert "--neg-sample-rate must be in (0, 1], got 2" in capsys.readouterr().err
    assert main(["train", "--resume", str(tmp_path / "m"), "--nproc", "2", "--data", str(data)]) == 2
    assert "--resume carries on the run as it was started; leave out --data" in capsys.readouterr().err
    # what train() would refuse on every rank (parse_split, the files, an interrupted run)
    assert main(["train", "--data", str(data), "--nproc", "2", "--split", "0.5,0.6", "--out", str(tmp_path / "m")]) == 2
    assert "--split fractions must add up to 1" in capsys.readouterr().err
    # (a preset reads nothing before training; an inferred schema would read the file first)
    assert (
        main(
            [
                "train",
                "--data",
                str(tmp_path / "nope.csv"),
                "--preset",
                "criteo",
                "--nproc",
                "2",
                "--out",
                str(tmp_path / "m"),
            ]
        )
        == 2
    )
    assert f"{tmp_path / 'nope.csv'}: file not found (the data file)" in capsys.readouterr().err
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "checkpoint.safetensors").write_bytes(b"")
    assert main(["train", "--data", str(data), "--nproc", "2", "--out", str(tmp_path / "m")]) == 2
    assert "holds the checkpoint of an interrupted run" in capsys.readouterr().err


def test_a_run_resumes_only_in_as_many_processes_as_it_started_in(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The checkpoint counts global batches (--batch-size x processes): another process count
    would skip the wrong rows, so run.json and the checkpoint both refuse it."""
    from deepfm.cli import main
    from deepfm.cli import train as cli_train
    from deepfm.errors import ConfigError, TrainingError
    from deepfm.training import Trainer, resume
    from deepfm.training.checkpoint import CHECKPOINT, load_checkpoint, restore_trainer

    from helpers import nan_loss_at_step

    monkeypatch.setattr(cli_train, "_launch", lambda *a: pytest.fail("launched processes for a run that cannot resume"))
    data = write_records_csv(tmp_path / "d.csv", simple_records(800, seed=2))
    config = small_config(simple_schema(), checkpoint_every=2, batch_size=64)
    real_step = nan_loss_at_step(monkeypatch, 5)
    with pytest.raises(TrainingError):
        train(config, data, tmp_path / "run", split="0.8,0.2", cache=False)
    monkeypatch.setattr(Trainer, "step", real_step)
    assert json.loads((tmp_path / "run" / "run.json").read_text())["world_size"] == 1
    assert main(["train", "--resume", str(tmp_path / "run"), "--nproc", "2"]) == 2
    err = capsys.readouterr().err
    assert "was started in 1 process(es) and must carry on in as many" in err and "resume it with no --nproc" in err
    # A checkpoint of 2 processes, resumed in 1: refused by the trainer too (run.json aside).
    run = json.loads((tmp_path / "run" / "run.json").read_text())
    (tmp_path / "run" / "run.json").write_text(json.dumps({**run, "world_size": 2}))
    with pytest.raises(ConfigError, match="started in 2 process.*resume it with --nproc 2"):
        resume(tmp_path / "run")
    tensors, state = load_checkpoint(tmp_path / "run" / CHECKPOINT)
    trainer = Trainer(_tiny_model("deepfm"), config.train, torch.device("cpu"))  # refused before any weight is read
    with pytest.raises(TrainingError, match="written by a run of 2 process"):
        restore_trainer(trainer, tensors, {**state, "world_size": 2})
    # Taken inside an epoch by a deepfm that ordered epochs differently: its skip would be wrong.
    assert state["progress"]["batch"] > 0
    with pytest.raises(TrainingError, match="ordered an epoch's rows differently"):
        restore_trainer(trainer, tensors, {k: v for k, v in state.items() if k != "epoch_order"})


@pytest.mark.skipif(sys.platform != "linux", reason="finds the ranks to kill in /proc")
def test_two_process_run_killed_then_resumed_gives_the_same_weights(tmp_path: Path) -> None:
    """SIGKILL the whole torchrun group inside an epoch, resume it with --nproc 2: the weights
    are those of the 2-process run never stopped (every rank restores rank 0's checkpoint)."""

    data = write_records_csv(tmp_path / "d.csv", simple_records(4000, seed=8))
    args = [
        "--data",
        str(data),
        "--split",
        "0.8,0.1,0.1",
        "--epochs",
        "2",
        "--batch-size",
        "16",
        "--hidden",
        "16",
        "--dropout",
        "0.2",
        "--embedding-dim",
        "4",
        "--threads",
        "1",
        "--checkpoint-every",
        "5",
        "--quiet",
        "--no-cache",
        "--nproc",
        "2",
    ]
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    run = functools.partial(subprocess.run, env=env, capture_output=True, text=True, timeout=300)
    assert run([sys.executable, "-m", "deepfm", "train", "--out", str(tmp_path / "ref"), *args]).returncode == 0

    out = tmp_path / "run"
    proc = subprocess.Popen(
        [sys.executable, "-m", "deepfm", "train", "--out", str(out), *args],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    kill_in_epoch(proc, out, epoch=2)
    done = run([sys.executable, "-m", "deepfm", "train", "--resume", str(out), "--nproc", "2", "--quiet"])
    assert done.returncode == 0, done.stderr[-3000:]
    got, want = load_file(str(out / "model.safetensors")), load_file(str(tmp_path / "ref" / "model.safetensors"))
    # The resumed ranks repeat the reference's steps on the same batches with the same threads.
    assert got.keys() == want.keys() and all(torch.equal(got[k], want[k]) for k in want)


def _ddp_steps(rank: int, world: int) -> dict[str, Any]:
    """Two steps of a global batch of 7 rows cut 4 / 3, through deepfm.distributed.data_parallel:
    the gradients of the dense part after each."""
    from deepfm.training.distributed import data_parallel

    torch.manual_seed(0)
    module = _TwoPart()
    ddp = data_parallel(module, list(module.mlp.parameters()))
    x, y = _ddp_data()
    parts = np.array_split(np.arange(7), world)[rank]
    grads = []
    for _ in range(2):  # a second step fails if DDP waited for the ignored table's gradient
        module.zero_grad(set_to_none=True)
        loss = F.binary_cross_entropy_with_logits(ddp(x[parts]), y[parts])
        (loss * (len(parts) / 7)).backward()
        grads.append(module.mlp.weight.grad.clone())
    assert module.table.weight.grad is None
    return {"grads": grads}


class _TwoPart(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.mlp = torch.nn.Linear(3, 1)
        self.table = torch.nn.Embedding(5, 3)  # like the embedding table: synced otherwise, not by DDP

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.mlp(x).squeeze(1)


def _ddp_data() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return torch.randn(7, 3, generator=g), (torch.rand(7, generator=g) < 0.5).float()


def test_data_parallel_sums_weighted_parts(tmp_path: Path) -> None:
    """Under data_parallel, 2 ranks with uneven parts (4 and 3 rows), each loss weighted by its
    share, get the gradient one process computes on all 7 rows; the ignored table is untouched."""
    got = spawn_ranks(tmp_path, _ddp_steps)["grads"]
    torch.manual_seed(0)
    module = _TwoPart()
    x, y = _ddp_data()
    F.binary_cross_entropy_with_logits(module(x), y).backward()
    assert len(got) == 2
    for g in got:
        assert torch.allclose(g, module.mlp.weight.grad, atol=1e-6)


KINDS = ("lr", "fm", "dnn", "wide_deep", "dcn", "deepfm")


def _tiny_model(kind: str, batch_norm: bool = False) -> Any:
    """The seeded DeepFM the trainer tests step: 3 single fields (one a scaled numeric) and a
    mean-pooled multi-hot field over 40 table rows."""
    from deepfm.config import ModelConfig
    from deepfm.model.deepfm import DeepFM, InputLayout

    torch.manual_seed(0)
    layout = InputLayout(num_embeddings=40, n_single=3, scaled_positions=(2,), poolings=("mean",))
    return DeepFM(
        layout,
        ModelConfig(kind=kind, embedding_dim=4, hidden=(8, 8), dropout=0.0, batch_norm=batch_norm, cross_layers=2),
    )


def _trainer_steps(ctx: Context, kind: str, batch_norm: bool = False) -> Any:
    """Three Trainer steps on global batches of 13 rows (two ranks: parts of 7 and 6), with a
    scaled numeric, a mean-pooled multi-hot field and L2 on the rows. Returns the Trainer."""
    from deepfm.config import TrainConfig
    from deepfm.data.encoded import Batch
    from deepfm.training import Trainer

    g = torch.Generator().manual_seed(3)
    n = 13
    ids = torch.randint(0, 30, (n, 3), generator=g)
    ids[:, 2] = 30  # the scaled numeric's row
    values = torch.randn(n, 1, generator=g)
    bags = [torch.randint(31, 40, (int(k),), generator=g) for k in torch.randint(1, 4, (n,), generator=g)]
    labels = (torch.rand(n, generator=g) < 0.4).float()

    def batch(rows: np.ndarray) -> Batch:
        lengths = torch.tensor([0] + [len(bags[r]) for r in rows])
        bag_ids = torch.cat([bags[r] for r in rows])
        return Batch(ids[rows], values[rows], [(torch.cumsum(lengths, 0)[:-1], bag_ids)], labels[rows])

    model = _tiny_model(kind, batch_norm)
    config = TrainConfig(lr=0.01, embedding_lr=0.01, l2_embedding=1e-3, progress=False, threads=1, device="cpu")
    trainer = Trainer(model, config, torch.device("cpu"), ctx=ctx)
    model.train()
    for step in range(3):
        order = np.random.default_rng(step).permutation(n)
        for rows, global_rows in global_batches(order, math.ceil(n / ctx.world), ctx):  # one global batch of 13
            trainer.step(batch(rows), global_rows)
    return trainer


def _trainer_rank(rank: int, world: int) -> dict[str, Any]:
    import torch.distributed as dist

    from deepfm.training.distributed import broadcast_buffers

    ctx = Context(rank=rank, world=world)
    trainers = {kind: _trainer_steps(ctx, kind) for kind in KINDS}
    states = {kind: t.model.state_dict() for kind, t in trainers.items()}
    # Each rank steps its own copy of the table and RowAdam's moments: they must stay equal.
    tables = {}
    for kind, t in trainers.items():
        mine = torch.cat(
            [
                t.model.embedding.weight.detach().reshape(-1),
                t.row_opt.exp_avg.reshape(-1),
                t.row_opt.exp_avg_sq.reshape(-1),
            ]
        )
        tables[kind] = [torch.zeros_like(mine) for _ in range(world)]
        dist.all_gather(tables[kind], mine)
    # Batch norm: parts normalize with their own statistics, so no match with one process;
    # but DDP keeps the weights equal on both ranks, and scoring takes rank 0's buffers.
    model = _trainer_steps(ctx, "deepfm", batch_norm=True).model
    gathered = [torch.zeros_like(model.dnn.net[0].weight) for _ in range(world)]  # type: ignore[union-attr]
    dist.all_gather(gathered, model.dnn.net[0].weight.detach())  # type: ignore[union-attr]
    bn = next(m for m in model.modules() if isinstance(m, torch.nn.BatchNorm1d))
    means = [torch.zeros_like(bn.running_mean) for _ in range(world)]
    dist.all_gather(means, bn.running_mean)
    broadcast_buffers(model, ctx)
    synced = [torch.zeros_like(bn.running_mean) for _ in range(world)]
    dist.all_gather(synced, bn.running_mean)
    return {"states": states, "tables": tables, "weights": gathered, "means": means, "synced": synced}


def test_trainer_steps_of_two_ranks_match_one_process_for_every_kind(tmp_path: Path) -> None:
    """The Trainer's own step under 2 gloo ranks (DDP on the dense part, gathered rows for
    RowAdam, uneven parts 7 + 6) ends where one process on the whole 13-row batches does,
    for every model kind: dense and table weights alike."""
    got = spawn_ranks(tmp_path, _trainer_rank)
    for kind in KINDS:
        want = _trainer_steps(Context(), kind).model.state_dict()
        assert got["states"][kind].keys() == want.keys()
        for name, value in want.items():
            assert torch.allclose(got["states"][kind][name], value, atol=1e-6), (kind, name)
        before = _tiny_model(kind).state_dict()  # the steps moved the weights, so the match is not trivial
        assert all(not torch.allclose(before[name], want[name], atol=1e-4) for name in ("bias", "embedding.weight"))
        assert torch.equal(got["tables"][kind][0], got["tables"][kind][1]), kind  # bit for bit on both ranks
    assert torch.equal(got["weights"][0], got["weights"][1])
    assert not torch.equal(got["means"][0], got["means"][1])  # each rank updated its own
    assert torch.equal(got["synced"][0], got["synced"][1])


def _train_with_nan_on_rank_1(data: str, out: str, rank: int, world: int) -> dict[str, Any]:
    """deepfm.train on this spawned rank (the group is already up), rank 1's 4th step giving a
    NaN loss; the TrainingError each rank raised."""
    from deepfm.errors import TrainingError

    from helpers import nan_loss_at_step

    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank))
    config = small_config(simple_schema(), checkpoint_every=1, batch_size=64)
    with pytest.MonkeyPatch.context() as monkeypatch:
        if rank == 1:
            nan_loss_at_step(monkeypatch, 4)
        try:
            train(config, data, out, split="0.8,0.2", cache=False)
        except TrainingError as exc:
            return {"error": str(exc)}
    return {"error": None}


def test_nan_loss_on_one_rank_stops_every_rank_before_the_checkpoint(tmp_path: Path) -> None:
    """A NaN on rank 1 has already reached rank 0's weights through the summed gradients:
    both ranks stop at that step, and the checkpoint is the step before, with finite weights."""
    from deepfm.training.checkpoint import CHECKPOINT, load_checkpoint

    data = write_records_csv(tmp_path / "d.csv", simple_records(2000, seed=4))
    got = spawn_ranks(tmp_path, functools.partial(_train_with_nan_on_rank_1, str(data), str(tmp_path / "run")))
    assert got["error"] is not None and "training loss became nan on another rank in epoch 1 (step 4)" in got["error"]
    tensors, state = load_checkpoint(tmp_path / "run" / CHECKPOINT)
    assert state["progress"]["steps"] == 3 and state["world_size"] == 2
    assert all(torch.isfinite(v).all() for k, v in tensors.items() if k.startswith("model."))
    assert tensors["rng.torch"].shape[0] == 2 and not torch.equal(tensors["rng.torch"][0], tensors["rng.torch"][1])
