"""deepfm train --nproc N --shard-tables: the Trainer over torchrec-sharded tables (gloo on
CPU). 2 processes end where 1 process does at the same global batch, as deepfm.training.sharded's
own test (tests/test_sharded.py) checks; a 2-process run killed inside an epoch and resumed
gives the weights of the run never stopped; bad settings are refused before any process starts.
The runs need torchrec and fbgemm-gpu-cpu (the [shard] extra, torchrec --no-deps)."""

from __future__ import annotations

import functools
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file

from deepfm.training.sharded import FieldTable
from deepfm.training.sharded_trainer import row_wise_min_rows

from helpers import REPO, kill_in_epoch, simple_records, simple_schema, small_config, spawn_ranks, write_records_csv

yaml = pytest.importorskip("yaml")


def test_shard_tables_modes_pick_the_tables_split_row_wise() -> None:
    tables = [FieldTable("a", 0, 60, "sum"), FieldTable("b", 60, 30, "sum"), FieldTable("c", 90, 10, "mean")]
    assert row_wise_min_rows("row", tables, 2) == 0
    assert row_wise_min_rows("table", tables, 2) > 10**9
    # auto: a table larger than a rank's share of all rows (100 / 2) cannot be placed whole
    assert row_wise_min_rows("auto", tables, 2) == 51
    assert row_wise_min_rows("auto", tables, 4) == 26


def test_shard_tables_refuses_what_it_cannot_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from deepfm.cli import main
    from deepfm.cli import train as cli_train

    monkeypatch.setattr(cli_train, "_launch", lambda *a: pytest.fail("launched processes for a run that cannot run"))
    data = write_records_csv(tmp_path / "d.csv", simple_records(50, seed=1))
    base = ["train", "--data", str(data), "--out", str(tmp_path / "m"), "--shard-tables", "row"]
    assert main(base) == 2
    assert "--shard-tables (train.shard_tables) shards the tables over processes: give --nproc N" in (
        capsys.readouterr().err
    )
    assert main([*base, "--nproc", "2"]) == 2  # l2_embedding's default, 1e-5
    assert "row-wise Adagrad, which has no L2 on the rows a batch uses: give --l2-embedding 0" in (
        capsys.readouterr().err
    )
    bad = tmp_path / "bad.yaml"
    bad.write_text("train:\n  shard_tables: rows\n")
    assert main(["train", "--data", str(data), "--config", str(bad), "--nproc", "2"]) == 2
    assert "train.shard_tables must be one of auto, row, table (or unset), got 'rows'" in capsys.readouterr().err
    # The library outside torchrun: refused before the data is read.
    from deepfm.errors import ConfigError
    from deepfm.training import train

    config = small_config(simple_schema(), shard_tables="row", l2_embedding=0.0)
    with pytest.raises(ConfigError, match="--shard-tables trains in a process group"):
        train(config, tmp_path / "no-such-file.csv", tmp_path / "lib")


def _needs_torchrec() -> None:
    from deepfm.errors import ConfigError
    from deepfm.training.sharded import require_torchrec

    try:
        require_torchrec()
    except ConfigError as e:
        pytest.skip(str(e))


def _train(data: Path, out: Path, config: Path, *extra: str, wait: bool = True) -> Any:
    """deepfm train --shard-tables auto on ``data`` into ``out`` (a Popen when not ``wait``)."""
    command = [sys.executable, "-m", "deepfm", "train", "--config", str(config), "--data", str(data)]
    command += ["--split", "0.7,0.15,0.15", "--out", str(out), "--no-cache", "--shard-tables", "auto", "--quiet"]
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    if not wait:
        return subprocess.Popen([*command, *extra], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    done = subprocess.run([*command, *extra], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A 2-process sharded run (global batch 2 x 32 rows), what both tests compare with."""
    _needs_torchrec()
    tmp = tmp_path_factory.mktemp("sharded-train")
    data = write_records_csv(tmp / "d.csv", simple_records(4000, seed=3))
    # No dropout and no batch norm: 1 and 2 processes then take the same steps on the same rows
    # (each rank would draw its own masks, and normalize by its own part).
    model = {"embedding_dim": 4, "hidden": (16,), "dropout": 0.0, "batch_norm": False}
    config = small_config(simple_schema(), model, epochs=3, l2_embedding=0.0, embedding_lr=0.05, checkpoint_every=5)
    cfg = tmp / "config.yaml"
    cfg.write_text(yaml.safe_dump(config.to_dict()))
    done = _train(data, tmp / "two", cfg, "--nproc", "2", "--batch-size", "32")
    return {"tmp": tmp, "data": data, "config": cfg, "out": tmp / "two", "stdout": done.stdout}


def test_two_processes_with_sharded_tables_match_one(two_ranks: dict[str, Any]) -> None:
    tmp, two = two_ranks["tmp"], two_ranks["out"]
    _train(two_ranks["data"], tmp / "one", two_ranks["config"], "--nproc", "1", "--batch-size", "64")
    a, b = (json.loads((tmp / name / "metrics.json").read_text()) for name in ("one", "two"))
    assert (a["world_size"], b["world_size"]) == (1, 2) and b["batch_size"] == 32
    # auto: "user" holds more than half the rows, so it is split over both ranks; the rest go whole.
    placement = b["shard_tables"]["placement"]
    assert placement["user"] == ["row_wise", [0, 1]]
    whole = {name: ranks[0] for name, (how, ranks) in placement.items() if how == "table_wise"}
    assert set(whole) == set(simple_schema().names) - {"user"} and set(whole.values()) == {0, 1}
    assert all(how == "table_wise" for how, _ in a["shard_tables"]["placement"].values())
    # The same steps on the same rows: equal losses and weights up to float summation order
    # (the all-to-alls and the split tables add in another order than one process).
    losses = [[row["train_loss"] for row in m["history"]] for m in (a, b)]
    assert len(losses[0]) == 3 and losses[1] == pytest.approx(losses[0], rel=1e-4) and losses[1][-1] < losses[1][0]
    wa, wb = (load_file(str(tmp / name / "model.safetensors")) for name in ("one", "two"))
    assert wa.keys() == wb.keys() and all(torch.allclose(wa[k], wb[k], atol=1e-4) for k in wa)
    assert b["valid_auc"] == pytest.approx(a["valid_auc"], abs=0.003) and b["test_auc"] > 0.75
    # A plain bundle, written once (rank 0), nothing left to resume.
    from deepfm.bundle import Bundle

    bundle = Bundle.load(two)
    assert torch.equal(bundle.model.embedding.weight.detach(), wb["embedding.weight"])
    assert not (two / "run.json").exists() and not (two / "checkpoint.safetensors").exists()
    assert two_ranks["stdout"].count('"test_auc"') == 1


@pytest.mark.skipif(sys.platform != "linux", reason="finds the ranks to kill in /proc")
def test_sharded_run_killed_then_resumed_gives_the_same_weights(two_ranks: dict[str, Any]) -> None:
    """SIGKILL the 2-process sharded run inside its second epoch, resume it with --nproc 2:
    every rank loads the checkpoint's table and Adagrad state into its shards and repeats the
    uninterrupted run's steps on the same batches with the same threads, so the weights are
    bit for bit the same."""
    out = two_ranks["tmp"] / "killed"
    proc = _train(two_ranks["data"], out, two_ranks["config"], "--nproc", "2", "--batch-size", "32", wait=False)
    kill_in_epoch(proc, out, epoch=2, inside=True)
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "deepfm", "train", "--resume", str(out), "--nproc", "2", "--quiet"]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    got, want = load_file(str(out / "model.safetensors")), load_file(str(two_ranks["out"] / "model.safetensors"))
    assert got.keys() == want.keys() and all(torch.equal(got[k], want[k]) for k in want)
    history = json.loads((out / "metrics.json").read_text())["history"]
    assert [row["epoch"] for row in history] == [1, 2, 3]


def _fall_back_on_ranks(data: str, tmp: str, rank: int, world: int) -> dict[str, Any]:
    """A ShardedTrainer of 2 epochs whose second epoch is judged a fall: what the shards and
    the learning rates are after fit."""
    from deepfm.model.deepfm import DeepFM, InputLayout
    from deepfm.training import prepare
    from deepfm.training.distributed import Context
    from deepfm.training.sharded import field_tables
    from deepfm.training.sharded_trainer import ShardedTrainer
    from deepfm.training.stopping import EarlyStopping, Verdict

    model = {"embedding_dim": 4, "hidden": (16,), "dropout": 0.0, "batch_norm": False}
    config = small_config(simple_schema(), model, epochs=2, l2_embedding=0.0, embedding_lr=0.05, shard_tables="row")
    pipeline, parts = prepare(config, data, Path(tmp) / f"encoded-{rank}", split=(0.8, 0.2, 0.0))
    torch.manual_seed(7)
    trainer = ShardedTrainer(
        DeepFM(InputLayout.of(pipeline), config.model),
        config.train,
        torch.device("cpu"),
        field_tables(pipeline),
        ctx=Context(rank=rank, world=world),
    )
    judge = EarlyStopping.judge

    def first_best_then_fall(self: EarlyStopping, score: float, model: torch.nn.Module) -> Verdict:
        return judge(self, score, model) if self.best_state is None else Verdict.FALL

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(EarlyStopping, "judge", first_best_then_fall)
        trainer.fit(parts.train, parts.valid, 64)
    best = trainer.stopping.best_state
    assert best is not None
    return {
        "shards": trainer.sharded.gather_table(),
        "best": best["embedding.weight"].clone(),
        "table_lr": trainer.sharded.table_lr,
        "dense_lr": trainer.dense_opt.param_groups[0]["lr"],
    }


def test_a_fall_puts_the_best_weights_back_into_the_shards(tmp_path: Path) -> None:
    """After a fall the sharded trainer goes back to the best epoch in its shards too (not
    only in the plain model beside them), with both learning rates decayed."""
    _needs_torchrec()
    data = write_records_csv(tmp_path / "d.csv", simple_records(1500, seed=5))
    got = spawn_ranks(tmp_path, functools.partial(_fall_back_on_ranks, str(data), str(tmp_path)))
    assert torch.equal(got["shards"], got["best"])  # epoch 2's steps undone in the shards
    decay = small_config(simple_schema()).train.lr_decay
    assert got["table_lr"] == pytest.approx(0.05 * decay) and got["dense_lr"] == pytest.approx(0.01 * decay)
