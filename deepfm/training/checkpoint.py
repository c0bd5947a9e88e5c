"""The training checkpoint.

A checkpoint is one safetensors file: the tensors a Trainer needs to carry on exactly where it
stopped (weights, both optimizers' moments, the best weights so far, the torch RNG, the
predictions of the epoch in progress) plus a JSON header with the rest (epoch, batches done,
history, learning rates). It is written to a temporary file, fsynced and renamed over the
last one, so a kill at any moment leaves either the old checkpoint or the new one, whole.
Nothing in it is pickled: loading it cannot run code.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from deepfm.errors import TrainingError
from deepfm.util.files import atomic_path

CHECKPOINT = "checkpoint.safetensors"  # in the run's output folder while it trains
RUN = "run.json"  # how the run was started: what `deepfm train --resume` starts again


def save_checkpoint(path: Path, tensors: dict[str, torch.Tensor], state: dict[str, Any]) -> None:
    """Atomically write tensors (any device) and a JSON-able ``state`` to one file."""
    cpu = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
    # save_file (safetensors 0.8 and newer, pyproject.toml) writes from the tensors' own
    # memory; save(), and save_file before 0.8, built the whole file in memory twice over (the
    # table, its best copy and both Adam moments: GBs at Criteo size).
    with atomic_path(path) as tmp:
        save_file(cpu, tmp, metadata={"state": json.dumps(state)})


def load_checkpoint(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """(tensors, state) of a checkpoint; a damaged file is a TrainingError naming it."""
    try:
        # Memory-mapped, each tensor copied out once (get_tensor's tensors share the file's
        # pages, which the next checkpoint must not be able to touch).
        with safe_open(path, framework="pt") as f:
            state = json.loads((f.metadata() or {})["state"])
            tensors = {k: f.get_tensor(k).clone() for k in f.keys()}
    except (OSError, SafetensorError, ValueError, KeyError, TypeError) as exc:
        raise TrainingError(f"{path}: not a readable deepfm checkpoint ({exc}); start the run again without --resume") from None
    return tensors, state
