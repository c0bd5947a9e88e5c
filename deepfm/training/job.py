"""Training: from files to a saved Bundle.

:func:`train` is the whole job, in the steps of :class:`_Job`: check the start and write
``run.json``; read and split the data, fit the FeaturePipeline on the training part only and
encode every part (through the cache); build the model (warm-started from an earlier one, if
asked); fit it with the Trainer (early stopping on validation AUC, best weights restored,
Platt calibration on the validation rows); evaluate; save the Bundle.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from deepfm.bundle import Bundle
from deepfm.config import RunConfig, TrainConfig, rows_per_table_row
from deepfm.data.column_split import ColumnSplit
from deepfm.data.encoded import EncodedDataset
from deepfm.data.sampling import downsample
from deepfm.data.schema import Schema
from deepfm.data.storage import DataSpec, is_dataset, list_files
from deepfm.features.pipeline import FeaturePipeline
from deepfm.features.profile import PROFILE_FILE, profile
from deepfm.model.calibration import Calibration
from deepfm.model.calibration import fit as fit_calibration
from deepfm.model.deepfm import DeepFM, InputLayout
from deepfm.training.cache import default_cache_dir, prepare_cached
from deepfm.training.checkpoint import CHECKPOINT, load_checkpoint
from deepfm.training.distributed import Context, resolve_device, setup
from deepfm.training.inputs import RUN, RunInputs, check_resume, check_start, write_run
from deepfm.training.parts import Parts, can_prepare_on_ranks, prepare
from deepfm.training.progress import History
from deepfm.training.sharded import field_tables
from deepfm.training.sharded_trainer import ShardedTrainer, require_process_group
from deepfm.training.trainer import Trainer
from deepfm.training.warm import check_compatible, warm_model_config, warm_start_weights
from deepfm.util.files import sha256_file
from deepfm.util.metrics import calibration, logloss, roc_curve, summary
from deepfm.util.validation import Auto

log = logging.getLogger(__name__)
MIN_CALIBRATION_ROWS = 50  # of each class in the validation part, to fit Platt's two parameters

EpochHook = Callable[[dict[str, float]], None]
TrainedHook = Callable[[Bundle, EncodedDataset | None], None]


def train(
    config: RunConfig,
    data: DataSpec,
    out: str | Path,
    valid: DataSpec | None = None,
    test: DataSpec | None = None,
    split: str | tuple[float, float, float] | None = None,
    cache: bool = True,
    cache_dir: str | Path | None = None,
    on_epoch: EpochHook | None = None,
    on_trained: TrainedHook | None = None,
    resume: bool = False,
    neg_sample_rate: float = 1.0,
    warm_start: str | Path | None = None,
    track: Any = None,
    split_by: ColumnSplit | None = None,
) -> Bundle:
    """Train a model on ``data`` and save it to ``out``. Returns the Bundle (metrics attached).
    ``data``, ``valid``, ``test``: a file, folder, glob, URI or a list of them (docs/datasets.md);
    ``split_by``: split ``data`` by a column's value (time) rather than by row order.

    Without ``valid`` or ``split`` the file is split 0.9/0.1 by row order so that early
    stopping has validation rows. With ``cache`` the encoded data is kept in ``cache_dir``
    (default: :func:`~deepfm.training.cache.default_cache_dir`) and reused by later runs on
    the same files and config; without it, it lives in a temporary folder inside ``out``.
    ``on_trained`` gets the saved Bundle and its evaluated part (test, else valid) while the
    encoded rows exist.

    While it trains, ``out`` holds ``run.json`` (how the run was started) and a checkpoint;
    ``resume=True`` carries on from that checkpoint (see :func:`resume`). Both go once the
    bundle is saved.

    ``neg_sample_rate`` < 1 trains on every positive and that share of the negatives of the
    training part (seeded by train.seed, see :mod:`deepfm.data.sampling`); valid and test keep
    every row, and the bundle's predictions are corrected back to the full data's click rate.

    ``warm_start``: a model folder to continue from (see :mod:`deepfm.training.warm`): its
    schema, numeric statistics, vocabularies (grown by the new data's values that pass
    min_count, capped by max_vocab) and weights; ``config`` must keep its fields and model
    settings. Fresh optimizer state; a calibration fitted on the old model is not carried over.

    ``track``: where the run is tracked (default ``config.track``): spec(s) such as
    "tensorboard:DIR" or "mlflow:URI", or a :class:`deepfm.training.tracking.Tracker`.
    """
    inputs = RunInputs(data, valid, test, split, cache, cache_dir, neg_sample_rate, warm_start, split_by)  # type: ignore[arg-type]
    return run_training(config, inputs, out, on_epoch=on_epoch, on_trained=on_trained, resume=resume, track=track)


def run_training(
    config: RunConfig,
    inputs: RunInputs,
    out: str | Path,
    *,
    on_epoch: EpochHook | None = None,
    on_trained: TrainedHook | None = None,
    resume: bool = False,
    track: Any = None,
) -> Bundle:
    """:func:`train` on the files and settings of ``inputs``."""
    track = config.track if track is None else track
    if track:  # imported only then: the trackers are an optional extra
        from deepfm.training.tracking import track_run

        run = functools.partial(run_training, inputs=inputs, out=out, on_trained=on_trained, resume=resume)
        return track_run(track, config, run, out, on_epoch=on_epoch, warm_start=inputs.warm_start)
    device, ctx = resolve_device(config.train.device), Context()
    try:
        # Sharded tables need a process group, also in one process (torchrun sets one up).
        ctx, device = setup(device, group=config.train.shard_tables is not None)
        return _Job(config, inputs, Path(out), device, ctx).run(on_epoch, on_trained, resume)
    finally:
        ctx.close()


def resume(out: str | Path, train_overrides: dict[str, Any] | None = None, **kwargs: Any) -> Bundle:
    """Carry on with the interrupted run in ``out``: same config and data as it was started
    with (``run.json``), from its last checkpoint. ``train_overrides`` may change settings
    that do not alter the model, such as lr, embedding_lr, epochs or threads (after a NaN
    loss, say); without them the result is what the uninterrupted run would have saved.
    ``kwargs``: ``on_epoch`` and ``on_trained`` as :func:`train` takes them."""
    config, inputs = check_resume(out, train_overrides, world=int(os.environ.get("WORLD_SIZE", "1")))
    return run_training(config, inputs, out, resume=True, **kwargs)


@dataclass
class _Prepared:
    """The encoded data of a run and what preparing it measured."""

    pipeline: FeaturePipeline
    parts: Parts
    hit: bool  # found in the cache
    rows_before: int  # training rows before negative downsampling
    profile: dict[str, Any]
    seconds: float


class _Job:
    """One training run, as rank ``ctx.rank`` of ``ctx.world`` on ``device``: its steps."""

    def __init__(self, config: RunConfig, inputs: RunInputs, out: Path, device: torch.device, ctx: Context) -> None:
        self.config, self.out, self.device, self.ctx = config, out, device, ctx
        self.t_start = time.perf_counter()
        self.calibration = Calibration(neg_sample_rate=inputs.neg_sample_rate)  # checks the rate
        self.base = Bundle.load(inputs.warm_start) if inputs.warm_start is not None else None
        if self.base is not None:
            check_compatible(self.base, config.schema, config.model)
        if config.train.threads:
            torch.set_num_threads(config.train.threads)
        if config.train.shard_tables is not None:
            require_process_group()  # before the data is read, not after
        self.inputs = inputs.with_default_split()

    def run(self, on_epoch: EpochHook | None, on_trained: TrainedHook | None, resume: bool) -> Bundle:
        if not resume:
            # One GPU per process on this machine: torchrun's LOCAL_WORLD_SIZE (several machines
            # each run their share of the world).
            check_start(
                self.config, self.inputs, self.out, nproc=int(os.environ.get("LOCAL_WORLD_SIZE", self.ctx.world))
            )
            self.out.mkdir(parents=True, exist_ok=True)
            if self.ctx.main:
                write_run(self.out, self.config, self.inputs, self.ctx.world)
        with tempfile.TemporaryDirectory(prefix=".encoded-", dir=self.out) as tmp:
            prepared = self.prepare(Path(tmp))
            model, warm = self.build_model(prepared.pipeline, len(prepared.parts.train))
            trainer, history, fitted = self.fit(model, prepared, on_epoch, resume)
            metrics = self.metrics(prepared, trainer, history, warm, fitted)
            evaluated = self.evaluate(trainer, prepared.parts, metrics)
            bundle = self.save(prepared, trainer, metrics, evaluated, on_trained)
            del prepared, evaluated  # release the memory maps before the folder goes
        return bundle

    def prepare(self, tmp: Path) -> _Prepared:
        """The encoded parts (from the cache, filled by rank 0 first), their profile for drift
        checks, and the training part downsampled."""
        t0, inputs, ctx, base = time.perf_counter(), self.inputs, self.ctx, self.base
        # A dataset of a file per rank or more (a Parquet file: a row group): each rank parses its
        # share of the files listed once here, and encodes its rows into the cache they all see.
        may_share = inputs.cache and ctx.active and inputs.split_by is None and base is None
        files = list_files(inputs.data) if may_share and is_dataset(inputs.data) else None
        together = inputs.cache and can_prepare_on_ranks(
            inputs.data, ctx.world, inputs.split_by, base is not None, self.config.data, files
        )
        if inputs.cache and not ctx.main and not together:
            ctx.wait_for_main()  # rank 0 fills the cache first; the others then read it
        if inputs.cache:
            where = Path(inputs.cache_dir) if inputs.cache_dir is not None else default_cache_dir()
            base_key = sha256_file(Path(inputs.warm_start) / "manifest.json") if inputs.warm_start is not None else None
            pipeline, parts, hit = prepare_cached(
                self.config,
                inputs.data,
                where,
                valid=inputs.valid,
                test=inputs.test,
                split=inputs.split,
                base=base.pipeline if base else None,
                split_by=inputs.split_by,
                base_key=base_key,
                ctx=ctx if together else None,
                data_files=files if together else None,
            )
            if hit:
                log.info("reusing encoded data from %s", parts.train.folder.parent)
        else:
            pipeline, parts = prepare(
                self.config,
                inputs.data,
                tmp,
                valid=inputs.valid,
                test=inputs.test,
                split=inputs.split,
                base=base.pipeline if base else None,
                split_by=inputs.split_by,
            )
            hit = False
        if inputs.cache and ctx.main and not together:
            ctx.wait_for_main()
        rows_before = len(parts.train)
        # What `deepfm drift` compares new data with: the held-out valid part when there is one
        # (rows the vocabulary was not fitted on, so their OOV rate is what new rows of the same
        # days show), else the whole training part before downsampling.
        reference = parts.valid if parts.valid is not None and len(parts.valid) else parts.train
        train_profile = {**profile(pipeline, reference), "part": "valid" if reference is parts.valid else "train"}
        if inputs.neg_sample_rate < 1.0:
            parts.train = downsample(parts.train, inputs.neg_sample_rate, self.config.train.seed, tmp / "downsampled")
            log.info(
                "negative downsampling at %g: %d of %d training rows kept",
                inputs.neg_sample_rate,
                len(parts.train),
                rows_before,
            )
        return _Prepared(pipeline, parts, hit, rows_before, train_profile, time.perf_counter() - t0)

    def build_model(self, pipeline: FeaturePipeline, train_rows: int) -> tuple[DeepFM, dict[str, Any] | None]:
        """The model for ``pipeline``'s inputs and ``train_rows`` training rows (its "auto"
        settings), seeded by train.seed, warm-started when asked."""
        seed = self.config.train.seed
        # Seed here, at the top of the job (not in constructors): init, dropout and shuffling
        # all follow from train.seed.
        torch.manual_seed(seed)
        layout = InputLayout.of(pipeline)
        model_config = warm_model_config(self.config.model, self.base) if self.base is not None else self.config.model
        model = DeepFM(layout, model_config.resolved(layout, train_rows))
        warm: dict[str, Any] | None = None
        if self.base is not None:
            warm = {"from": str(self.inputs.warm_start), **warm_start_weights(model, pipeline, self.base)}
            log.info(
                "warm start from %s: %d known values kept, %d new, %d evicted",
                self.inputs.warm_start,
                warm["known_values_kept"],
                warm["new_values"],
                warm["evicted_values"],
            )
        if self.ctx.active:
            # Every rank built the same model from train.seed; from here on each draws its own
            # dropout masks. With one shared generator, row i of every rank's part would get
            # the same mask, which one process drawing for the whole global batch never does.
            torch.manual_seed(int(np.random.SeedSequence([seed, self.ctx.rank]).generate_state(1)[0]))
        return model, warm

    def fit(
        self, model: DeepFM, prepared: _Prepared, on_epoch: EpochHook | None, resume: bool
    ) -> tuple[Trainer, History, dict[str, Any] | None]:
        """Train ``model`` (from the checkpoint when resuming) and calibrate it on the valid part."""
        cfg, ctx, checkpoint, parts = self.config.train, self.ctx, self.out / CHECKPOINT, prepared.parts
        layout = model.layout
        warm = self.inputs.warm_start is not None
        cfg = resolve_train(cfg, len(parts.train), layout, model.config.uses_dnn, ctx.world, warm)
        batch_size = int(cfg.batch_size)
        # The run's "auto" settings made concrete, in the config saved with the model: it
        # trains the same model again.
        self.config = dataclasses.replace(self.config, schema=prepared.pipeline.schema, model=model.config, train=cfg)
        log.info(
            "training %s on %d rows (%d fields, %d embedding rows), batch %d on %s%s",
            model.config.kind,
            len(parts.train),
            layout.n_fields,
            layout.num_embeddings,
            batch_size,
            self.device,
            f", rank {ctx.rank} of {ctx.world} (global batch {batch_size * ctx.world})" if ctx.active else "",
        )
        trainer = (
            ShardedTrainer(model, cfg, self.device, field_tables(prepared.pipeline), checkpoint, self.calibration, ctx)
            if cfg.shard_tables is not None
            else Trainer(model, cfg, self.device, checkpoint=checkpoint, calibration=self.calibration, ctx=ctx)
        )
        state = None
        if resume and checkpoint.exists():
            state = load_checkpoint(checkpoint)
            p = state[1]["progress"]
            log.info("resuming from %s: epoch %d, batch %d (step %d)", checkpoint, p["epoch"], p["batch"], p["steps"])
        elif resume:
            log.info("no checkpoint in %s yet: starting the run from its beginning", self.out)
        history = trainer.fit(parts.train, parts.valid, batch_size, on_epoch=on_epoch, resume=state)
        fitted = calibrate_on_valid(trainer, parts.valid) if cfg.calibrate and parts.valid is not None else None
        return trainer, history, fitted

    def metrics(
        self,
        prepared: _Prepared,
        trainer: Trainer,
        history: History,
        warm: dict[str, Any] | None,
        fitted: dict[str, Any] | None,
    ) -> dict[str, Any]:
        """metrics.json, less what evaluating the parts adds (:meth:`evaluate`)."""
        parts, config = prepared.parts, self.config
        batch_size = int(config.train.batch_size)
        return {
            "model": config.model.kind,
            "epochs": len(history.epochs),
            "best_epoch": history.best_epoch,
            "batch_size": batch_size,
            "world_size": self.ctx.world,  # processes (batch_size is per process)
            "train_rows": len(parts.train),
            "train_rows_before_downsampling": prepared.rows_before,
            "neg_sample_rate": self.inputs.neg_sample_rate,
            "warm_start": warm,
            "resolved": {
                "init_std": config.model.init_std,
                "batch_norm": config.model.batch_norm,
                "batch_size": batch_size,
                "embedding_lr": config.train.embedding_lr,
                "reset_embeddings": config.train.reset_embeddings,
                "rows_per_table_row": rows_per_table_row(len(parts.train), trainer.model.layout),
                "min_count": resolved_min_count(config.schema),
            },
            "valid_calibration": fitted,
            # --shard-tables: where each field's table was placed ({field: [how, ranks]})
            "shard_tables": (
                {"mode": config.train.shard_tables, "placement": trainer.sharded.placement}
                if isinstance(trainer, ShardedTrainer)
                else None
            ),
            "train_samples_per_s": history.train_samples / max(history.train_seconds, 1e-9),
            "train_seconds": history.train_seconds,
            "preprocess_seconds": prepared.seconds,
            "preprocess_cache": "hit" if prepared.hit else ("miss" if self.inputs.cache else "off"),
            "skipped_rows": parts.skipped_rows,
            "device": str(self.device),
            "history": history.epochs,
            "train_curve": history.curve,
            # A cache hit parsed nothing: no throughput to report (null, so the key is always there).
            "preprocess_rows_per_s": None if prepared.hit else parts.rows_read / max(prepared.seconds, 1e-9),
        }

    def evaluate(self, trainer: Trainer, parts: Parts, metrics: dict[str, Any]) -> EncodedDataset | None:
        """The valid and test parts' figures into ``metrics``; the part the report's calibration
        and ROC come from (test, else valid) is returned."""
        evaluated = parts.test if parts.test is not None and len(parts.test) else parts.valid
        for name, part in (("valid", parts.valid), ("test", parts.test)):
            if part is not None and len(part):
                t_pred = time.perf_counter()
                p = trainer.predict(part)
                metrics[f"{name}_predict_samples_per_s"] = len(part) / max(time.perf_counter() - t_pred, 1e-9)
                metrics.update({f"{name}_{k}": v for k, v in summary(part.labels, p).items()})
                if part is evaluated:
                    metrics["evaluation"] = {
                        "part": name,
                        "calibration": calibration(part.labels, p),
                        "roc": roc_curve(part.labels, p),
                    }
        metrics["total_seconds"] = time.perf_counter() - self.t_start
        return evaluated

    def save(
        self,
        prepared: _Prepared,
        trainer: Trainer,
        metrics: dict[str, Any],
        evaluated: EncodedDataset | None,
        on_trained: TrainedHook | None,
    ) -> Bundle:
        """The Bundle, saved by rank 0 (the other ranks hold the same weights and metrics)."""
        extra = {PROFILE_FILE: json.dumps(prepared.profile).encode()}
        model = trainer.model.cpu().eval()
        bundle = Bundle(self.config, prepared.pipeline, model, metrics, calibration=trainer.calibration, extra=extra)
        if self.ctx.main:
            bundle.save(self.out)
            log.info("saved the model to %s", self.out)
            for name in (CHECKPOINT, RUN):  # the run is complete: nothing left to resume
                (self.out / name).unlink(missing_ok=True)
            if on_trained is not None:
                on_trained(bundle, evaluated)
        return bundle


def resolved_min_count(schema: Schema) -> int | Auto | dict[str, int | Auto] | None:
    """The min_count the fields with a vocabulary were fitted with: one value when they
    share it, else each field's; None when no field has a vocabulary."""
    counts = {f.name: f.min_count for f in schema.fields if f.has_vocabulary}
    shared = set(counts.values())
    return shared.pop() if len(shared) == 1 else counts or None


def resolve_train(
    cfg: TrainConfig, n_train: int, layout: InputLayout, deep: bool, world: int = 1, warm: bool = False
) -> TrainConfig:
    """``cfg`` with its "auto" settings made concrete for ``n_train`` training rows of
    ``layout``, a model with or without a ``deep`` part, ``warm``-started or not. The batch is
    per process; the embedding step follows the global batch (``world`` processes' batches make
    one update of the table), so N processes at batch B/N take the step one process takes at B."""
    batch_size = cfg.resolve_batch_size(n_train)
    density = rows_per_table_row(n_train, layout)
    embedding_lr = cfg.resolve_embedding_lr(density, batch_size * world, deep)
    reset = cfg.resolve_reset_embeddings(deep, warm)
    return dataclasses.replace(cfg, batch_size=batch_size, embedding_lr=embedding_lr, reset_embeddings=reset)


def calibrate_on_valid(trainer: Trainer, valid: EncodedDataset) -> dict[str, Any] | None:
    """Fit Platt scaling on the validation rows' scores and make it part of the trainer's
    calibration (after any downsampling correction). Returns what was fitted, or None when
    the rows hold fewer than MIN_CALIBRATION_ROWS of a class."""
    labels = np.asarray(valid.labels, dtype=np.float64)
    positives = int(labels.sum())
    if min(positives, len(labels) - positives) < MIN_CALIBRATION_ROWS:
        log.info(
            "no calibration: the validation part has %d positive and %d negative rows",
            positives,
            len(labels) - positives,
        )
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
