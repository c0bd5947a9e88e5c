"""deepfm schema, train, compare, tune."""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import tempfile
from dataclasses import asdict
from pathlib import Path
from typing import Any

from deepfm.analysis.plots import require_matplotlib
from deepfm.analysis.report import write_report
from deepfm.cli.common import (
    check_out_outside_data,
    read_overrides,
    run_config,
    run_inputs,
    shape_flags,
    usage_error,
)
from deepfm.data.readers import open_reader
from deepfm.data.schema_inference import infer_schema, schema_yaml
from deepfm.data.source import ReadOptions
from deepfm.data.storage import is_uri, upload_folder
from deepfm.training import check_resume, check_start, resume, run_training
from deepfm.training.compare import compare, to_markdown
from deepfm.training.tune import tune

log = logging.getLogger("deepfm")


def cmd_schema(args: argparse.Namespace) -> int:
    options = ReadOptions(**{k: v for k, v in read_overrides(args).items() if v is not None})
    schema, guesses = infer_schema(open_reader(args.data, options), args.label)
    text = schema_yaml(schema, guesses, str(args.data))
    if options != ReadOptions():  # what it took to read the file, for the config to say too
        given = {k: v for k, v in asdict(options).items() if v != getattr(ReadOptions(), k)}
        text += "data: " + json.dumps(given) + "\n"
    sys.stdout.write(text)
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    if is_uri(args.out):
        return _train_to_uri(args)
    if args.nproc is not None and args.nproc < 1:
        raise usage_error(f"--nproc must be at least 1, got {args.nproc}")
    under_torchrun = "WORLD_SIZE" in os.environ
    # Everything below that can fail on the arguments runs before --nproc starts any process:
    # a bad config or flag is one line, not one per rank under torchrun's report of failed children.
    out = args.resume if args.resume is not None else args.out
    on_trained = _report_writer(out / "report.html") if args.report else None
    if args.resume is not None:
        overrides = _resume_overrides(args)
        if not under_torchrun:
            config, _ = check_resume(args.resume, overrides, world=args.nproc or 1)
            if _launches(args, config):
                return _launch(args.argv, args.nproc)
        bundle = resume(args.resume, overrides, on_trained=on_trained, track=_tracker(args.track, args.register))
    else:
        if args.data is None:
            raise usage_error("train needs --data (or --resume RUN to carry on with an interrupted run)")
        config = run_config(args)
        rate = 1.0 if args.neg_sample_rate is None else args.neg_sample_rate
        if not 0 < rate <= 1:
            raise usage_error(f"--neg-sample-rate must be in (0, 1], got {rate}")
        check_out_outside_data(args.out, args.data, args.valid, args.test)
        inputs = run_inputs(args, neg_sample_rate=rate, warm_start=args.warm_start)
        if not under_torchrun and _launches(args, config):
            check_start(config, inputs, args.out, nproc=args.nproc)
            return _launch(args.argv, args.nproc)
        track = _tracker(config.track, args.register)
        bundle = run_training(config, inputs, args.out, on_trained=on_trained, track=track)
    if int(os.environ.get("RANK", "0")) != 0:
        return 0  # rank 0 saved the model and prints its summary
    return _print_summary(getattr(args, "uri", None) or out, bundle)


def _launches(args: argparse.Namespace, config: Any) -> bool:
    """Whether this train command starts torchrun: --nproc N > 1, or sharded tables (which
    need a process group, also of one). Sharded tables without --nproc are refused."""
    sharded = config.train.shard_tables is not None
    if sharded and args.nproc is None:
        raise usage_error(
            "--shard-tables (train.shard_tables) shards the tables over processes: give --nproc N "
            "(N >= 1; or start deepfm train under torchrun)"
        )
    return args.nproc is not None and (args.nproc > 1 or sharded)


def _train_to_uri(args: argparse.Namespace) -> int:
    """--out URI: train into a local folder, then upload the finished model (a run to resume
    or an interrupted one stays local: object stores have no atomic rename to finish it with)."""
    if args.resume is not None or (args.nproc or 1) > 1:
        raise usage_error("--out URI trains in one process and not with --resume: give a local --out, then copy it")
    uri = args.uri = args.out  # what the summary line names
    with tempfile.TemporaryDirectory(prefix="deepfm-train-") as tmp:
        args.out = Path(tmp) / "model"
        status = cmd_train(args)
        upload_folder(args.out, uri)
    log.info("uploaded the model to %s", uri.split("?")[0])
    return status


def _tracker(track: Any, register: str | None) -> Any:
    """run_training's ``track``: the specs as they are, or with --register an MLflow tracker
    that registers the model."""
    if register is None:
        return track or None
    from deepfm.training.tracking import open_tracker

    return open_tracker(track, register=register)


def _launch(argv: list[str], nproc: int) -> int:
    """Run this same ``deepfm train`` under torchrun in ``nproc`` processes; their exit status."""
    rest, skip = [], False
    for a in argv:
        if skip:
            skip = False
        elif a == "--nproc":
            skip = True
        elif not a.startswith("--nproc="):
            rest.append(a)
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc-per-node={nproc}",
        "-m",
        "deepfm",
        *rest,
    ]
    env = dict(os.environ)
    if "OMP_NUM_THREADS" not in env:
        # torchrun would give every rank one thread; share the cores this process may use.
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
        env["OMP_NUM_THREADS"] = str(max(1, cores // nproc))
    log.info("launching with OMP_NUM_THREADS=%s: %s", env["OMP_NUM_THREADS"], " ".join(command))
    return subprocess.run(command, check=False, env=env).returncode


def _resume_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """train --resume RUN's settings: only those that leave the model as it is may be given again."""
    fixed = {
        "--data": args.data,
        "--valid": args.valid,
        "--test": args.test,
        "--split": args.split,
        "--split-by": args.split_by,
        "--valid-from": args.valid_from,
        "--test-from": args.test_from,
        **shape_flags(args),
        "--batch-size": args.batch_size,
        "--seed": args.seed,
        "--l2-embedding": args.l2_embedding,
        "--min-count": args.min_count,
        "--cache-dir": args.cache_dir,
        "--format": args.format,
        "--delimiter": args.delimiter,
        "--header": args.header,
        "--on-bad-row": args.on_bad_row,
        "--checkpoint-every": args.checkpoint_every,
        "--neg-sample-rate": args.neg_sample_rate,
        "--warm-start": args.warm_start,
        "--max-vocab": args.max_vocab,
        "--hash-buckets": args.hash_buckets,
    }
    given = [flag for flag, value in fixed.items() if value is not None] + (["--no-cache"] if args.no_cache else [])
    if given:
        raise usage_error(f"--resume carries on the run as it was started; leave out {', '.join(given)}")
    return {
        "lr": args.lr,
        "embedding_lr": args.embedding_lr,
        "epochs": args.epochs,
        "patience": args.patience,
        "threads": args.threads,
        "device": args.device,
        "progress": False if args.quiet else None,
    }


def _print_summary(out: Path | str, bundle: Any) -> int:
    m = bundle.metrics
    summary = {
        k: m[k]
        for k in ("valid_auc", "valid_logloss", "test_auc", "test_logloss", "epochs", "train_samples_per_s")
        if k in m
    }
    print(json.dumps({"out": str(out), **summary}))
    return 0


def _report_writer(path: Path) -> Any:
    """train's ``on_trained`` hook for --report: the report explains the rows of the evaluated
    part (test, else valid) while they still exist."""
    require_matplotlib()  # fail before training, not after it

    def write(bundle: Any, part: Any) -> None:
        log.info("wrote %s", write_report(bundle, path, data=part if part is not None and len(part) else None))

    return write


def cmd_compare(args: argparse.Namespace) -> int:
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    summary = compare(run_config(args), run_inputs(args), args.out, models, seeds=args.seeds)
    print(to_markdown(summary))
    return 0


def cmd_tune(args: argparse.Namespace) -> int:
    summary = tune(
        run_config(args),
        run_inputs(args),
        args.out,
        trials=args.trials,
        timeout=args.minutes * 60 if args.minutes else None,
        keep_trials=args.keep_trials,
        metric=args.metric,
    )
    keys = ("trials", "pruned", "metric", "best_trial", "best_valid_auc", "best_valid_logloss", "best", "default")
    print(json.dumps({"best_config": str(args.out / "best.yaml"), **{k: summary[k] for k in keys}}, default=str))
    return 0
