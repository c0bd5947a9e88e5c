"""The Trainer: fits a DeepFM on encoded data with ``fit`` (the epochs), ``epoch``, ``step``
(one optimizer step) and ``predict``.

Adam for the dense parameters, a row-wise Adam for the embedding table (only the rows in a
batch are touched), L2 on the rows used. Its parts: early stopping and learning-rate decay
(:mod:`.stopping`), the run's progress and history (:mod:`.progress`), checkpoints that let a
run carry on bit for bit on CPU (:mod:`.checkpoint`), and the ranks of a data-parallel run
behind a :class:`~deepfm.training.distributed.Context`, whose collectives are the identity
in one process: the Trainer runs the same code on every rank.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch.profiler import record_function

from deepfm.config import TrainConfig
from deepfm.data.encoded import Batch, EncodedDataset
from deepfm.model.calibration import Calibration, postprocess
from deepfm.model.deepfm import DeepFM, Head
from deepfm.model.optim import RowAdam, dense_adam
from deepfm.training.checkpoint import restore_trainer, save_trainer
from deepfm.training.distributed import Context
from deepfm.training.progress import CURVE_POINTS, EpochProgress, History, log_epoch, metric_stride
from deepfm.training.stopping import EarlyStopping, HasLr, Verdict, diverged, validation_scores

log = logging.getLogger(__name__)


class Trainer:
    """Fits a DeepFM (see the module docstring). ``fit`` runs the epochs, ``epoch`` one epoch,
    ``step`` one optimizer step; ``predict`` scores a data part."""

    def __init__(
        self,
        model: DeepFM,
        config: TrainConfig,
        device: torch.device,
        checkpoint: Path | None = None,
        calibration: Calibration | None = None,
        ctx: Context | None = None,
    ) -> None:
        self.model, self.config, self.device = model.to(device), config, device
        self.ctx = ctx or Context()
        # predict() returns what users will get: corrected for negative downsampling.
        self.calibration = calibration or Calibration()
        self.checkpoint = checkpoint
        self.stopping = EarlyStopping(config)
        self.history = History()
        self.progress = EpochProgress()
        self._build_optimizers()

    def _build_optimizers(self) -> None:
        """The dense part under DDP (several ranks), Adam on it, RowAdam on the table."""
        model, config = self.model, self.config
        # Several ranks: everything after the embedding runs under DistributedDataParallel; the
        # table's rows are synced by gathering them (deepfm.training.distributed explains why).
        self.head = self.ctx.data_parallel(Head(model), model.dense_parameters())
        self.dense_opt = dense_adam(model.dense_parameters(), lr=config.lr, weight_decay=config.weight_decay)
        # embedding_lr "auto" is made a number by the job (TrainConfig.resolve_embedding_lr)
        self.row_opt = RowAdam(model.embedding.weight.data, lr=float(config.embedding_lr), l2=config.l2_embedding)

    # ------------------------------------------------------------ epochs
    def fit(
        self,
        train: EncodedDataset,
        valid: EncodedDataset | None,
        batch_size: int,
        on_epoch: Callable[[dict[str, float]], None] | None = None,
        resume: tuple[dict[str, torch.Tensor], dict[str, Any]] | None = None,
    ) -> History:
        """Train until early stopping. ``on_epoch`` sees each epoch's row of metrics (a tuner
        reports it and may raise to stop the run). ``resume``: a loaded checkpoint."""
        if resume is not None:
            restore_trainer(self, *resume)
            self._weights_restored()
        while self.progress.epoch <= self.config.epochs:
            if self.stopping.resets_table(self.progress.epoch) and self.progress.batch == 0:
                self._fresh_table()
            row = self.epoch(train, valid, batch_size)
            if on_epoch is not None:
                on_epoch(row)
            log_epoch(row)
            verdict = self.stopping.after_epoch(row, self.history, self.model)
            if verdict is Verdict.FALL:
                self.stopping.fall_back(self.model, self.dense_opt, self.table_opt, self.history.best_epoch)
                self._weights_restored()
            elif verdict is Verdict.BACK:
                # The weights only, as after a fall: the table's optimizer keeps its moments
                # (the setting was measured so, docs/accuracy.md).
                self.stopping.restore_best(self.model)
                self._weights_restored()
            self.progress.next_epoch()
            self.save_checkpoint()
            if verdict is Verdict.STOP:
                break
        self._restore_best()
        return self.history

    def _fresh_table(self) -> None:
        """A newly drawn embedding table, and its optimizer's state cleared, for the epoch about
        to start (train.reset_embeddings). Drawn from the seed and the epoch: the same on every
        rank and device, and again after a resume."""
        generator = torch.Generator().manual_seed(self.config.seed * 1000 + self.progress.epoch)
        self.model.embedding.reset_parameters(generator)
        self.row_opt.reset()
        log.info("epoch %d starts from a fresh embedding table", self.progress.epoch)

    def _restore_best(self) -> None:
        """At the end of fit: the best epoch's weights into the model (if there was one)."""
        if self.stopping.restore_best(self.model):
            log.info(
                "restored the weights of epoch %d (valid AUC %.4f)", self.history.best_epoch, self.stopping.best_score
            )

    def epoch(self, train: EncodedDataset, valid: EncodedDataset | None, batch_size: int) -> dict[str, float]:
        """The rest of the epoch in progress, then its row of metrics (also in the history)."""
        p, epoch = self.progress, self.progress.epoch
        self._train_epoch(train, batch_size)
        self.history.train_seconds += p.seconds
        self.history.train_samples += len(train)
        row: dict[str, float] = {
            "epoch": epoch,
            **p.train_metrics(self.ctx, self.device),  # every rank's rows: the same on each rank
            "lr": self.dense_opt.param_groups[0]["lr"],
            "seconds": p.seconds,
            "samples_per_s": len(train) / max(p.seconds, 1e-9),
        }
        if self.config.reset_embeddings is True:  # 1: the epoch started from a fresh table
            row["fresh_table"] = float(self.stopping.resets_table(epoch))
        if valid is not None and len(valid):
            row.update(validation_scores(valid.labels, self.predict(valid), first=epoch == 1))
        self.history.epochs.append(row)
        return row

    # ------------------------------------------------------------ batches
    def _train_epoch(self, data: EncodedDataset, batch_size: int) -> None:
        """The epoch's batches from the one in progress on; about CURVE_POINTS learning-curve
        points go into the history."""
        cfg, p = self.config, self.progress
        self.model.train()
        # Every `stride`-th row of the epoch goes into the training metrics (TRAIN_METRIC_ROWS).
        # A rank sees at most len(data) rows, so it holds at most ceil(len(data) / stride).
        stride = metric_stride(len(data))
        p.reserve(math.ceil(len(data) / stride))
        global_batch = batch_size * self.ctx.world
        every = max(1, math.ceil(len(data) / global_batch) // CURVE_POINTS)  # (global) batches per curve point
        bar = p.bar(len(data), global_batch, show=cfg.progress and self.ctx.main)
        t0, seconds0 = time.perf_counter(), p.seconds
        # Each epoch has its own order, derived from the seed: runs are reproducible, and a
        # resumed epoch skips exactly the batches it had done.
        for batch, global_rows in self._batches(data, batch_size, cfg.seed * 1000 + p.epoch, skip=p.batch):
            p.batch += 1
            if len(batch) == 1 and self.model.config.batch_norm:
                continue  # batch norm cannot normalize one row; it is one row of this epoch
            self._train_batch(batch.to(self.device), global_rows, stride)
            if p.since == every:
                self.history.curve.append(p.curve_point(len(data), global_batch))
            bar.update(global_rows)
            p.seconds = seconds0 + time.perf_counter() - t0
            bar.set_postfix(loss=f"{p.loss_sum / p.seen:.4f}", rows_s=f"{bar.n / max(p.seconds, 1e-9):.0f}")
            if self.checkpoint is not None and cfg.checkpoint_every and p.steps % cfg.checkpoint_every == 0:
                self.save_checkpoint()
        bar.close()
        if p.since:
            self.history.curve.append(p.curve_point(len(data), global_batch))

    def _batches(self, data: EncodedDataset, batch_size: int, seed: int, skip: int) -> Iterator[tuple[Batch, int]]:
        """(this rank's part, the global batch's rows) of an epoch's global batches from ``skip`` on."""
        min_part = 2 if self.model.config.batch_norm else 1  # batch norm needs two rows per rank
        return self.ctx.batches(data, batch_size, seed, skip=skip, min_part=min_part)

    @property
    def table_opt(self) -> HasLr:
        """The table's optimizer, whose rate early stopping decays."""
        return self.row_opt

    def _weights_restored(self) -> None:
        """Called after ``self.model`` was loaded from a checkpoint or the best epoch's weights
        (the sharded trainer copies them into its shards); here the model is what trains."""

    def _train_batch(self, batch: Batch, global_rows: int, stride: int) -> None:
        """One step, checked for a finite loss, and its rows counted into the epoch."""
        p = self.progress
        logit, loss = self.step(batch, global_rows)
        loss_value = float(loss.detach())
        # Several ranks: one rank's NaN has already reached every rank's weights through the
        # summed gradients, so every rank must stop here, before a checkpoint is written,
        # rather than only the rank that saw it (the others would wait in the next collective).
        any_loss = self.ctx.sum(loss_value, self.device)
        if not math.isfinite(any_loss):
            raise diverged(loss_value, any_loss, p.epoch, p.steps + 1, self.checkpoint)
        assert batch.labels is not None
        keep = slice((-p.seen) % stride, None, stride)  # this epoch's rows k * stride
        p.add_batch(len(batch), loss_value, batch.labels[keep].cpu().numpy(), logit.detach()[keep].cpu().numpy())

    def step(self, batch: Batch, global_rows: int) -> tuple[torch.Tensor, torch.Tensor]:
        """One optimizer step on ``batch``, this rank's part of a global batch of ``global_rows``
        rows. The table rows are looked up outside autograd and made leaves; their gradients go
        to RowAdam, everything else to Adam. Returns (logits (B,), this part's mean loss)."""
        emb = self.model.embedding
        # record_function labels cost nothing unless a profiler listens (benchmarks/profile_step.py).
        with record_function("embedding lookup"):
            rows, bag_rows = emb.lookup(batch.ids, batch.multi_hot)
            leaves = [rows.requires_grad_(), *(r.requires_grad_() for r in bag_rows)]
            e = emb.combine(rows, batch.values, bag_rows, [offsets for offsets, _ in batch.multi_hot])
        logit = self.head(e)
        with record_function("loss"):
            assert batch.labels is not None
            loss = F.binary_cross_entropy_with_logits(logit, batch.labels)
        with record_function("backward"):  # under DDP, the dense all-reduce overlaps this
            self.dense_opt.zero_grad(set_to_none=True)
            # This part's share of the global batch's mean loss: summed over the ranks (DDP for
            # the dense part, RowAdam over the gathered rows), the gradient of one process.
            self.ctx.share_of(loss, len(batch), global_rows).backward()
        with record_function("dense optimizer"):
            self.dense_opt.step()
        ids = torch.cat([batch.ids.reshape(-1), *(mh_ids for _, mh_ids in batch.multi_hot)])
        width = rows.shape[-1]
        grads = torch.cat([_grad(leaf).reshape(-1, width) for leaf in leaves])
        used = torch.cat([leaf.detach().reshape(-1, width) for leaf in leaves]) if self.row_opt.l2 else None
        with record_function("embedding all-gather"):
            ids, grads, used = self.ctx.gather_rows(ids, grads, used)
        with record_function("embedding optimizer"):
            self.row_opt.step(ids, grads, used, batch_size=global_rows)
        return logit, loss

    # ------------------------------------------------------------ scoring, checkpoints
    @torch.no_grad()
    def predict(self, data: EncodedDataset) -> np.ndarray:
        """Probabilities for every row, in order, through the trainer's calibration (the
        downsampling correction). Each rank scores its share; all get every score. -> (N,) float64"""
        self.model.eval()
        self.ctx.broadcast_buffers(self.model)  # batch norm's running statistics: rank 0's
        mine, step = self.ctx.share(len(data)), self.config.eval_batch_size
        batches = (data.batch(slice(a, min(a + step, mine.stop))) for a in range(mine.start, mine.stop, step))
        out = [torch.sigmoid(self.model(b.to(self.device))).double().cpu().numpy() for b in batches]
        scores = self.ctx.gather(np.concatenate(out) if out else np.zeros(0), self.device)
        return postprocess(scores, self.calibration) if len(scores) else np.zeros(0)

    def table_optimizer_state(self) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        """RowAdam's moments and its header entry, for the checkpoint (collective where the
        state is sharded; here every rank has it all)."""
        tensors = {"rowadam.exp_avg": self.row_opt.exp_avg, "rowadam.exp_avg_sq": self.row_opt.exp_avg_sq}
        return tensors, {"rowadam": {"steps": self.row_opt.steps, "lr": self.row_opt.lr}}

    def load_table_optimizer_state(self, tensors: dict[str, torch.Tensor], state: dict[str, Any]) -> None:
        """RowAdam's state from a checkpoint's tensors and header."""
        self.row_opt.exp_avg.copy_(tensors["rowadam.exp_avg"])
        self.row_opt.exp_avg_sq.copy_(tensors["rowadam.exp_avg_sq"])
        self.row_opt.steps, self.row_opt.lr = state["rowadam"]["steps"], state["rowadam"]["lr"]

    def save_checkpoint(self) -> None:
        """The trainer's whole state into its checkpoint file (collective; rank 0 writes)."""
        if self.checkpoint is not None:
            save_trainer(self, self.checkpoint)


def _grad(leaf: torch.Tensor) -> torch.Tensor:
    """The gradient backward() left on a looked-up row tensor (every one takes part in the loss)."""
    assert leaf.grad is not None
    return leaf.grad
