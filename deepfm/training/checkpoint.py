"""The training checkpoint: a Trainer's whole state in one file, and back.

A checkpoint is one safetensors file: the tensors a Trainer needs to carry on exactly where it
stopped (weights, both optimizers' moments, the best weights so far, every rank's torch RNG,
the predictions of the epoch in progress) plus a JSON header with the rest (epoch, batches
done, history, early stopping's score, learning rates). It is written to a temporary file,
fsynced and renamed over the last one, so a kill at any moment leaves either the old
checkpoint or the new one, whole. Nothing in it is pickled: loading it cannot run code.

Tensors: ``model.*``, ``best.*``, ``adam.<i>.<name>``, ``rowadam.exp_avg`` and
``rowadam.exp_avg_sq`` (sharded tables: ``adagrad.state``), ``rng.torch`` (world, S) and on CUDA ``rng.cuda``, ``epoch.labels``
and ``epoch.logits``. Header (``state``): ``progress``, ``history``, ``adam_groups``,
``rowadam`` (sharded tables: ``adagrad``), ``world_size`` and ``epoch_order`` (CHANGELOG.md has the history of both).
"""

from __future__ import annotations

import dataclasses
import json
import struct
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from torch import nn
from torch.profiler import record_function

from deepfm.errors import TrainingError
from deepfm.training.distributed import Context
from deepfm.training.progress import EpochProgress, History
from deepfm.training.stopping import EarlyStopping
from deepfm.util.files import atomic_path

CHECKPOINT = "checkpoint.safetensors"  # in the run's output folder while it trains
# The epoch order's version (data.encoded.EpochOrder; 1: the full permutation of deepfm before
# it, drawn differently): a checkpoint taken inside an epoch skips that epoch's first batches,
# which must be the same batches when it resumes.
EPOCH_ORDER = 2


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
    # RuntimeError: safetensors' word for a file shorter than its header says (cut off).
    except (OSError, SafetensorError, RuntimeError, ValueError, KeyError, TypeError) as exc:
        raise TrainingError(
            f"{path}: not a readable deepfm checkpoint ({exc}); start the run again without --resume"
        ) from None
    return tensors, state


def read_checkpoint_state(path: Path) -> dict[str, Any]:
    """The JSON ``state`` of a checkpoint, without its tensors. It reads one open file, so it
    is safe to call while training replaces the checkpoint (safe_open may see the old file's
    header and the new file's size); a damaged file is a TrainingError naming it."""
    try:
        with open(path, "rb") as f:
            # The safetensors layout: a little-endian u64 header length, then the JSON header.
            (n,) = struct.unpack("<Q", f.read(8))
            header = json.loads(f.read(n))
        state: dict[str, Any] = json.loads(header["__metadata__"]["state"])
    except (OSError, struct.error, ValueError, KeyError, TypeError) as exc:
        raise TrainingError(f"{path}: not a readable deepfm checkpoint ({exc})") from None
    return state


# ---------------------------------------------------------------- a Trainer's state
class TrainerState(Protocol):
    """What a checkpoint holds of a :class:`deepfm.training.trainer.Trainer`."""

    # Read-only (properties) where a Trainer's own attribute is a narrower type (a DeepFM).
    @property
    def model(self) -> nn.Module: ...
    @property
    def device(self) -> torch.device: ...
    @property
    def ctx(self) -> Context: ...
    @property
    def dense_opt(self) -> torch.optim.Optimizer: ...
    @property
    def stopping(self) -> EarlyStopping: ...
    def table_optimizer_state(self) -> tuple[dict[str, torch.Tensor], dict[str, Any]]: ...
    def load_table_optimizer_state(self, tensors: dict[str, torch.Tensor], state: dict[str, Any]) -> None: ...

    progress: EpochProgress  # restored in place
    history: History


def save_trainer(trainer: TrainerState, path: Path) -> None:
    """Write ``trainer``'s state to ``path``. Collective: every rank calls it at the same step
    (each rank's generator is gathered); rank 0 writes."""
    rng = _rng_states(trainer)
    table_tensors, table_header = trainer.table_optimizer_state()  # collective when sharded
    if not trainer.ctx.main:
        return
    p, stopping = trainer.progress, trainer.stopping
    tensors = {f"model.{k}": v for k, v in trainer.model.state_dict().items()}
    if stopping.best_state is not None:
        tensors.update({f"best.{k}": v for k, v in stopping.best_state.items()})
    adam = trainer.dense_opt.state_dict()
    for i, st in adam["state"].items():
        tensors.update({f"adam.{i}.{k}": v for k, v in st.items()})
    tensors.update(table_tensors)
    tensors.update(rng)
    # The epoch so far, batch by batch (the learning curve slices the last batches).
    tensors["epoch.labels"] = torch.from_numpy(p.labels[: p.filled].copy())
    tensors["epoch.logits"] = torch.from_numpy(p.logits[: p.filled].copy())
    progress = {name: getattr(p, name) for name in EpochProgress.scalars()}
    state = {
        "progress": {
            **progress,
            "best_score": stopping.best_score,
            "bad": stopping.bad,
            "resetting": stopping.resetting,
        },
        "history": dataclasses.asdict(trainer.history),
        "adam_groups": adam["param_groups"],
        **table_header,
        "world_size": trainer.ctx.world,
        "epoch_order": EPOCH_ORDER,
    }
    with record_function("checkpoint"):
        save_checkpoint(path, tensors, state)


def restore_trainer(trainer: TrainerState, tensors: dict[str, torch.Tensor], state: dict[str, Any]) -> None:
    """Load a checkpoint written by :func:`save_trainer` into ``trainer``."""
    _check_resumable(trainer, state)
    try:
        _restore_weights(trainer, tensors, state)
        _restore_progress(trainer, tensors, state)
    except (KeyError, RuntimeError, TypeError, ValueError) as exc:
        raise TrainingError(
            f"the checkpoint does not fit this model or trainer ({exc}); start the run again without --resume"
        ) from None


def _check_resumable(trainer: TrainerState, state: dict[str, Any]) -> None:
    # A global batch is batch_size x world rows and the checkpoint counts global batches:
    # another world size would skip the wrong rows (and each rank has its own generator).
    world, here = state.get("world_size"), trainer.ctx.world  # None: written before deepfm recorded it
    if world is not None and world != here:
        raise TrainingError(
            f"the checkpoint was written by a run of {world} process(es), this one has {here}: "
            f"resume it with {'--nproc ' + str(world) if world > 1 else 'no --nproc'}"
        )
    if state.get("epoch_order", 1) != EPOCH_ORDER and state["progress"]["batch"] > 0:
        raise TrainingError(
            f"the checkpoint was taken inside epoch {state['progress']['epoch']} by a deepfm that ordered an "
            "epoch's rows differently: resumed here, it would train some of the epoch's rows twice and skip "
            "others. Resume it with the deepfm that wrote it, or start the run again without --resume"
        )


def _restore_weights(trainer: TrainerState, tensors: dict[str, torch.Tensor], state: dict[str, Any]) -> None:
    """The model, the best weights, both optimizers and this rank's generators."""

    def part(prefix: str) -> dict[str, torch.Tensor]:
        return {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}

    trainer.model.load_state_dict(part("model."))
    best = part("best.")
    trainer.stopping.best_state = {k: v.to(trainer.device) for k, v in best.items()} if best else None
    adam_state: dict[int, dict[str, torch.Tensor]] = {}
    for k, v in part("adam.").items():
        i, name = k.split(".", 1)
        adam_state.setdefault(int(i), {})[name] = v
    trainer.dense_opt.load_state_dict({"state": adam_state, "param_groups": state["adam_groups"]})
    trainer.load_table_optimizer_state(tensors, state)
    _set_rng_states(trainer, tensors)


def _restore_progress(trainer: TrainerState, tensors: dict[str, torch.Tensor], state: dict[str, Any]) -> None:
    """The epoch in progress, the history and early stopping's score. Rank 0 wrote its own rows
    of the epoch so far; the other ranks' are lost, which leaves the resumed epoch's training
    metrics on fewer rows (the weights are exact)."""
    progress = dict(state["progress"])
    trainer.stopping.best_score, trainer.stopping.bad = progress.pop("best_score"), progress.pop("bad")
    trainer.stopping.resetting = progress.pop("resetting", False)  # written before resets: none
    progress.setdefault("loss_rows", progress["filled"])  # written before the metric sample: every row held
    if trainer.ctx.main:
        labels, logits = tensors["epoch.labels"].numpy().copy(), tensors["epoch.logits"].numpy().copy()
    else:  # rank 0's loss so far is counted once, by rank 0
        labels, logits = np.zeros(0, np.float32), np.zeros(0, np.float32)
        progress.update(filled=0, loss_sum=0.0, loss_rows=0)
    trainer.progress = EpochProgress(**progress, labels=labels, logits=logits)
    trainer.history = History(**state["history"])


def _rng_states(trainer: TrainerState) -> dict[str, torch.Tensor]:
    """Every rank's random generators (dropout masks), for rank 0 to save: ``rng.torch``
    (world, S) uint8 and, on CUDA, ``rng.cuda`` the same for the rank's GPU."""
    states = {"rng.torch": torch.get_rng_state()}
    if trainer.device.type == "cuda":
        states["rng.cuda"] = torch.cuda.get_rng_state(trainer.device)
    return {k: trainer.ctx.all_gather_rows(v.to(trainer.device).reshape(1, -1)).cpu() for k, v in states.items()}


def _set_rng_states(trainer: TrainerState, tensors: dict[str, torch.Tensor]) -> None:
    """This rank's generators from :func:`_rng_states`' tensors (an older checkpoint has one
    (S,) state, which every rank takes)."""
    for key in ("rng.torch", "rng.cuda"):
        if key not in tensors or (key == "rng.cuda" and trainer.device.type != "cuda"):
            continue
        rows = tensors[key].reshape(-1, tensors[key].shape[-1])
        # clone: a row of the (world, S) tensor is a view starting inside its storage, and
        # set_rng_state on such a view segfaults (seen with torch 2.13).
        mine = rows[min(trainer.ctx.rank, len(rows) - 1)].clone()
        if key == "rng.torch":
            torch.set_rng_state(mine)
        else:
            torch.cuda.set_rng_state(mine, trainer.device)
