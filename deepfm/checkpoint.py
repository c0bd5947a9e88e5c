"""Crash-safe files: atomic writes, and the training checkpoint.

A checkpoint is one safetensors file: the tensors a Trainer needs to carry on exactly where it
stopped (weights, both optimizers' moments, the best weights so far, the torch RNG, the
predictions of the epoch in progress) plus a JSON header with the rest (epoch, batches done,
history, learning rates). It is written to a temporary file, fsynced and renamed over the
last one, so a kill at any moment leaves either the old checkpoint or the new one, whole.
Nothing in it is pickled: loading it cannot run code.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load, save

from deepfm.errors import TrainingError

CHECKPOINT = "checkpoint.safetensors"  # in the run's output folder while it trains
RUN = "run.json"  # how the run was started: what `deepfm train --resume` starts again


def write_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that a crash leaves the old file or the new one: a
    temporary file, fsync, rename, fsync of the folder (so the rename itself is durable)."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def save_checkpoint(path: Path, tensors: dict[str, torch.Tensor], state: dict[str, Any]) -> None:
    """Atomically write tensors (any device) and a JSON-able ``state`` to one file."""
    cpu = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
    write_atomic(path, save(cpu, metadata={"state": json.dumps(state)}))


def load_checkpoint(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """(tensors, state) of a checkpoint; a damaged file is a TrainingError naming it."""
    try:
        data = Path(path).read_bytes()
        tensors = load(data)
        header_len = int.from_bytes(data[:8], "little")
        metadata = json.loads(data[8 : 8 + header_len]).get("__metadata__", {})
        state = json.loads(metadata["state"])
    except (OSError, SafetensorError, ValueError, KeyError) as exc:
        raise TrainingError(f"{path}: not a readable deepfm checkpoint ({exc}); start the run again without --resume") from None
    return tensors, state
