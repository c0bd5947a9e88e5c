"""The Trainer over sharded tables: what ``deepfm train --nproc N --shard-tables MODE`` runs.

:class:`ShardedTrainer` is the :class:`~deepfm.training.trainer.Trainer` (its epochs, early
stopping, learning-rate decay, checkpoints, metrics) with the step taken by a
:class:`~deepfm.training.sharded.ShardedDeepFM`: one table per field, placed over the ranks
by torchrec, trained by fbgemm's row-wise Adagrad (at ``embedding_lr``), the dense part by
Adam. Each rank's part of a global batch has exactly ``batch_size`` rows (torchrec's
all-to-alls want equal parts), so a last global batch short of ``batch_size x N`` rows is
left out of every epoch, in one process as in N.

The plain DeepFM the job built stays beside the shards, on every rank: the trained weights
are gathered into it (:meth:`ShardedDeepFM.copy_into`) when something reads it (validation
scoring, early stopping's best copy, a checkpoint, the bundle at the end), and copied back
into the shards when it was loaded (a resumed checkpoint, the best epoch after a fall). So
checkpoints have the plain model's names and hold the whole table and Adagrad's state: the
shards bound each device's table and optimizer memory while training, but every host holds
the whole table once. Checkpoints written shard by shard are work still to do.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from deepfm.config import TrainConfig
from deepfm.data.encoded import Batch, EncodedDataset, EpochOrder
from deepfm.errors import ConfigError
from deepfm.model.calibration import Calibration
from deepfm.model.deepfm import DeepFM
from deepfm.training.distributed import Context, global_batches
from deepfm.training.sharded import FieldTable, ShardedDeepFM, require_torchrec
from deepfm.training.stopping import HasLr
from deepfm.training.trainer import Trainer


def check_sharded(config: TrainConfig) -> None:
    """The settings sharded tables cannot train with, as a ConfigError naming the option;
    torchrec missing, with what to install. Called before any process starts."""
    if config.shard_tables is None:
        return
    if config.l2_embedding:
        raise ConfigError(
            f"--shard-tables trains the tables with fbgemm's row-wise Adagrad, which has no L2 on the rows "
            f"a batch uses: give --l2-embedding 0 (l2_embedding: 0), got {config.l2_embedding:g}"
        )
    if config.reset_embeddings is True:
        raise ConfigError(
            "--shard-tables keeps the tables' rows in torchrec, which deepfm does not reset between epochs: "
            "give reset_embeddings: false (or auto) in the train section"
        )
    require_torchrec()


def require_process_group() -> None:
    """Sharded tables train in a process group, of one process too: a ConfigError otherwise."""
    if not dist.is_initialized():
        raise ConfigError(
            "--shard-tables trains in a process group: run it with deepfm train --nproc N (or under torchrun), N >= 1"
        )


def row_wise_min_rows(mode: str, tables: list[FieldTable], world: int) -> int:
    """The smallest table split row-wise for ``--shard-tables mode``: row, every table; table,
    none; auto, those larger than a rank's fair share of all rows (which no rank could take
    whole and stay balanced)."""
    if mode == "row":
        return 0
    if mode == "table":
        return sys.maxsize
    return -(-sum(t.rows for t in tables) // world) + 1


class _AdagradLr:
    """The tables' learning rate, as early stopping's fall_back decays it."""

    def __init__(self, sharded: ShardedDeepFM) -> None:
        self.sharded = sharded

    @property
    def lr(self) -> float:
        return self.sharded.table_lr

    @lr.setter
    def lr(self, lr: float) -> None:
        self.sharded.table_lr = lr


class ShardedTrainer(Trainer):
    """A Trainer whose steps run on sharded per-field tables (see the module docstring).
    ``model`` is the plain DeepFM to start from (seeded, or warm-started); at the end of
    ``fit`` it holds the trained (best) weights on every rank."""

    def __init__(
        self,
        model: DeepFM,
        config: TrainConfig,
        device: torch.device,
        tables: list[FieldTable],
        checkpoint: Path | None = None,
        calibration: Calibration | None = None,
        ctx: Context | None = None,
    ) -> None:
        check_sharded(config)
        if config.shard_tables is None:
            raise ConfigError("ShardedTrainer needs train.shard_tables (auto, row or table)")
        require_process_group()
        self.tables = tables
        super().__init__(model, config, device, checkpoint=checkpoint, calibration=calibration, ctx=ctx)

    def _build_optimizers(self) -> None:
        cfg, world = self.config, dist.get_world_size()
        assert cfg.shard_tables is not None
        self.sharded = ShardedDeepFM(
            self.model.layout,
            self.model.config,
            self.tables,
            lr=cfg.lr,
            table_lr=float(cfg.embedding_lr),
            row_wise_min_rows=row_wise_min_rows(cfg.shard_tables, self.tables, world),
            device=self.device,
            weight_decay=cfg.weight_decay,
        )
        self.sharded.load_from(self.model)
        self.dense_opt = self.sharded.optimizer
        self.adagrad = _AdagradLr(self.sharded)
        self._current = True  # self.model holds the shards' weights

    @property
    def table_opt(self) -> HasLr:
        return self.adagrad

    # ------------------------------------------------------------ steps
    def _batches(self, data: EncodedDataset, batch_size: int, seed: int, skip: int) -> Iterator[tuple[Batch, int]]:
        # Parts of exactly batch_size rows; the ranks' parts together are the global batch one
        # process of batch_size x world would take (the data-parallel trainer's order).
        order = EpochOrder(len(data), seed)
        for rows, global_rows in global_batches(order, batch_size, self.ctx, skip, min_part=batch_size):
            yield data.batch(rows), global_rows

    def step(self, batch: Batch, global_rows: int) -> tuple[torch.Tensor, torch.Tensor]:
        """One step of the sharded model on this rank's part. -> (logits (B,), the part's mean loss)"""
        logits, loss_sum = self.sharded.step_logits(batch, global_rows)
        self._current = False
        return logits, loss_sum / len(batch)

    def _restore_best(self) -> None:
        # The plain model gets the last weights, then the best epoch's where there is one: what
        # fit ends with, also without validation rows.
        self._pull()
        super()._restore_best()

    # ------------------------------------------------------------ the plain model beside
    def _pull(self) -> None:
        """The shards' weights into the plain model (collective), unless it has them."""
        if not self._current:
            self.sharded.copy_into(self.model)
            self._current = True

    def _weights_restored(self) -> None:
        self.sharded.load_from(self.model)
        self._current = True

    @torch.no_grad()
    def predict(self, data: EncodedDataset) -> np.ndarray:
        """Trainer.predict with the plain model holding the shards' weights. -> (N,) float64"""
        self._pull()
        return super().predict(data)

    def save_checkpoint(self) -> None:
        if self.checkpoint is not None:
            self._pull()
            super().save_checkpoint()

    def table_optimizer_state(self) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        """Row-wise Adagrad's state of the whole table (gathered: collective) and its rate."""
        return {"adagrad.state": self.sharded.gather_adagrad()}, {"adagrad": {"lr": self.sharded.table_lr}}

    def load_table_optimizer_state(self, tensors: dict[str, torch.Tensor], state: dict[str, Any]) -> None:
        self.sharded.load_adagrad(tensors["adagrad.state"])
        self.sharded.table_lr = float(state["adagrad"]["lr"])
