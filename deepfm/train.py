"""Training: from files to a saved Bundle.

``train()`` is the whole job: read and split the data, fit the FeaturePipeline on the
training part only, encode every part to memory-mapped arrays, fit the model with the
Trainer (early stopping on validation AUC, best weights restored), evaluate, save.
"""

from __future__ import annotations

import copy
import functools
import dataclasses
import hashlib
import json
import logging
import math
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.profiler import record_function
from tqdm import tqdm

from deepfm.bundle import Bundle
from deepfm.calibration import Calibration, postprocess
from deepfm.calibration import fit as fit_calibration
from deepfm.checkpoint import CHECKPOINT, RUN, load_checkpoint, save_checkpoint, write_atomic
from deepfm.config import RunConfig, TrainConfig
from deepfm.dataset import Batch, DatasetWriter, EncodedDataset, EpochOrder
from deepfm.distributed import (
    Context, all_gather_rows, broadcast_buffers, data_parallel, gather_array, gather_rows, global_batches, my_slice, setup, sum_scalar,
)  # fmt: skip
from deepfm.drift import PROFILE_FILE, profile
from deepfm.errors import ConfigError, DataError, TrainingError
from deepfm.features import FeaturePipeline
from deepfm.io import Reader
from deepfm.metrics import auc, calibration, logloss, roc_curve, summary
from deepfm.model import DeepFM, InputLayout, rows_per_table_row
from deepfm.optim import RowAdam
from deepfm.sampling import downsample
from deepfm.warm import check_compatible, warm_model_config, warm_start_weights

log = logging.getLogger(__name__)
CACHE_FORMAT = 2  # bump when the encoded layout changes
# The epoch order's version (dataset.EpochOrder; 1: the full permutation of deepfm before it,
# drawn differently): a checkpoint taken inside an epoch skips that epoch's first batches,
# which must be the same batches when it resumes.
EPOCH_ORDER = 2
CURVE_POINTS = 20  # train-loss points per epoch in the learning curve
# Training AUC and logloss (per epoch and on the learning curve) are measured on at most about
# this many of an epoch's rows: every k-th row of the shuffled order, a uniform sample. Without
# the cap their buffers, the checkpoint and the end-of-epoch AUC sort grow with the epoch
# (3 GB at 45M rows; a Criteo-1TB epoch would need hundreds). At 4M rows and AUC 0.78 the
# sample's AUC has a standard error of 3e-4 (Hanley and McNeil's formula). The training loss
# still counts every row.
TRAIN_METRIC_ROWS = 1 << 22
# A valid AUC this far below the best is the model overfitting (the second epoch of Criteo-like
# clicks falls by 0.01-0.04), which calls for the best weights and smaller steps; closer to the
# best it is a stall (dips of up to 0.0006 seen on plateaus), where training goes on as it was.
OVERFIT_DROP = 1e-3


# ---------------------------------------------------------------- data preparation
@dataclass
class Parts:
    """Encoded data parts. valid/test may be absent."""

    train: EncodedDataset
    valid: EncodedDataset | None = None
    test: EncodedDataset | None = None
    skipped_rows: int = 0
    rows_read: int = 0  # rows of every input file, fitted and encoded


def parse_split(text: str | tuple[float, ...] | None) -> tuple[float, float, float] | None:
    """'0.8,0.1,0.1' -> (0.8, 0.1, 0.1); two numbers mean no test part."""
    if text is None:
        return None
    try:
        parts = [float(x) for x in (text.split(",") if isinstance(text, str) else text)]
    except ValueError:
        raise ConfigError(f"--split wants 'train,valid[,test]' fractions like 0.8,0.1,0.1, got {text!r}") from None
    if len(parts) == 2:
        parts.append(0.0)
    if len(parts) != 3 or any(p < 0 for p in parts) or parts[0] <= 0:
        raise ConfigError(f"--split wants 'train,valid[,test]' fractions like 0.8,0.1,0.1, got {text!r}")
    if abs(sum(parts) - 1.0) > 1e-6:
        raise ConfigError(f"--split fractions must add up to 1, got {text!r} (sum {sum(parts):g})")
    return parts[0], parts[1], parts[2]


def prepare(
    config: RunConfig,
    data: str | Path,
    workdir: Path,
    valid: str | Path | None = None,
    test: str | Path | None = None,
    split: tuple[float, float, float] | None = None,
    base: FeaturePipeline | None = None,
) -> tuple[FeaturePipeline, Parts]:
    """Fit the pipeline on the training rows and encode every part into ``workdir``.
    ``base``: grow that fitted pipeline instead of fitting afresh (warm start)."""
    schema = config.schema
    columns = [schema.label, *schema.names]
    reader = Reader(data, config.data, column_names=schema.columns)
    reader.check_columns(columns)
    if split is not None and valid is not None:
        raise ConfigError("give either --split or a --valid file, not both")
    if split is not None and split[2] > 0 and test is not None:
        raise ConfigError("--split already makes a test part; leave out --test or give two fractions")
    pipeline = FeaturePipeline(schema)
    bounds: dict[str, tuple[int, int]] = {}

    def n_fit(n: int) -> int:
        """The split, decided once the parse has counted the rows: no counting pass first."""
        if split is None:
            bounds["train"] = (0, n)  # every row is a training row
            return n
        n_train, n_valid = int(round(split[0] * n)), int(round(split[1] * n))
        if n_train == 0:
            raise DataError(f"the training part of --split is empty ({n} rows)", path=str(data))
        bounds["train"] = (0, n_train)
        bounds["valid"] = (n_train, n_train + n_valid if split[2] > 0 else n)
        if split[2] > 0:
            bounds["test"] = (n_train + n_valid, n)
        log.info("split %s by row order: train %d, valid %d, test %d rows", data, n_train, n_valid, n - n_train - n_valid)
        return n_train

    def writer(name: str) -> DatasetWriter:
        n_single, n_values, n_multi = len(pipeline.single_fields), len(pipeline.scaled_positions), len(pipeline.multi_hot_fields)
        return DatasetWriter(workdir / name, n_single, n_values, n_multi, id_dtype=pipeline.id_dtype)

    # One parse of the file: fit on the training rows, encode every row into its part.
    writers: dict[str, DatasetWriter] = {}
    for row0, enc in pipeline.fit_encode(reader.chunks(columns, schema.numeric_columns), n_fit, workdir / "spill", base=base):
        if not writers:  # the pipeline is fitted: its size is known
            writers = {k: writer(k) for k, (lo, hi) in bounds.items() if hi > lo}
        for name, (lo, hi) in bounds.items():
            a, b = max(lo, row0), min(hi, row0 + len(enc))
            if b > a and name in writers:
                writers[name].append(enc, slice(a - row0, b - row0))
    shutil.rmtree(workdir / "spill", ignore_errors=True)
    parts: dict[str, EncodedDataset | None] = {"train": None, "valid": None, "test": None}
    parts.update({k: w.close() for k, w in writers.items()})
    skipped = reader.skipped
    for name, path in (("valid", valid), ("test", test)):
        if path is None:
            continue
        r = Reader(path, config.data, column_names=schema.columns)
        r.check_columns(columns)
        w = writer(name)
        for chunk in r.chunks(columns, schema.numeric_columns):
            w.append(pipeline.encode(chunk))
        parts[name] = w.close()
        skipped += r.skipped
    if skipped:
        log.warning("skipped %d bad rows (on_bad_row=skip)", skipped)
    train_part = parts["train"]
    assert train_part is not None
    rows_read = sum(len(p) for p in parts.values() if p is not None) + skipped
    return pipeline, Parts(train_part, parts["valid"], parts["test"], skipped, rows_read)


def default_cache_dir() -> Path:
    """Where encoded data is kept between runs: $DEEPFM_CACHE_DIR or ~/.cache/deepfm/encoded."""
    env = os.environ.get("DEEPFM_CACHE_DIR")
    return Path(env) if env else Path.home() / ".cache" / "deepfm" / "encoded"


def prepare_cached(
    config: RunConfig,
    data: str | Path,
    cache_dir: Path,
    valid: str | Path | None = None,
    test: str | Path | None = None,
    split: tuple[float, float, float] | None = None,
    base: FeaturePipeline | None = None,
    base_key: str | None = None,
) -> tuple[FeaturePipeline, Parts, bool]:
    """``prepare``, reusing the encoded data of an earlier run on the same files (path, size,
    modification time), schema, reading options, split and ``base`` (named by ``base_key``,
    a digest of the bundle it came from). Returns (pipeline, parts, hit)."""
    if base is not None and base_key is None:
        raise ValueError("prepare_cached with a base pipeline needs its base_key")
    files = [Path(p) for p in (data, valid, test) if p is not None]
    for p in files:
        if not p.is_file():
            raise DataError("file not found", path=str(p))
    identity = {
        "format": CACHE_FORMAT,
        "code": _encoder_version(),
        "files": [(str(p.resolve()), p.stat().st_size, p.stat().st_mtime_ns) for p in files],
        "roles": [valid is not None, test is not None],
        "schema": config.schema.to_dict(),
        "data": dataclasses.asdict(config.data),
        "split": split,
        "base": base_key,
    }
    key = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:24]
    folder = cache_dir / key
    if (folder / "complete.json").is_file():
        try:
            return (*_load_prepared(folder), True)
        except Exception as exc:  # a damaged cache entry is rebuilt, never trusted
            log.warning("cache entry %s is unreadable (%s): encoding again", folder, exc)
            shutil.rmtree(folder, ignore_errors=True)
    cache_dir.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{key}-", dir=cache_dir))
    try:
        pipeline, parts = prepare(config, data, tmp, valid=valid, test=test, split=split, base=base)
        pipeline.save(tmp)
        done = {"skipped_rows": parts.skipped_rows, "rows_read": parts.rows_read, "identity": identity}
        (tmp / "complete.json").write_text(json.dumps(done))
        del parts
        try:
            os.replace(tmp, folder)  # atomic: a reader sees a whole entry or none
        except OSError:  # another run finished the same entry first
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log.info("encoded data cached in %s", folder)
    return (*_load_prepared(folder), False)


@functools.lru_cache(maxsize=1)
def _encoder_version() -> str:
    """A digest of the code that fits and encodes: a cache entry never outlives a change to it."""
    import deepfm.features
    import deepfm.io
    import deepfm.schema

    h = hashlib.sha256()
    for module in (deepfm.features, deepfm.io, deepfm.schema):
        h.update(Path(module.__file__ or "").read_bytes())
    return h.hexdigest()[:16]


def _load_prepared(folder: Path) -> tuple[FeaturePipeline, Parts]:
    done = json.loads((folder / "complete.json").read_text())
    parts = {k: EncodedDataset(folder / k) if (folder / k / "meta.json").is_file() else None for k in ("train", "valid", "test")}
    train_part = parts["train"]
    if train_part is None:
        raise DataError(f"cache entry {folder} has no training part")
    return FeaturePipeline.load(folder), Parts(train_part, parts["valid"], parts["test"], done["skipped_rows"], done["rows_read"])


# ---------------------------------------------------------------- trainer
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
class _Progress:
    """Where a run is, and what the epoch in progress has gathered: all a checkpoint needs
    besides the tensors of the model and optimizers."""

    epoch: int = 1  # the epoch under way (1-based)
    batch: int = 0  # its batches done
    steps: int = 0  # optimizer steps, all epochs
    best_score: float = -math.inf
    bad: int = 0  # epochs since the best
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

    def start_epoch(self) -> None:
        self.batch, self.loss_sum, self.loss_rows, self.seen, self.seconds, self.filled = 0, 0.0, 0, 0, 0.0, 0
        self.since, self.since_rows, self.since_loss, self.since_held = 0, 0, 0.0, 0

    def reserve(self, rows: int) -> None:
        """Buffers for ``rows`` rows (kept across epochs), keeping what is filled."""
        if self.labels.size < rows:
            for name in ("labels", "logits"):
                grown = np.empty(rows, dtype=np.float32)
                grown[: self.filled] = getattr(self, name)[: self.filled]
                setattr(self, name, grown)

    def add(self, labels: np.ndarray, logits: np.ndarray) -> None:
        n = len(labels)
        self.labels[self.filled : self.filled + n] = labels
        self.logits[self.filled : self.filled + n] = logits
        self.filled += n
        self.since_held += n

    def last(self, rows: int) -> tuple[np.ndarray, np.ndarray]:
        """The labels and logits of the last ``rows`` rows held."""
        lo = max(self.filled - rows, 0)
        return self.labels[lo : self.filled], self.logits[lo : self.filled]


class Trainer:
    """Fits a DeepFM: Adam for dense parameters, a row-wise Adam for the embedding table (only
    the rows in a batch are touched), L2 on the rows used, early stopping on validation AUC
    with the best weights restored, learning-rate decay when validation AUC stalls.

    With a ``checkpoint`` path it saves its whole state there every ``checkpoint_every``
    steps and at each epoch's end; ``fit(resume=...)`` carries on from such a file exactly:
    the weights at the end are the same, bit for bit on CPU, as if the run had not stopped.

    With a ``ctx`` of several ranks it trains data-parallel (:mod:`deepfm.distributed`):
    ``batch_size`` is then per rank, each rank steps on its part of every global batch, and
    metrics are gathered so every rank decides alike; only rank 0 writes checkpoints."""

    def __init__(
        self, model: DeepFM, config: TrainConfig, device: torch.device, checkpoint: Path | None = None,
        calibration: Calibration | None = None, ctx: Context | None = None,
    ) -> None:  # fmt: skip
        self.model, self.config, self.device = model.to(device), config, device
        self.ctx = ctx or Context()
        # Several ranks: everything after the embedding runs under DistributedDataParallel; the
        # table's rows are synced by gathering them (deepfm.distributed explains why).
        self.head: nn.Module = _Head(self.model)
        if self.ctx.active:
            self.head = data_parallel(self.head, self.model.dense_parameters())
        # predict() returns what users will get: corrected for negative downsampling.
        self.calibration = calibration or Calibration()
        self.dense_opt = _adam(model.dense_parameters(), lr=config.lr, weight_decay=config.weight_decay)
        self.row_opt = RowAdam(model.embedding.weight.data, lr=config.embedding_lr, l2=config.l2_embedding)
        self.checkpoint = checkpoint
        self.best_state: dict[str, torch.Tensor] | None = None
        self.history = History()
        self.progress = _Progress()

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
        cfg = self.config
        if resume is not None:
            self._restore(*resume)
        history, p = self.history, self.progress
        while p.epoch <= cfg.epochs:
            epoch = p.epoch
            self._epoch(train, batch_size)
            labels, logits = p.labels[: p.filled].copy(), p.logits[: p.filled].copy()
            if self.ctx.active:  # every rank's rows: global metrics, the same on each rank
                labels, logits = gather_array(labels, self.ctx, self.device), gather_array(logits, self.ctx, self.device)
            history.train_seconds += p.seconds
            history.train_samples += len(train)
            probs = _sigmoid(logits)
            row: dict[str, float] = {
                "epoch": epoch,
                "train_loss": sum_scalar(p.loss_sum, self.ctx, self.device) / max(sum_scalar(p.loss_rows, self.ctx, self.device), 1),
                "train_auc": auc(labels, probs),  # on the sampled rows (TRAIN_METRIC_ROWS)
                "train_logloss": logloss(labels, probs),
                "train_metric_rows": len(labels),
                "lr": self.dense_opt.param_groups[0]["lr"],
                "seconds": p.seconds,
                "samples_per_s": len(train) / max(p.seconds, 1e-9),
            }
            if valid is not None and len(valid):
                vp = self.predict(valid)
                row["valid_auc"], row["valid_logloss"] = auc(valid.labels, vp), logloss(valid.labels, vp)
                if not math.isfinite(row["valid_auc"]):
                    # One class only: AUC is undefined, so early stopping follows -logloss.
                    if epoch == 1:
                        log.warning("the validation part has a single class: early stopping on logloss, not AUC")
                    row["valid_auc_for_stopping"] = -row["valid_logloss"]
            history.epochs.append(row)
            if on_epoch is not None:
                on_epoch(row)
            log.info(
                "epoch %d: train loss %.4f auc %.4f | valid auc %s logloss %s | %.0f samples/s",
                epoch, row["train_loss"], row["train_auc"], _fmt(row.get("valid_auc")),
                _fmt(row.get("valid_logloss")), row["samples_per_s"],
            )  # fmt: skip
            stop = self._after_epoch(row, valid is not None and len(valid) > 0)
            p.epoch += 1
            p.start_epoch()
            self._save_checkpoint()
            if stop:
                break
        if self.best_state is not None:
            self.model.load_state_dict(self.best_state)
            log.info("restored the weights of epoch %d (valid AUC %.4f)", history.best_epoch, p.best_score)
        return history

    def _after_epoch(self, row: dict[str, float], has_valid: bool) -> bool:
        """Early stopping and learning-rate decay on the epoch's validation score. True: stop."""
        p, history = self.progress, self.history
        if not has_valid:
            history.best_epoch = int(row["epoch"])
            return False
        score = row.get("valid_auc_for_stopping", row["valid_auc"])
        if score > p.best_score + self.config.min_improvement:
            p.best_score, p.bad, history.best_epoch = score, 0, int(row["epoch"])
            self.best_state = copy.deepcopy(self.model.state_dict())
            return False
        p.bad += 1
        if p.bad >= self.config.patience:
            log.info("valid AUC has not improved for %d epoch(s): stopping", p.bad)
            return True
        if p.best_score - score <= OVERFIT_DROP:
            # A stall, not a fall: on interaction-heavy data valid AUC can sit still for a few
            # epochs before the pairs are learned (Frappe: 0.926 for epochs 3-6, then 0.94),
            # and smaller steps taken there never get out.
            log.info("valid AUC stalled (best %.4f, now %.4f): going on", p.best_score, score)
            return False
        # CTR models overfit fast: go back to the best weights and continue with a
        # smaller step, which usually finds a little more than pressing on would.
        if self.best_state is not None:
            self.model.load_state_dict(self.best_state)
        for group in self.dense_opt.param_groups:
            group["lr"] *= self.config.lr_decay
        self.row_opt.lr *= self.config.lr_decay
        log.info("valid AUC did not improve: back to epoch %d, learning rates x%g", history.best_epoch, self.config.lr_decay)
        return False

    def _epoch(self, data: EncodedDataset, batch_size: int) -> None:
        """The rest of the epoch in progress (all of it unless resumed mid-epoch); appends about
        CURVE_POINTS learning-curve points to the history."""
        cfg, p = self.config, self.progress
        epoch = p.epoch
        self.model.train()
        # Every `stride`-th row of the epoch goes into the training metrics (TRAIN_METRIC_ROWS).
        # A rank sees at most len(data) rows, so it holds at most ceil(len(data) / stride).
        stride = max(1, math.ceil(len(data) / TRAIN_METRIC_ROWS))
        p.reserve(math.ceil(len(data) / stride))
        global_batch = batch_size * self.ctx.world
        every = max(1, math.ceil(len(data) / global_batch) // CURVE_POINTS)  # (global) batches per curve point
        # disable=None: a bar on a terminal, nothing in a log file. It counts every rank's rows
        # (p.batch counts global batches), shown by rank 0 only.
        bar = tqdm(
            total=len(data), initial=min(p.batch * global_batch, len(data)), unit="row", unit_scale=True,
            desc=f"epoch {epoch}", disable=None if cfg.progress and self.ctx.main else True, leave=False, mininterval=0.5,
        )  # fmt: skip
        t0, seconds0 = time.perf_counter(), p.seconds
        # Each epoch has its own order, derived from the seed: runs are reproducible, and a
        # resumed epoch skips exactly the batches it had done.
        for batch, global_rows in self._batches(data, batch_size, seed=cfg.seed * 1000 + epoch):
            p.batch += 1
            if len(batch) == 1 and self.model.config.batch_norm:
                continue  # batch norm cannot normalize one row; it is one row of this epoch
            batch = batch.to(self.device)
            logit, loss = self._step(batch, global_rows)
            n = len(batch)
            loss_value = float(loss.detach())
            # Several ranks: one rank's NaN has already reached every rank's weights through the
            # summed gradients, so every rank must stop here, before a checkpoint is written,
            # rather than only the rank that saw it (the others would wait in the next collective).
            any_loss = sum_scalar(loss_value, self.ctx, self.device)
            if not math.isfinite(any_loss):
                mine = math.isfinite(loss_value)  # finite here: another rank's loss was not
                bad, where = (any_loss, " on another rank") if mine else (loss_value, "")
                kept = f"; the last good checkpoint is kept in {self.checkpoint}" if self.checkpoint else ""
                raise TrainingError(
                    f"training loss became {bad}{where} in epoch {epoch} (step {p.steps + 1}){kept}. "
                    "Lower the learning rates (--lr, --embedding-lr) and start again or resume"
                )
            p.steps += 1
            p.loss_sum, p.loss_rows = p.loss_sum + loss_value * n, p.loss_rows + n
            keep = slice((-p.seen) % stride, None, stride)  # this epoch's rows k * stride
            p.seen += n
            p.add(batch.labels[keep].cpu().numpy(), logit.detach()[keep].cpu().numpy())
            p.since, p.since_rows, p.since_loss = p.since + 1, p.since_rows + n, p.since_loss + loss_value * n
            if p.since == every:
                self._curve_point(len(data), global_batch)
            bar.update(global_rows)
            p.seconds = seconds0 + time.perf_counter() - t0
            bar.set_postfix(loss=f"{p.loss_sum / p.seen:.4f}", rows_s=f"{bar.n / max(p.seconds, 1e-9):.0f}")
            if self.checkpoint is not None and cfg.checkpoint_every and p.steps % cfg.checkpoint_every == 0:
                self._save_checkpoint()
        bar.close()
        if p.since:
            self._curve_point(len(data), global_batch)

    def _batches(self, data: EncodedDataset, batch_size: int, seed: int) -> Iterator[tuple[Batch, int]]:
        """(batch, rows in its global batch) for the epoch's batches from the one in progress on.
        Several ranks: this rank's part of each global batch, the global batches being those
        one process would draw."""
        if not self.ctx.active:
            for batch in data.batches(batch_size, shuffle=True, seed=seed, skip=self.progress.batch):
                yield batch, len(batch)
            return
        min_part = 2 if self.model.config.batch_norm else 1  # batch norm needs two rows per rank
        for rows, global_rows in global_batches(EpochOrder(len(data), seed), batch_size, self.ctx, self.progress.batch, min_part):
            yield data.batch(rows), global_rows

    def _curve_point(self, rows: int, global_batch: int) -> None:
        """A learning-curve point for the batches since the last one. Its position counts the
        global batches done, so every rank's rows; its loss and AUC are this rank's rows."""
        p = self.progress
        position = p.epoch - 1 + min(p.batch * global_batch, rows) / rows
        self.history.curve.append(_curve_point(position, p.since_rows, p.since_loss, *([x] for x in p.last(p.since_held))))
        p.since, p.since_rows, p.since_loss, p.since_held = 0, 0, 0.0, 0

    # ------------------------------------------------------------ checkpoints
    def _save_checkpoint(self) -> None:
        if self.checkpoint is None:
            return
        rng = self._rng_states()  # collective: every rank comes here at the same step
        if not self.ctx.main:
            return
        p, h = self.progress, self.history
        tensors = {f"model.{k}": v for k, v in self.model.state_dict().items()}
        if self.best_state is not None:
            tensors.update({f"best.{k}": v for k, v in self.best_state.items()})
        adam = self.dense_opt.state_dict()
        for i, st in adam["state"].items():
            tensors.update({f"adam.{i}.{k}": v for k, v in st.items()})
        tensors["rowadam.exp_avg"], tensors["rowadam.exp_avg_sq"] = self.row_opt.exp_avg, self.row_opt.exp_avg_sq
        tensors.update(rng)
        # The epoch so far, batch by batch (the learning curve slices the last batches).
        tensors["epoch.labels"] = torch.from_numpy(p.labels[: p.filled].copy())
        tensors["epoch.logits"] = torch.from_numpy(p.logits[: p.filled].copy())
        progress = {f.name: getattr(p, f.name) for f in dataclasses.fields(p) if f.name not in ("labels", "logits")}
        state = {
            "progress": progress,
            "history": dataclasses.asdict(h),
            "adam_groups": adam["param_groups"],
            "rowadam": {"steps": self.row_opt.steps, "lr": self.row_opt.lr},
            "world_size": self.ctx.world,
            "epoch_order": EPOCH_ORDER,
        }
        with record_function("checkpoint"):
            save_checkpoint(self.checkpoint, tensors, state)

    def _rng_states(self) -> dict[str, torch.Tensor]:
        """Every rank's random generators (dropout masks), for rank 0 to save: ``rng.torch``
        (world, S) uint8 and, on CUDA, ``rng.cuda`` the same for the rank's GPU."""
        states = {"rng.torch": torch.get_rng_state()}
        if self.device.type == "cuda":
            states["rng.cuda"] = torch.cuda.get_rng_state(self.device)
        return {k: all_gather_rows(v.to(self.device).reshape(1, -1), self.ctx).cpu() for k, v in states.items()}

    def _set_rng_states(self, tensors: dict[str, torch.Tensor]) -> None:
        """This rank's generators from :meth:`_rng_states`' tensors (an older checkpoint has
        one (S,) state, which every rank takes)."""
        for key in ("rng.torch", "rng.cuda"):
            if key not in tensors or (key == "rng.cuda" and self.device.type != "cuda"):
                continue
            rows = tensors[key].reshape(-1, tensors[key].shape[-1])
            # clone: a row of the (world, S) tensor is a view starting inside its storage, and
            # set_rng_state on such a view segfaults (seen with torch 2.13).
            mine = rows[min(self.ctx.rank, len(rows) - 1)].clone()
            if key == "rng.torch":
                torch.set_rng_state(mine)
            else:
                torch.cuda.set_rng_state(mine, self.device)

    def _restore(self, tensors: dict[str, torch.Tensor], state: dict[str, Any]) -> None:
        """Load a checkpoint written by :meth:`_save_checkpoint` into this trainer."""
        def part(prefix: str) -> dict[str, torch.Tensor]:
            return {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}

        # A global batch is batch_size x world rows and the checkpoint counts global batches:
        # another world size would skip the wrong rows (and each rank has its own generator).
        world = state.get("world_size")  # None: written before deepfm recorded it
        if world is not None and world != self.ctx.world:
            raise TrainingError(
                f"the checkpoint was written by a run of {world} process(es), this one has {self.ctx.world}: "
                f"resume it with {'--nproc ' + str(world) if world > 1 else 'no --nproc'}"
            )
        if state.get("epoch_order", 1) != EPOCH_ORDER and state["progress"]["batch"] > 0:
            raise TrainingError(
                f"the checkpoint was taken inside epoch {state['progress']['epoch']} by a deepfm that ordered an "
                "epoch's rows differently: resumed here, it would train some of the epoch's rows twice and skip "
                "others. Resume it with the deepfm that wrote it, or start the run again without --resume"
            )

        try:
            self.model.load_state_dict(part("model."))
            best = part("best.")
            self.best_state = {k: v.to(self.device) for k, v in best.items()} if best else None
            adam_state: dict[int, dict[str, torch.Tensor]] = {}
            for k, v in part("adam.").items():
                i, name = k.split(".", 1)
                adam_state.setdefault(int(i), {})[name] = v
            self.dense_opt.load_state_dict({"state": adam_state, "param_groups": state["adam_groups"]})
            self.row_opt.exp_avg.copy_(tensors["rowadam.exp_avg"])
            self.row_opt.exp_avg_sq.copy_(tensors["rowadam.exp_avg_sq"])
            self.row_opt.steps, self.row_opt.lr = state["rowadam"]["steps"], state["rowadam"]["lr"]
            self._set_rng_states(tensors)
            # Rank 0 wrote its own rows of the epoch so far; the other ranks' are lost, which
            # leaves the resumed epoch's training metrics on fewer rows (the weights are exact).
            progress = dict(state["progress"])
            progress.setdefault("loss_rows", progress["filled"])  # written before the metric sample: every row held
            if self.ctx.main:
                labels, logits = tensors["epoch.labels"].numpy().copy(), tensors["epoch.logits"].numpy().copy()
            else:
                labels, logits, progress["filled"] = np.zeros(0, np.float32), np.zeros(0, np.float32), 0
            self.progress = _Progress(**progress, labels=labels, logits=logits)
            self.history = History(**state["history"])
            if not self.ctx.main:  # rank 0's loss so far: counted once, by rank 0
                self.progress.loss_sum, self.progress.loss_rows = 0.0, 0
        except (KeyError, RuntimeError, TypeError, ValueError) as exc:
            raise TrainingError(f"the checkpoint does not fit this model or trainer ({exc}); start the run again without --resume") from None

    def _step(self, batch: Batch, global_rows: int) -> tuple[torch.Tensor, torch.Tensor]:
        """One optimizer step on ``batch``, this rank's part of a global batch of ``global_rows``
        rows. The table rows are looked up outside autograd and made leaves; their gradients go
        to RowAdam, everything else to Adam. Returns (logits, this part's mean loss)."""
        emb = self.model.embedding
        # record_function labels cost nothing unless a profiler listens (benchmarks/profile_step.py).
        with record_function("embedding lookup"):
            rows, bag_rows = emb.lookup(batch.ids, batch.multi_hot)
            leaves = [rows.requires_grad_(), *(r.requires_grad_() for r in bag_rows)]
            e = emb.combine(rows, batch.values, bag_rows, [offsets for offsets, _ in batch.multi_hot])
        logit = self.head(e)
        with record_function("loss"):
            loss = F.binary_cross_entropy_with_logits(logit, batch.labels)
        with record_function("backward"):  # under DDP, the dense all-reduce overlaps this
            self.dense_opt.zero_grad(set_to_none=True)
            # This part's share of the global batch's mean loss: summed over the ranks (DDP for
            # the dense part, RowAdam over the gathered rows), the gradient of one process.
            (loss * (len(batch) / global_rows) if self.ctx.active else loss).backward()
        with record_function("dense optimizer"):
            self.dense_opt.step()
        width = rows.shape[-1]
        if bag_rows:
            ids = torch.cat([batch.ids.reshape(-1), *(mh_ids for _, mh_ids in batch.multi_hot)])
            grads = torch.cat([leaf.grad.reshape(-1, width) for leaf in leaves])  # type: ignore[union-attr]
            used = torch.cat([leaf.detach().reshape(-1, width) for leaf in leaves])
        else:
            ids, grads, used = batch.ids.reshape(-1), rows.grad.reshape(-1, width), rows.detach().reshape(-1, width)  # type: ignore[union-attr]
        if self.ctx.active:
            with record_function("embedding all-gather"):
                ids, grads, used = gather_rows(ids, grads, used if self.row_opt.l2 else None, self.ctx)  # type: ignore[assignment]
        with record_function("embedding optimizer"):
            self.row_opt.step(ids, grads, used, batch_size=global_rows)
        return logit, loss

    @torch.no_grad()
    def predict(self, data: EncodedDataset) -> np.ndarray:
        """Probabilities for every row, in order, through the trainer's calibration (the
        downsampling correction). -> (N,) float64"""
        self.model.eval()
        broadcast_buffers(self.model, self.ctx)  # batch norm's running statistics: rank 0's
        if self.ctx.active:  # each rank scores a slice; all of them get every score
            mine = my_slice(len(data), self.ctx)
            step = self.config.eval_batch_size
            batches = (data.batch(slice(a, min(a + step, mine.stop))) for a in range(mine.start, mine.stop, step))
        else:
            batches = data.batches(self.config.eval_batch_size)
        out = [torch.sigmoid(self.model(b.to(self.device))).double().cpu().numpy() for b in batches]
        scores = np.concatenate(out) if out else np.zeros(0)
        scores = gather_array(scores, self.ctx, self.device)
        return postprocess(scores, self.calibration) if len(scores) else np.zeros(0)


class _Head(nn.Module):
    """A model's part after the embedding, as a module of its own so DistributedDataParallel
    can wrap it: forward(e) = model.head(e), (B, F, D+1) -> (B,) logits."""

    def __init__(self, model: DeepFM) -> None:
        super().__init__()
        self.model = model

    def forward(self, e: torch.Tensor) -> torch.Tensor:
        return self.model.head(e)


# ---------------------------------------------------------------- the whole job
def train(
    config: RunConfig,
    data: str | Path,
    out: str | Path,
    valid: str | Path | None = None,
    test: str | Path | None = None,
    split: str | tuple[float, float, float] | None = None,
    cache: bool = True,
    cache_dir: str | Path | None = None,
    on_epoch: Callable[[dict[str, float]], None] | None = None,
    on_trained: Callable[[Bundle, EncodedDataset | None], None] | None = None,
    resume: bool = False,
    neg_sample_rate: float = 1.0,
    warm_start: str | Path | None = None,
    track: Any = None,
) -> Bundle:
    """Train a model on ``data`` and save it to ``out``. Returns the Bundle (metrics attached).

    Without ``valid`` or ``split`` the file is split 0.9/0.1 by row order so that early
    stopping has validation rows. With ``cache`` the encoded data is kept in ``cache_dir``
    (default: :func:`default_cache_dir`) and reused by later runs on the same files and
    config; without it, it lives in a temporary folder inside ``out``. ``on_trained`` gets
    the saved Bundle and its evaluated part (test, else valid) while the encoded rows exist.

    While it trains, ``out`` holds ``run.json`` (how the run was started) and a checkpoint;
    ``resume=True`` carries on from that checkpoint (see :func:`resume`). Both go once the
    bundle is saved.

    ``neg_sample_rate`` < 1 trains on every positive and that share of the negatives of the
    training part (seeded by train.seed, see :mod:`deepfm.sampling`); valid and test keep every
    row, and the bundle's predictions are corrected back to the full data's click rate.

    ``warm_start``: a model folder to continue from (see :mod:`deepfm.warm`): its schema,
    numeric statistics, vocabularies (grown by the new data's values that pass min_count, capped
    by max_vocab) and weights; ``config`` must keep its fields and model settings. Fresh
    optimizer state; a calibration fitted on the old model is not carried over.

    ``track``: where the run is tracked (default ``config.track``): spec(s) such as
    "tensorboard:DIR" or "mlflow:URI", or a :class:`deepfm.tracking.Tracker`.
    """
    track = config.track if track is None else track
    if track:  # imported only then: the trackers are an optional extra
        from deepfm.tracking import track_run

        run = functools.partial(train, data=data, out=out, valid=valid, test=test, split=split, cache=cache, cache_dir=cache_dir,
                                on_trained=on_trained, resume=resume, neg_sample_rate=neg_sample_rate, warm_start=warm_start)  # fmt: skip
        return track_run(track, config, run, out, on_epoch=on_epoch, warm_start=warm_start)
    device, ctx = resolve_device(config.train.device), Context()
    try:
        ctx, device = setup(device)
        return _train(config, data, out, valid, test, split, cache, cache_dir, on_epoch, on_trained, resume, neg_sample_rate,
                      warm_start, device, ctx)  # fmt: skip
    finally:
        ctx.close()


def _train(
    config: RunConfig, data: str | Path, out: str | Path, valid: str | Path | None, test: str | Path | None,
    split: str | tuple[float, float, float] | None, cache: bool, cache_dir: str | Path | None,
    on_epoch: Callable[[dict[str, float]], None] | None, on_trained: Callable[[Bundle, EncodedDataset | None], None] | None,
    resume: bool, neg_sample_rate: float, warm_start: str | Path | None, device: torch.device, ctx: Context,
) -> Bundle:  # fmt: skip
    """:func:`train` on ``device``, as rank ``ctx.rank`` of ``ctx.world``."""
    t_start = time.perf_counter()
    cfg = config.train
    calib = Calibration(neg_sample_rate=neg_sample_rate)  # checks the rate
    base = Bundle.load(warm_start) if warm_start is not None else None
    if base is not None:
        check_compatible(base, config.schema, config.model)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    split_parts = parse_split(split)
    if split_parts is None and valid is None:
        split_parts = (0.9, 0.1, 0.0)
        log.info("no --valid or --split given: using the last 10%% of %s for validation", data)
    out = Path(out)
    checkpoint = out / CHECKPOINT
    if not resume:
        # One GPU per process on this machine: torchrun's LOCAL_WORLD_SIZE (several machines
        # each run their share of the world).
        check_start(config, data, out, valid, test, split, nproc=int(os.environ.get("LOCAL_WORLD_SIZE", ctx.world)))
        out.mkdir(parents=True, exist_ok=True)
        run = {"config": config.to_dict(), "data": str(data), "valid": _str(valid), "test": _str(test),
               "split": split_parts, "cache": cache, "cache_dir": _str(cache_dir), "files": _identities(data, valid, test),
               "neg_sample_rate": neg_sample_rate, "warm_start": _str(warm_start), "world_size": ctx.world}  # fmt: skip
        if ctx.main:
            write_atomic(out / RUN, json.dumps(run, indent=1).encode())
    with tempfile.TemporaryDirectory(prefix=".encoded-", dir=out) as tmp:
        t0 = time.perf_counter()
        if cache and not ctx.main:
            ctx.wait_for_main()  # rank 0 fills the cache first; the others then read it
        if cache:
            where = Path(cache_dir) if cache_dir is not None else default_cache_dir()
            base_key = _sha256_file(Path(warm_start) / "manifest.json") if warm_start is not None else None
            pipeline, parts, hit = prepare_cached(
                config, data, where, valid=valid, test=test, split=split_parts,
                base=base.pipeline if base else None, base_key=base_key,
            )  # fmt: skip
            if hit:
                log.info("reusing encoded data from %s", parts.train.folder.parent)
        else:
            pipeline, parts = prepare(config, data, Path(tmp), valid=valid, test=test, split=split_parts, base=base.pipeline if base else None)
            hit = False
        if cache and ctx.main:
            ctx.wait_for_main()
        rows_before = len(parts.train)
        # What `deepfm drift` compares new data with: the held-out valid part when there is one
        # (rows the vocabulary was not fitted on, so their OOV rate is what new rows of the same
        # days show), else the whole training part before downsampling.
        reference = parts.valid if parts.valid is not None and len(parts.valid) else parts.train
        train_profile = {**profile(pipeline, reference), "part": "valid" if reference is parts.valid else "train"}
        if neg_sample_rate < 1.0:
            parts.train = downsample(parts.train, neg_sample_rate, cfg.seed, Path(tmp) / "downsampled")
            log.info("negative downsampling at %g: %d of %d training rows kept", neg_sample_rate, len(parts.train), rows_before)
        prep_seconds = time.perf_counter() - t0
        layout = InputLayout.of(pipeline)
        # Seed here, at the top of the job (not in constructors): init, dropout and shuffling
        # all follow from train.seed.
        torch.manual_seed(cfg.seed)
        model_config = warm_model_config(config.model, base) if base is not None else config.model
        model = DeepFM(layout, model_config.resolved(layout, len(parts.train)))
        warm: dict[str, Any] | None = None
        if base is not None:
            warm = {"from": str(warm_start), **warm_start_weights(model, pipeline, base)}
            log.info("warm start from %s: %d known values kept, %d new, %d evicted", warm_start,
                     warm["known_values_kept"], warm["new_values"], warm["evicted_values"])  # fmt: skip
        if ctx.active:
            # Every rank built the same model from train.seed; from here on each draws its own
            # dropout masks. With one shared generator, row i of every rank's part would get
            # the same mask, which one process drawing for the whole global batch never does.
            torch.manual_seed(int(np.random.SeedSequence([cfg.seed, ctx.rank]).generate_state(1)[0]))
        batch_size = cfg.resolve_batch_size(len(parts.train))
        density = rows_per_table_row(len(parts.train), layout)
        cfg = dataclasses.replace(cfg, batch_size=batch_size, embedding_lr=cfg.resolve_embedding_lr(density))
        # The run's "auto" settings made concrete, in the config saved with the model: it
        # trains the same model again.
        config = dataclasses.replace(config, model=model.config, train=cfg)
        log.info(
            "training %s on %d rows (%d fields, %d embedding rows), batch %d on %s%s",
            config.model.kind, len(parts.train), layout.n_fields, layout.num_embeddings, batch_size, device,
            f", rank {ctx.rank} of {ctx.world} (global batch {batch_size * ctx.world})" if ctx.active else "",
        )  # fmt: skip
        trainer = Trainer(model, cfg, device, checkpoint=checkpoint, calibration=calib, ctx=ctx)
        state = None
        if resume and checkpoint.exists():
            state = load_checkpoint(checkpoint)
            p = state[1]["progress"]
            log.info("resuming from %s: epoch %d, batch %d (step %d)", checkpoint, p["epoch"], p["batch"], p["steps"])
        elif resume:
            log.info("no checkpoint in %s yet: starting the run from its beginning", out)
        history = trainer.fit(parts.train, parts.valid, batch_size, on_epoch=on_epoch, resume=state)
        fitted = calibrate_on_valid(trainer, parts.valid) if cfg.calibrate and parts.valid is not None else None
        metrics: dict[str, Any] = {
            "model": config.model.kind,
            "epochs": len(history.epochs),
            "best_epoch": history.best_epoch,
            "batch_size": batch_size,
            "world_size": ctx.world,  # processes (batch_size is per process)
            "train_rows": len(parts.train),
            "train_rows_before_downsampling": rows_before,
            "neg_sample_rate": neg_sample_rate,
            "warm_start": warm,
            "resolved": {"init_std": model.config.init_std, "batch_norm": model.config.batch_norm, "batch_size": batch_size,
                         "embedding_lr": cfg.embedding_lr, "rows_per_table_row": density},
            "valid_calibration": fitted,
            "train_samples_per_s": history.train_samples / max(history.train_seconds, 1e-9),
            "train_seconds": history.train_seconds,
            "preprocess_seconds": prep_seconds,
            "preprocess_cache": "hit" if hit else ("miss" if cache else "off"),
            "skipped_rows": parts.skipped_rows,
            "device": str(device),
            "history": history.epochs,
            "train_curve": history.curve,
        }
        # A cache hit parsed nothing: no throughput to report (null, so the key is always there).
        metrics["preprocess_rows_per_s"] = None if hit else parts.rows_read / max(prep_seconds, 1e-9)
        # The report's calibration and ROC come from the test part (the valid part without one).
        evaluated = parts.test if parts.test is not None and len(parts.test) else parts.valid
        for name, part in (("valid", parts.valid), ("test", parts.test)):
            if part is not None and len(part):
                t_pred = time.perf_counter()
                p = trainer.predict(part)
                metrics[f"{name}_predict_samples_per_s"] = len(part) / max(time.perf_counter() - t_pred, 1e-9)
                metrics.update({f"{name}_{k}": v for k, v in summary(part.labels, p).items()})
                if part is evaluated:
                    metrics["evaluation"] = {"part": name, "calibration": calibration(part.labels, p), "roc": roc_curve(part.labels, p)}
        metrics["total_seconds"] = time.perf_counter() - t_start
        extra = {PROFILE_FILE: json.dumps(train_profile).encode()}
        bundle = Bundle(config, pipeline, model.cpu().eval(), metrics, calibration=trainer.calibration, extra=extra)
        if ctx.main:  # the other ranks hold the same weights and metrics
            bundle.save(out)
            log.info("saved the model to %s", out)
            for name in (CHECKPOINT, RUN):  # the run is complete: nothing left to resume
                (out / name).unlink(missing_ok=True)
            if on_trained is not None:
                on_trained(bundle, evaluated)
        del parts, evaluated  # release the memory maps before the folder goes
    return bundle


MIN_CALIBRATION_ROWS = 50  # of each class in the validation part, to fit Platt's two parameters


def calibrate_on_valid(trainer: Trainer, valid: EncodedDataset) -> dict[str, Any] | None:
    """Fit Platt scaling on the validation rows' scores and make it part of the trainer's
    calibration (after any downsampling correction). Returns what was fitted, or None when
    the rows hold fewer than MIN_CALIBRATION_ROWS of a class."""
    labels = np.asarray(valid.labels, dtype=np.float64)
    positives = int(labels.sum())
    if min(positives, len(labels) - positives) < MIN_CALIBRATION_ROWS:
        log.info("no calibration: the validation part has %d positive and %d negative rows", positives, len(labels) - positives)
        return None
    scores = trainer.predict(valid)
    fitted = fit_calibration(scores, labels, "platt", base=trainer.calibration)
    a, b = fitted.platt
    if not a > 0:  # a model ranking the validation rows no better than chance: leave it be
        log.warning("no calibration: Platt scaling on the validation rows would reverse the ranking (a = %.3g)", a)
        return None
    trainer.calibration = fitted
    log.info("Platt calibration on %d validation rows: sigmoid(%.3f * logit + %.3f)", len(labels), a, b)
    return {"method": "platt", "platt": [a, b], "rows": len(labels), "valid_logloss_before": logloss(labels, scores)}


def check_start(
    config: RunConfig, data: str | Path, out: str | Path, valid: str | Path | None = None, test: str | Path | None = None,
    split: str | tuple[float, float, float] | None = None, nproc: int = 1,
) -> None:  # fmt: skip
    """What :func:`train` checks before it reads the data: the split, that the data files
    exist, the device (one GPU for each of the ``nproc`` processes on this machine), and that
    ``out`` holds no interrupted run. ``deepfm train --nproc N`` calls it before it starts any
    process, so a mistake is one error line rather than one per rank."""
    parse_split(split)
    for name, path in (("data", data), ("valid", valid), ("test", test)):
        if path is not None and not Path(path).exists():
            raise DataError(f"file not found (the {name} file)", path=str(path))
    device = resolve_device(config.train.device)
    if device.type == "cuda" and nproc > 1 and torch.cuda.device_count() < nproc:
        raise ConfigError(
            f"{nproc} processes on this machine want a GPU each; PyTorch sees {torch.cuda.device_count()}: "
            "start fewer processes, or train on the CPU (--device cpu)"
        )
    if (Path(out) / CHECKPOINT).exists():
        raise ConfigError(
            f"{out} holds the checkpoint of an interrupted run: carry on with "
            f"'deepfm train --resume {out}', or remove {Path(out) / CHECKPOINT} to start again"
        )


def resume(out: str | Path, train_overrides: dict[str, Any] | None = None, **kwargs: Any) -> Bundle:
    """Carry on with the interrupted run in ``out``: same config and data as it was started
    with (``run.json``), from its last checkpoint. ``train_overrides`` may change settings
    that do not alter the model, such as lr, embedding_lr, epochs or threads (after a NaN
    loss, say); without them the result is what the uninterrupted run would have saved."""
    config, run = check_resume(out, train_overrides, world=int(os.environ.get("WORLD_SIZE", "1")))
    split = tuple(run["split"]) if run["split"] is not None else None
    return train(
        config, run["data"], out, valid=run["valid"], test=run["test"], split=split,  # type: ignore[arg-type]
        cache=run["cache"], cache_dir=run["cache_dir"], resume=True, neg_sample_rate=run.get("neg_sample_rate", 1.0),
        warm_start=run.get("warm_start"), **kwargs,
    )  # fmt: skip


def check_resume(out: str | Path, train_overrides: dict[str, Any] | None = None, world: int = 1) -> tuple[RunConfig, dict[str, Any]]:
    """The config (with ``train_overrides``) and run.json of the interrupted run in ``out``,
    or a ConfigError or DataError saying why it cannot be resumed as asked: in ``world``
    processes, on the files it started with. ``deepfm train --resume --nproc N`` calls it
    before it starts any process."""
    from deepfm.config import with_overrides

    out = Path(out)
    if not (out / RUN).is_file():
        done = " (it holds a finished model)" if (out / "manifest.json").is_file() else ""
        raise ConfigError(f"nothing to resume in {out}: no {RUN}{done}")
    try:
        run = json.loads((out / RUN).read_text())
        missing = {"config", "data", "valid", "test", "split", "cache", "cache_dir", "files"} - set(run)
    except (OSError, json.JSONDecodeError, TypeError) as exc:
        raise ConfigError(f"{out / RUN}: unreadable ({exc})") from None
    if missing:
        raise ConfigError(f"{out / RUN}: not a run description written by deepfm train (no {sorted(missing)})")
    config = RunConfig.from_dict(run["config"], where=str(out / RUN))
    fixed = {"seed", "batch_size", "l2_embedding", "weight_decay", "lr_decay", "checkpoint_every"}
    changed = sorted(k for k, v in (train_overrides or {}).items() if v is not None and k in fixed)
    if changed:
        raise ConfigError(f"--resume carries on the same run: {', '.join(changed)} cannot change")
    config = with_overrides(config, model={}, train=train_overrides or {}, data={})
    if _identities(run["data"], run["valid"], run["test"]) != run["files"]:
        raise DataError(f"the data files changed since the run started ({run['files']}); start it again without --resume")
    started = run.get("world_size", 1)  # run.json before deepfm recorded it: checked on the checkpoint only
    if "world_size" in run and started != world:
        raise ConfigError(
            f"{out} was started in {started} process(es) and must carry on in as many (the checkpoint counts "
            f"global batches of --batch-size x processes): resume it with {'--nproc ' + str(started) if started > 1 else 'no --nproc'}"
        )
    return config, run


def _identities(*paths: str | Path | None) -> list[list[Any] | None]:
    """(path, size, modification time) of each file: a resumed run must read the same data."""
    out: list[list[Any] | None] = []
    for p in paths:
        if p is None or not Path(p).is_file():
            out.append(None)
        else:
            st = Path(p).stat()
            out.append([str(Path(p).resolve()), st.st_size, st.st_mtime_ns])
    return out


def _sha256_file(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _str(p: str | Path | None) -> str | None:
    return None if p is None else str(p)


def _adam(params: list[torch.nn.Parameter], lr: float, weight_decay: float) -> torch.optim.Adam:
    """Adam with the fused kernel where this torch has it (one pass over each tensor)."""
    try:
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay, fused=True)
    except (RuntimeError, TypeError):
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay, foreach=True)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError("--device cuda asked for, but PyTorch sees no CUDA device")
    return torch.device(name)


def _curve_point(position: float, rows: int, loss_sum: float, labels: list[np.ndarray], logits: list[np.ndarray]) -> dict[str, float]:
    """One learning-curve point: rows, mean loss and AUC of the batches since the point before."""
    return {"epoch": position, "rows": rows, "loss": loss_sum / rows, "auc": auc(np.concatenate(labels), np.concatenate(logits))}


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x.astype(np.float64)))


def _fmt(x: float | None) -> str:
    return "-" if x is None else f"{x:.4f}"
