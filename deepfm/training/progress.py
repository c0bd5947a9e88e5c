"""Where a run is, and what it has measured: the per-epoch history and the epoch in progress.

A checkpoint saves both (:mod:`deepfm.training.checkpoint`), so a resumed run carries on with
the same history, learning curve and training-metric sample as one never stopped.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field, fields

import numpy as np
import torch
from tqdm import tqdm

from deepfm.training.distributed import Context
from deepfm.util.maths import sigmoid
from deepfm.util.metrics import auc, logloss

log = logging.getLogger(__name__)
CURVE_POINTS = 20  # train-loss points per epoch in the learning curve
# Training AUC and logloss (per epoch and on the learning curve) are measured on at most about
# this many of an epoch's rows: every k-th row of the shuffled order, a uniform sample. Without
# the cap their buffers, the checkpoint and the end-of-epoch AUC sort grow with the epoch
# (3 GB at 45M rows; a Criteo-1TB epoch would need hundreds). At 4M rows and AUC 0.78 the
# sample's AUC has a standard error of 3e-4 (Hanley and McNeil's formula). The training loss
# still counts every row.
TRAIN_METRIC_ROWS = 1 << 22


@dataclass
class History:
    epochs: list[dict[str, float]] = field(default_factory=list)
    best_epoch: int = 0
    train_seconds: float = 0.0
    train_samples: int = 0
    # Within epochs: {"epoch": position in epochs (1.5 = half of epoch 2), "rows", "loss", "auc"}
    # of the batches since the point before.
    curve: list[dict[str, float]] = field(default_factory=list)


@dataclass
class EpochProgress:
    """Where a run is, and what the epoch in progress has gathered: all a checkpoint needs
    besides the tensors of the model and optimizers (and early stopping's score)."""

    epoch: int = 1  # the epoch under way (1-based)
    batch: int = 0  # its batches done
    steps: int = 0  # optimizer steps, all epochs
    loss_sum: float = 0.0
    loss_rows: int = 0  # rows whose loss is in loss_sum (a resumed distributed rank counts fewer)
    seen: int = 0
    seconds: float = 0.0
    # The epoch's labels and logits, in buffers sized once per run and filled up to `filled`
    # (rows this process holds; a resumed distributed rank holds fewer than it has seen).
    # Keeping each batch's small arrays instead pinned memory freed around them: about 2 MB a
    # step at batch 4096, 20 GB in a 45M-row epoch.
    labels: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))
    logits: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))
    filled: int = 0
    since: int = 0  # batches since the last learning-curve point
    since_rows: int = 0
    since_loss: float = 0.0
    since_held: int = 0  # rows added to the buffers since the last learning-curve point

    @classmethod
    def scalars(cls) -> list[str]:
        """The fields a checkpoint keeps in its JSON header (the buffers are tensors)."""
        return [f.name for f in fields(cls) if f.name not in ("labels", "logits")]

    def next_epoch(self) -> None:
        self.epoch += 1
        self.batch, self.loss_sum, self.loss_rows, self.seen, self.seconds, self.filled = 0, 0.0, 0, 0, 0.0, 0
        self.since, self.since_rows, self.since_loss, self.since_held = 0, 0, 0.0, 0

    def reserve(self, rows: int) -> None:
        """Buffers for ``rows`` rows (kept across epochs), keeping what is filled."""
        if self.labels.size < rows:
            for name in ("labels", "logits"):
                grown = np.empty(rows, dtype=np.float32)
                grown[: self.filled] = getattr(self, name)[: self.filled]
                setattr(self, name, grown)

    def add_batch(self, rows: int, loss: float, labels: np.ndarray, logits: np.ndarray) -> None:
        """A step's rows, mean loss, and the labels and logits of its rows kept for the metrics."""
        self.steps += 1
        self.loss_sum, self.loss_rows = self.loss_sum + loss * rows, self.loss_rows + rows
        self.seen += rows
        n = len(labels)
        self.labels[self.filled : self.filled + n] = labels
        self.logits[self.filled : self.filled + n] = logits
        self.filled += n
        self.since, self.since_rows, self.since_loss, self.since_held = (
            self.since + 1,
            self.since_rows + rows,
            self.since_loss + loss * rows,
            self.since_held + n,
        )

    def train_metrics(self, ctx: Context, device: torch.device) -> dict[str, float]:
        """The epoch's training loss (every row), AUC and logloss (the rows sampled for them),
        over every rank's rows: the same figures on each rank."""
        labels = ctx.gather(self.labels[: self.filled].copy(), device)
        probs = sigmoid(ctx.gather(self.logits[: self.filled].copy(), device))
        return {
            "train_loss": ctx.sum(self.loss_sum, device) / max(ctx.sum(self.loss_rows, device), 1),
            "train_auc": auc(labels, probs),
            "train_logloss": logloss(labels, probs),
            "train_metric_rows": len(labels),
        }

    def bar(self, rows: int, global_batch: int, show: bool) -> tqdm:
        """The epoch's progress bar over its ``rows``, from the batches already done. It counts
        every rank's rows (``batch`` counts global batches); one rank shows it."""
        # disable=None: a bar on a terminal, nothing in a log file.
        return tqdm(
            total=rows,
            initial=min(self.batch * global_batch, rows),
            unit="row",
            unit_scale=True,
            desc=f"epoch {self.epoch}",
            disable=None if show else True,
            leave=False,
            mininterval=0.5,
        )

    def curve_point(self, rows: int, global_batch: int) -> dict[str, float]:
        """A learning-curve point for the batches since the last one, which it closes. Its
        position counts the global batches done (every rank's rows); its loss and AUC are this
        rank's rows. ``rows``: the epoch's rows."""
        lo = max(self.filled - self.since_held, 0)
        labels, logits = self.labels[lo : self.filled], self.logits[lo : self.filled]
        point = {
            "epoch": self.epoch - 1 + min(self.batch * global_batch, rows) / rows,
            "rows": self.since_rows,
            "loss": self.since_loss / self.since_rows,
            "auc": auc(labels, logits),
        }
        self.since, self.since_rows, self.since_loss, self.since_held = 0, 0, 0.0, 0
        return point


def metric_stride(rows: int) -> int:
    """Every how many rows of an epoch go into its training metrics (TRAIN_METRIC_ROWS)."""
    return max(1, math.ceil(rows / TRAIN_METRIC_ROWS))


def log_epoch(row: dict[str, float]) -> None:
    """One line per epoch: its training and validation figures."""
    log.info(
        "epoch %d: train loss %.4f auc %.4f | valid auc %s logloss %s | %.0f samples/s",
        row["epoch"],
        row["train_loss"],
        row["train_auc"],
        _fmt(row.get("valid_auc")),
        _fmt(row.get("valid_logloss")),
        row["samples_per_s"],
    )


def _fmt(x: float | None) -> str:
    return "-" if x is None else f"{x:.4f}"
