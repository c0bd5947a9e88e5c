"""Crash-safe training: a run killed with SIGKILL at any moment carries on with
`deepfm train --resume` and ends with the same weights, bit for bit, as a run never stopped;
a NaN loss stops training and keeps the last good checkpoint; resuming refuses what would
not be the same run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from deepfm.errors import ConfigError, DataError, TrainingError
from deepfm.training import Trainer, resume, train
from deepfm.training.checkpoint import CHECKPOINT, load_checkpoint, read_checkpoint_state
from deepfm.training.inputs import RUN

from helpers import nan_loss_at_step, simple_records, simple_schema, small_config, write_records_csv

# Long enough (4 epochs of ~150 steps) that a kill lands inside an epoch; dropout so the
# RNG state is part of what must be restored.
ARGS = [
    "--split",
    "0.8,0.1,0.1",
    "--epochs",
    "4",
    "--patience",
    "4",
    "--batch-size",
    "32",
    "--hidden",
    "32,32",
    "--dropout",
    "0.2",
    "--embedding-dim",
    "8",
    "--threads",
    "1",
    "--checkpoint-every",
    "7",
    "--quiet",
    "--no-cache",
]


def cli(*args: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "deepfm", *map(str, args)], check=True, capture_output=True, text=True)


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The data and an uninterrupted run of the same command."""
    tmp = tmp_path_factory.mktemp("resume")
    data = write_records_csv(tmp / "clicks.csv", simple_records(6000, seed=3))
    cli("train", "--data", data, "--out", tmp / "ref", *ARGS)
    return data, tmp / "ref"


def wait_then_kill(proc: subprocess.Popen[bytes], out: Path, when: str) -> dict:
    """SIGKILL the training process at the moment named by ``when``; returns the progress of
    the checkpoint it leaves ({} if none)."""
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        assert proc.poll() is None, "training ended before the kill: the run is too short for this test"
        if when == "before any checkpoint" and (out / RUN).exists():
            break
        if (out / CHECKPOINT).exists() and when != "before any checkpoint":
            # Read while training replaces it: one open file's header, whole every time.
            progress = read_checkpoint_state(out / CHECKPOINT)["progress"]
            if (when == "in epoch 1" and progress["batch"] > 0) or (
                when == "later epoch" and progress["epoch"] >= 2 and progress["batch"] > 40
            ):
                break
        time.sleep(0.005)
    proc.kill()
    proc.wait()
    return read_checkpoint_state(out / CHECKPOINT)["progress"] if (out / CHECKPOINT).exists() else {}


@pytest.mark.parametrize("when", ["before any checkpoint", "in epoch 1", "later epoch"])
def test_kill_9_then_resume_gives_identical_weights(reference: tuple[Path, Path], tmp_path: Path, when: str) -> None:
    data, ref = reference
    out = tmp_path / "run"
    proc = subprocess.Popen(
        [sys.executable, "-m", "deepfm", "train", "--data", str(data), "--out", str(out), *ARGS],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    progress = wait_then_kill(proc, out, when)
    assert not (out / "manifest.json").exists()  # killed before it finished
    if when != "before any checkpoint":
        assert progress["batch"] > 0  # the checkpoint is from inside an epoch
    cli("train", "--resume", out, "--quiet")

    # Bit for bit on any CPU: the resumed run repeats the reference's steps on the same batches
    # (same shapes), on one thread (--threads 1), so every kernel sums in the same order.
    got, want = load_file(out / "model.safetensors"), load_file(ref / "model.safetensors")
    assert got.keys() == want.keys()
    for k in want:
        assert torch.equal(got[k], want[k]), f"{k} differs after the resume ({when})"
    got_m, want_m = (json.loads((d / "metrics.json").read_text()) for d in (out, ref))
    for key in ("train_loss", "valid_auc", "lr"):
        assert [e[key] for e in got_m["history"]] == [e[key] for e in want_m["history"]]
    assert [p["loss"] for p in got_m["train_curve"]] == [p["loss"] for p in want_m["train_curve"]]
    assert not (out / CHECKPOINT).exists() and not (out / RUN).exists()  # finished: nothing left to resume


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data = write_records_csv(tmp_path / "d.csv", simple_records(2000, seed=1))
    config = small_config(simple_schema(), epochs=3, batch_size=32, checkpoint_every=5)
    real_step = nan_loss_at_step(monkeypatch, 23)
    out = tmp_path / "run"
    with pytest.raises(
        TrainingError, match=r"loss became nan in epoch 1 \(step 23\); the last good checkpoint is kept in .*checkpoint"
    ):
        train(config, data, out, split="0.8,0.2", cache=False)
    tensors, state = load_checkpoint(out / CHECKPOINT)
    assert state["progress"]["steps"] == 20  # the last multiple of 5 before the bad step
    assert all(bool(torch.isfinite(t.float()).all()) for t in tensors.values())
    assert not (out / "manifest.json").exists()

    monkeypatch.setattr(Trainer, "step", real_step)  # the fault is gone: carry on, with a smaller step
    bundle = resume(out, {"lr": 0.005})
    assert bundle.metrics["epochs"] == 3 and (out / "manifest.json").exists()


def test_resume_refuses_what_would_not_be_the_same_run(tmp_path: Path) -> None:
    data = write_records_csv(tmp_path / "d.csv", simple_records(800, seed=2))
    config = small_config(simple_schema(), epochs=1, checkpoint_every=5)
    done = tmp_path / "done"
    train(config, data, done, split="0.8,0.2", cache=False)
    with pytest.raises(ConfigError, match="nothing to resume .* finished model"):
        resume(done)

    # An interrupted run: run.json and a checkpoint are there.
    out = tmp_path / "run"
    out.mkdir()
    (out / RUN).write_text((done / "config.json").read_text())  # not a run description
    with pytest.raises(ConfigError, match="not a run description"):
        resume(out)
    (out / CHECKPOINT).write_bytes(b"\x00" * 100)
    with pytest.raises(ConfigError, match="checkpoint of an interrupted run"):
        train(config, data, out, split="0.8,0.2", cache=False)

    with pytest.raises(ConfigError, match="seed cannot change"):
        resume_after_kill(tmp_path, data, config, overrides={"seed": 3})
    os.utime(data, ns=(1, 1))  # the data changed since the run started
    with pytest.raises(DataError, match="data files changed"):
        resume_after_kill(tmp_path, data, config)


@pytest.mark.parametrize("keep", [0.5, 0.99, 0.001])  # cut in the tensors, at their end, in the header
def test_damaged_checkpoint_is_refused_with_its_name(tmp_path: Path, keep: float) -> None:
    data = write_records_csv(tmp_path / "d.csv", simple_records(800, seed=2))
    config = small_config(simple_schema(), epochs=1, checkpoint_every=5)
    out = run_until_checkpoint(tmp_path, data, config)
    assert (out / CHECKPOINT).exists()
    state = read_checkpoint_state(out / CHECKPOINT)
    assert state == load_checkpoint(out / CHECKPOINT)[1] and state["progress"]["steps"] > 0
    blob = (out / CHECKPOINT).read_bytes()
    (out / CHECKPOINT).write_bytes(blob[: int(len(blob) * keep)])  # truncated
    with pytest.raises(TrainingError, match=f"{CHECKPOINT}: not a readable deepfm checkpoint"):
        resume(out)
    if keep < 0.01:
        with pytest.raises(TrainingError, match=f"{CHECKPOINT}: not a readable deepfm checkpoint"):
            read_checkpoint_state(out / CHECKPOINT)


def test_checkpoint_round_trip_owns_its_tensors(tmp_path: Path) -> None:
    """What load_checkpoint returns is a copy: a checkpoint file changed afterwards (the next
    one written over it, a disk fault) cannot change a loaded trainer's state."""
    from deepfm.training.checkpoint import save_checkpoint

    tensors = {"w": torch.arange(4096, dtype=torch.float32), "ids": torch.arange(7)}
    save_checkpoint(tmp_path / CHECKPOINT, tensors, {"epoch": 3})
    assert not (tmp_path / (CHECKPOINT + ".tmp")).exists()
    loaded, state = load_checkpoint(tmp_path / CHECKPOINT)
    assert state == {"epoch": 3} and all(torch.equal(loaded[k], tensors[k]) for k in tensors)
    with open(tmp_path / CHECKPOINT, "r+b") as f:  # overwrite the data in place
        f.seek(-8192, os.SEEK_END)
        f.write(bytes(8192))
    assert torch.equal(loaded["w"], tensors["w"])


def run_until_checkpoint(tmp_path: Path, data: Path, config) -> Path:  # type: ignore[no-untyped-def]
    """A run stopped (by an exception, as a crash would) right after its first checkpoint."""
    out = tmp_path / "stopped"

    class Crash(Exception):
        pass

    def crash(row: dict) -> None:
        raise Crash

    with pytest.raises(Crash):
        train(config, data, out, split="0.8,0.2", cache=False, on_epoch=crash)
    assert (out / RUN).exists()
    return out


def resume_after_kill(tmp_path: Path, data: Path, config, overrides: dict | None = None):  # type: ignore[no-untyped-def]
    out = tmp_path / "stopped"
    if not (out / RUN).exists():
        run_until_checkpoint(tmp_path, data, config)
    return resume(out, overrides)
