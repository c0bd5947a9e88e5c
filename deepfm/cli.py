"""The ``deepfm`` command line: a thin layer over the library.

    deepfm demo
    deepfm synth --rows 1000000 --out clicks.tsv [--day 3] [--setting tail] [--header]
    deepfm train --data clicks.tsv --preset criteo --split 0.8,0.1,0.1 --out runs/criteo
    deepfm train --warm-start runs/day1 --data day2.tsv --split 0.9,0.1 --out runs/day2
    deepfm evaluate runs/criteo --data test.tsv
    deepfm predict runs/criteo --data new.tsv --out scores.csv
    deepfm export runs/criteo --onnx runs/criteo/model.onnx
    deepfm serve runs/criteo --host 127.0.0.1 --port 8000 [--workers N] [--engine onnx]
    deepfm calibrate runs/criteo --data valid.tsv [--method isotonic|platt]
    deepfm drift runs/criteo --data new.tsv --fail-on 'psi>0.25'   # exit 1 when crossed
    deepfm compare --data clicks.tsv --preset criteo --split 0.8,0.1,0.1 --models lr,fm,deepfm --seeds 3
    deepfm explain runs/criteo --data test.tsv --out runs/criteo/explain [--pair C1,C2]
    deepfm report runs/criteo --data test.tsv      # runs/criteo/report.html

Bad input ends with one line naming the file, line and field, and exit status 2. ``deepfm drift``
exits with 1 when a --fail-on threshold is crossed.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from deepfm.errors import DeepFMError

log = logging.getLogger("deepfm")


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)  # train --nproc relaunches itself under torchrun
    # Under torchrun every rank runs this: progress is logged once, by rank 0.
    other_rank = int(os.environ.get("RANK", "0")) != 0
    logging.basicConfig(
        level=logging.WARNING if getattr(args, "quiet", False) or other_rank else logging.INFO,
        format="%(asctime)s %(message)s",
        datefmt="%H:%M:%S",
    )
    try:
        return int(args.func(args) or 0)
    except DeepFMError as exc:
        print(f"deepfm {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # a file we cannot open, write or create: the OS says which
        print(f"deepfm {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="deepfm", description="DeepFM click-through-rate models.")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("demo", help="generate data, train, and compare with the Bayes-optimal model")
    p.add_argument("--rows", type=int, default=300_000, help="rows to generate (default 300000)")
    p.add_argument("--out", type=Path, default=None, help="keep the generated data and model here")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("synth", help="write Criteo-layout data with known click probabilities")
    p.add_argument("--rows", type=int, required=True)
    p.add_argument("--out", type=Path, required=True, help="TSV to write; true probabilities go to <stem>.truth.csv")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--day", type=int, default=1, help="simulated day: from day 2 on, new ids appear, old ones fade "
                   "and the click rate falls (default 1: no drift)")
    _add_synth_setting_args(p)
    p.add_argument("--header", action="store_true", help="start with a header line (label, I1..I13, C1..C26), "
                   "so the file can be read without --preset")  # fmt: skip
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=cmd_synth)

    p = sub.add_parser("train", help="train a model and save it to a folder")
    _add_run_args(p, data_required=False)
    p.add_argument("--out", type=Path, default=Path("runs/model"), help="output folder (default runs/model)")
    p.add_argument("--nproc", type=int, help="train data-parallel in this many processes on this machine: runs "
                   "torchrun --standalone --nproc-per-node N -m deepfm train ... (--batch-size is per process)")  # fmt: skip
    p.add_argument(
        "--resume", type=Path, metavar="RUN",
        help="carry on with the interrupted run in this folder from its last checkpoint (same config and data; "
        "--lr, --embedding-lr, --epochs, --patience, --threads may change)",
    )  # fmt: skip
    p.add_argument("--report", action="store_true", help="also write <out>/report.html, explained on the test part (valid without one)")
    p.add_argument("--warm-start", type=Path, metavar="MODEL",
                   help="continue from this model folder on new data: its schema, statistics, vocabularies (grown by "
                   "new values) and weights; training flags (--epochs, --lr, ...) still apply")  # fmt: skip
    p.add_argument("--neg-sample-rate", type=float, metavar="W",
                   help="train on every positive and this share (0 < W <= 1) of the negatives of the training part; "
                   "predictions are corrected back (valid/test keep every row)")  # fmt: skip
    p.add_argument("--register", metavar="NAME", help="with --track mlflow: register the model under this name (a new version)")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("schema", help="print the schema inferred for a file, as a YAML config to edit")
    p.add_argument("--data", type=Path, required=True)
    p.add_argument("--label", default="label", help="the label column (default: label)")
    _add_read_options(p)
    p.set_defaults(func=cmd_schema)

    p = sub.add_parser("compare", help="train several model kinds with several seeds on the same split")
    _add_run_args(p)
    p.add_argument("--models", default="lr,fm,dnn,wide_deep,dcn,deepfm", help="model kinds, comma-separated")
    p.add_argument("--seeds", type=int, default=3, help="seeds per model (train.seed, +1, ...)")
    p.add_argument("--out", type=Path, default=Path("runs/compare"), help="compare.md, compare.json and the runs")
    p.set_defaults(func=cmd_compare)

    p = sub.add_parser("tune", help="hyperparameter search with Optuna; writes best.yaml")
    _add_run_args(p)
    p.add_argument("--trials", type=int, default=50, help="the most trials (default 50)")
    p.add_argument("--minutes", type=float, help="time budget; no new trial starts after it")
    p.add_argument("--keep-trials", action="store_true", help="keep every trial's model folder")
    p.add_argument("--metric", choices=["auc", "logloss"], default="auc",
                   help="rank trials by validation AUC (default) or log loss; every trial is calibrated first")
    p.add_argument("--out", type=Path, default=Path("runs/tune"), help="best.yaml, trials.md, trials.json")
    p.set_defaults(func=cmd_tune)

    p = sub.add_parser("evaluate", help="AUC and logloss of a saved model on a labelled file (JSON)")
    p.add_argument("model", type=Path)
    p.add_argument("--data", type=Path, required=True)
    _add_read_options(p, defaults_from_model=True)
    _add_engine_args(p)
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("calibrate", help="fit isotonic or Platt calibration on held-out labelled rows and store it in the model")
    p.add_argument("model", type=Path)
    p.add_argument("--data", type=Path, required=True, help="labelled rows the model did not train on (a validation file)")
    p.add_argument("--method", choices=["platt", "isotonic"], default="platt",
                   help="platt (default: two parameters, safe on tens of thousands of rows) or isotonic (a step function: needs more rows)")
    _add_read_options(p, defaults_from_model=True)
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=cmd_calibrate)

    p = sub.add_parser("drift", help="compare new rows with the training data: OOV and missing rates, PSI per field, "
                       "predicted vs observed CTR; exit 1 when a --fail-on threshold is crossed")  # fmt: skip
    p.add_argument("model", type=Path)
    p.add_argument("--data", type=Path, required=True, help="new rows (labels optional)")
    p.add_argument("--out", type=Path, help="JSON to write (default <model>/drift.json, which deepfm report shows)")
    p.add_argument("--fail-on", action="append", default=[], metavar="METRIC>VALUE",
                   help="e.g. psi>0.25, oov_change>0.05, missing_change>0.1, ctr_gap>0.1, auc<0.7; repeatable")  # fmt: skip
    p.add_argument("--report", action="store_true", help="also write <model>/report.html (recorded figures + this check)")
    _add_read_options(p, defaults_from_model=True)
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=cmd_drift)

    p = sub.add_parser("predict", help="write click probabilities for a file")
    p.add_argument("model", type=Path)
    p.add_argument("--data", type=Path, required=True)
    p.add_argument("--out", type=Path, required=True, help="CSV with a 'probability' column, one row per input row")
    p.add_argument("--keep", default="", help="input columns to copy into the output, e.g. id")
    _add_read_options(p, defaults_from_model=True)
    _add_engine_args(p)
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser("explain", help="field-pair interactions and the logit's parts over some rows: PNG heatmaps + explain.json")
    p.add_argument("model", type=Path)
    p.add_argument("--data", type=Path, required=True, help="rows to explain (labels not needed)")
    p.add_argument("--out", type=Path, required=True, help="folder for explain.json, pairs.png, decomposition.png, drilldown.png")
    _add_explain_args(p)
    p.add_argument("--top", type=int, default=10, help="pairs and value combinations to list (default 10)")
    _add_read_options(p, defaults_from_model=True)
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=cmd_explain)

    p = sub.add_parser("report", help="one self-contained HTML: learning curves, calibration, ROC, explanation")
    p.add_argument("model", type=Path)
    p.add_argument("--data", type=Path, help="labelled rows for calibration, ROC and the explanation "
                   "(default: calibration and ROC as recorded for the test part; no explanation)")  # fmt: skip
    p.add_argument("--out", type=Path, help="HTML file to write (default <model>/report.html)")
    _add_explain_args(p)
    _add_read_options(p, defaults_from_model=True)
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=cmd_report)

    p = sub.add_parser("export", help="write the model as an ONNX graph over encoded inputs (pip install 'deepfm[onnx]')")
    p.add_argument("model", type=Path)
    p.add_argument("--onnx", type=Path, required=True, help="the .onnx file to write")
    p.add_argument("--check-rows", type=int, default=2000, help="generated rows to compare ONNX Runtime with PyTorch on (0: skip)")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("serve", help="HTTP prediction service: POST /predict, GET /health, /schema, /docs (pip install 'deepfm[serve]')")
    p.add_argument("model", type=Path)
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--workers", type=int, default=1, help="server processes, each with its own copy of the model")
    _add_engine_args(p)
    p.add_argument("--threads", type=int, default=1, help="model threads per worker (default 1: many small requests)")
    p.add_argument("--max-records", type=int, default=10_000, help="records per request (default 10000)")
    p.add_argument("--max-body-bytes", type=int, default=16 << 20, help="request body size (default 16 MiB)")
    p.add_argument("--access-log", action="store_true", help="log every request (costs throughput)")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=cmd_serve)
    return parser


def _add_synth_setting_args(p: argparse.ArgumentParser) -> None:
    from deepfm.synth_settings import SETTINGS

    g = p.add_argument_group("generator setting (deepfm/synth_settings.py; a flag overrides the setting's value)")
    g.add_argument("--setting", choices=list(SETTINGS), default="criteo",
                   help="named knobs: criteo (default, the original generator), interactions, tail, noisy")  # fmt: skip
    g.add_argument("--fm-weight", type=float, help="weight of the teacher's pairwise (FM) part (criteo 0.7)")
    g.add_argument("--mlp-weight", type=float, help="weight of the teacher's higher-order (MLP) part (criteo 0.5)")
    g.add_argument("--card-scale", type=float, help="vocabulary sizes times this (criteo 1)")
    g.add_argument("--zipf-shift", type=float, help="added to every Zipf exponent; < 0: longer tails (criteo 0)")
    g.add_argument("--numeric-share", type=float, help="share of the signal's field importance in I1..I13 "
                   "(criteo: as drawn, 0.23 for seed 0)")  # fmt: skip
    g.add_argument("--bayes-auc", type=float, help="AUC of the true probabilities, i.e. the noise (criteo 0.80)")


def _add_explain_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--pair", help="the field pair to drill into, e.g. C1,C2 (default: the strongest)")
    p.add_argument("--rows", type=int, help="explain only the first N rows (default: all)")
    p.add_argument("--min-count", type=int, default=5, help="rows a value combination needs to be listed (default 5)")


def _add_engine_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("engine")
    g.add_argument("--engine", choices=["torch", "onnx"], default="torch", help="run the model with PyTorch or ONNX Runtime")
    g.add_argument("--onnx", type=Path, help="the exported graph for --engine onnx (default: <model>/model.onnx)")


def _add_run_args(p: argparse.ArgumentParser, data_required: bool = True) -> None:
    """Data, schema, reading and model/training overrides: shared by train and compare."""
    p.add_argument("--data", type=Path, required=data_required, help="training file (CSV/TSV, Parquet or libFM)")
    p.add_argument("--valid", type=Path, help="validation file (early stopping)")
    p.add_argument("--test", type=Path, help="test file (reported in metrics.json)")
    p.add_argument("--split", help="split --data by row order: train,valid[,test] fractions, e.g. 0.8,0.1,0.1")
    p.add_argument("--config", type=Path, help="YAML config: fields, model, train, data")
    p.add_argument("--preset", choices=["criteo"], help="a ready schema (criteo: label, I1..I13, C1..C26)")
    p.add_argument("--label", default=None, help="label column when the schema is inferred (default: label)")
    p.add_argument("--cache-dir", type=Path, help="keep encoded data here for later runs (default $DEEPFM_CACHE_DIR or ~/.cache/deepfm/encoded)")
    p.add_argument("--no-cache", action="store_true", help="encode into a temporary folder and throw it away")
    p.add_argument("--track", action="append", metavar="SPEC", help="track the run in tensorboard:DIR or mlflow[:TRACKING_URI] "
                   "(again for both; needs pip install 'deepfm[track]')")  # fmt: skip
    _add_read_options(p)
    g = p.add_argument_group("model and training (override the config)")
    g.add_argument("--model", dest="kind", choices=["deepfm", "fm", "lr", "dnn", "wide_deep", "dcn"])
    g.add_argument("--embedding-dim", type=int)
    g.add_argument("--hidden", help="MLP sizes, e.g. 400,400,400")
    g.add_argument("--dropout", type=float)
    g.add_argument("--epochs", type=int)
    g.add_argument("--batch-size", type=int)
    g.add_argument("--lr", type=float)
    g.add_argument("--embedding-lr", type=float)
    g.add_argument("--l2-embedding", type=float)
    g.add_argument("--patience", type=int)
    g.add_argument("--min-count", type=int, help="for every field with a vocabulary (categorical, bucketized, multi-hot)")
    g.add_argument("--max-vocab", type=int, help="cap on every vocabulary (0: none); fresh fits keep the most frequent, "
                   "warm starts evict the lowest recency-weighted counts")  # fmt: skip
    g.add_argument("--hash-buckets", type=int, help="hash every categorical and multi-hot field into this many rows "
                   "instead of fitting a vocabulary (0: vocabularies); memory is then fixed whatever the distinct values")  # fmt: skip
    g.add_argument("--seed", type=int)
    g.add_argument("--device", help="auto, cpu or cuda")
    g.add_argument("--threads", type=int, help="torch threads per process (default: PyTorch's, which follows "
                   "OMP_NUM_THREADS; one per core, or cores / N under --nproc N)")
    g.add_argument("--checkpoint-every", type=int, help="steps between checkpoints in the output folder (default 2000; 0: epoch ends only)")
    p.add_argument("--quiet", action="store_true")


def _add_read_options(p: argparse.ArgumentParser, defaults_from_model: bool = False) -> None:
    g = p.add_argument_group("reading" + (" (default: as in training)" if defaults_from_model else ""))
    g.add_argument("--format", choices=["auto", "text", "parquet", "libfm"])
    g.add_argument("--delimiter", help="for text files; default: guessed from the first line")
    g.add_argument("--header", choices=["auto", "yes", "no"])
    g.add_argument("--on-bad-row", choices=["error", "skip"], help="skip rows with the wrong column count and report how many")


def _read_overrides(args: argparse.Namespace) -> dict[str, Any]:
    delimiter = args.delimiter
    if delimiter in ("\\t", "tab"):
        delimiter = "\t"
    return {"format": args.format, "delimiter": delimiter, "header": args.header, "on_bad_row": args.on_bad_row}


# ---------------------------------------------------------------- commands
def _run_config(args: argparse.Namespace) -> Any:
    """The RunConfig of train/compare: --config, --preset or an inferred schema, then flags."""
    from dataclasses import replace

    from deepfm.config import RunConfig, load_config, read_options, with_overrides
    from deepfm.schema import PRESETS

    raw = load_config(args.config) if args.config else {}
    if args.preset and {"fields", "preset"} & raw.keys():
        raise _usage(f"{args.config} names its fields already: give --config or --preset, not both")
    if getattr(args, "warm_start", None) is not None:
        from deepfm.bundle import Bundle

        shape = {"--config": args.config, "--preset": args.preset, "--label": args.label, "--model": args.kind,
                 "--embedding-dim": args.embedding_dim, "--hidden": args.hidden, "--dropout": args.dropout}  # fmt: skip
        given = [flag for flag, value in shape.items() if value is not None]
        if given:
            raise _usage(f"--warm-start keeps the schema and model of {args.warm_start}; leave out {', '.join(given)}")
        config = Bundle.load(args.warm_start).config
    elif {"fields", "preset"} & raw.keys():
        config = RunConfig.from_dict(raw, where=str(args.config))
    else:  # the fields from --preset or from the data; the rest (model, train, data) from --config
        where = str(args.config or "the flags")
        options = replace(read_options(raw, where), **{k: v for k, v in _read_overrides(args).items() if v is not None})
        if args.preset:
            schema = PRESETS[args.preset]()
        else:
            columns = raw.get("columns")
            schema = _inferred_schema(args.data, raw.get("label", args.label or "label"), options, columns)
        config = RunConfig.from_dict({**raw, **schema.to_dict()}, where=where)
    for flag, key in (("min_count", "min_count"), ("max_vocab", "max_vocab")):
        if getattr(args, flag) is not None:
            fields = tuple(replace(f, **{key: getattr(args, flag)}) for f in config.schema.fields)
            config = replace(config, schema=replace(config.schema, fields=fields))
    if args.hash_buckets is not None:
        fields = tuple(replace(f, hash_buckets=args.hash_buckets) if f.kind != "numeric" else f for f in config.schema.fields)
        config = replace(config, schema=replace(config.schema, fields=fields))
    try:
        hidden = tuple(int(h) for h in args.hidden.split(",")) if args.hidden else None
    except ValueError:
        raise _usage(f"--hidden wants layer sizes like 400,400,400, got {args.hidden!r}") from None
    if args.track:  # the flags replace the config file's track:
        config = replace(config, track=tuple(args.track))
    return with_overrides(
        config,
        model={"kind": args.kind, "embedding_dim": args.embedding_dim, "hidden": hidden, "dropout": args.dropout},
        train={
            "epochs": args.epochs, "batch_size": args.batch_size, "lr": args.lr, "embedding_lr": args.embedding_lr,
            "l2_embedding": args.l2_embedding, "patience": args.patience, "seed": args.seed, "device": args.device,
            "threads": args.threads, "progress": False if args.quiet else None, "checkpoint_every": args.checkpoint_every,
        },
        data=_read_overrides(args),
    )  # fmt: skip


def _inferred_schema(data: Path, label: str, options: Any, columns: list[str] | None = None) -> Any:
    """The schema inferred for ``data`` (whose column names are ``columns`` when it has no
    header), logged as the YAML ``deepfm schema`` prints."""
    from dataclasses import replace

    from deepfm.io import Reader
    from deepfm.schema_inference import infer_schema, schema_yaml

    schema, guesses = infer_schema(Reader(data, options, column_names=columns), label)
    if columns is not None:
        schema = replace(schema, columns=tuple(columns))
    log.info("inferred the schema (deepfm schema --data %s prints it to edit):\n%s", data, schema_yaml(schema, guesses, str(data)))
    return schema


def cmd_schema(args: argparse.Namespace) -> int:
    from deepfm.io import ReadOptions, Reader
    from deepfm.schema_inference import infer_schema, schema_yaml

    options = ReadOptions(**{k: v for k, v in _read_overrides(args).items() if v is not None})
    schema, guesses = infer_schema(Reader(args.data, options), args.label)
    text = schema_yaml(schema, guesses, str(args.data))
    if options != ReadOptions():  # what it took to read the file, for the config to say too
        from dataclasses import asdict

        given = {k: v for k, v in asdict(options).items() if v != getattr(ReadOptions(), k)}
        text += "data: " + json.dumps(given) + "\n"
    sys.stdout.write(text)
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from deepfm.train import check_resume, check_start, resume, train

    if args.nproc is not None and args.nproc < 1:
        raise _usage(f"--nproc must be at least 1, got {args.nproc}")
    launch = args.nproc is not None and args.nproc > 1 and "WORLD_SIZE" not in os.environ
    # Everything below that can fail on the arguments runs before --nproc starts any process:
    # a bad config or flag is one line, not one per rank under torchrun's report of failed children.
    out = args.resume if args.resume is not None else args.out
    on_trained = _report_writer(out / "report.html") if args.report else None
    if args.resume is not None:
        overrides = _resume_overrides(args)
        if launch:
            check_resume(args.resume, overrides, world=args.nproc)
            return _launch(args.argv, args.nproc)
        bundle = resume(args.resume, overrides, on_trained=on_trained, track=_tracker(args.track, args.register))
    else:
        if args.data is None:
            raise _usage("train needs --data (or --resume RUN to carry on with an interrupted run)")
        config = _run_config(args)
        rate = 1.0 if args.neg_sample_rate is None else args.neg_sample_rate
        if not 0 < rate <= 1:
            raise _usage(f"--neg-sample-rate must be in (0, 1], got {rate}")
        if launch:
            check_start(config, args.data, args.out, args.valid, args.test, args.split, nproc=args.nproc)
            return _launch(args.argv, args.nproc)
        bundle = train(
            config, args.data, args.out, valid=args.valid, test=args.test, split=args.split,
            cache=not args.no_cache, cache_dir=args.cache_dir, on_trained=on_trained, neg_sample_rate=rate,
            warm_start=args.warm_start, track=_tracker(config.track, args.register),
        )  # fmt: skip
    if int(os.environ.get("RANK", "0")) != 0:
        return 0  # rank 0 saved the model and prints its summary
    return _print_summary(out, bundle)


def _tracker(track: Any, register: str | None) -> Any:
    """train's ``track``: the specs as they are, or with --register an MLflow tracker that registers."""
    if register is None:
        return track or None
    from deepfm.tracking import open_tracker

    return open_tracker(track, register=register)


def _launch(argv: list[str], nproc: int) -> int:
    """Run this same ``deepfm train`` under torchrun in ``nproc`` processes; their exit status."""
    import subprocess

    rest, skip = [], False
    for a in argv:
        if skip:
            skip = False
        elif a == "--nproc":
            skip = True
        elif not a.startswith("--nproc="):
            rest.append(a)
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}", "-m", "deepfm", *rest]
    env = dict(os.environ)
    if "OMP_NUM_THREADS" not in env:
        # torchrun would give every rank one thread; share the cores this process may use.
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
        env["OMP_NUM_THREADS"] = str(max(1, cores // nproc))
    logging.getLogger(__name__).info("launching with OMP_NUM_THREADS=%s: %s", env["OMP_NUM_THREADS"], " ".join(command))
    return subprocess.run(command, check=False, env=env).returncode


def _resume_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """train --resume RUN's settings: only those that leave the model as it is may be given again."""
    fixed = {
        "--data": args.data, "--valid": args.valid, "--test": args.test, "--split": args.split, "--config": args.config,
        "--preset": args.preset, "--label": args.label, "--model": args.kind, "--embedding-dim": args.embedding_dim,
        "--hidden": args.hidden, "--dropout": args.dropout, "--batch-size": args.batch_size, "--seed": args.seed,
        "--l2-embedding": args.l2_embedding, "--min-count": args.min_count, "--cache-dir": args.cache_dir,
        "--format": args.format, "--delimiter": args.delimiter, "--header": args.header, "--on-bad-row": args.on_bad_row,
        "--checkpoint-every": args.checkpoint_every, "--neg-sample-rate": args.neg_sample_rate,
        "--warm-start": args.warm_start, "--max-vocab": args.max_vocab, "--hash-buckets": args.hash_buckets,
    }  # fmt: skip
    given = [flag for flag, value in fixed.items() if value is not None] + (["--no-cache"] if args.no_cache else [])
    if given:
        raise _usage(f"--resume carries on the run as it was started; leave out {', '.join(given)}")
    return {
        "lr": args.lr, "embedding_lr": args.embedding_lr, "epochs": args.epochs, "patience": args.patience,
        "threads": args.threads, "device": args.device, "progress": False if args.quiet else None,
    }  # fmt: skip


def _print_summary(out: Path, bundle: Any) -> int:
    m = bundle.metrics
    summary = {k: m[k] for k in ("valid_auc", "valid_logloss", "test_auc", "test_logloss", "epochs", "train_samples_per_s") if k in m}
    print(json.dumps({"out": str(out), **summary}))
    return 0


def _report_writer(path: Path) -> Any:
    """train's ``on_trained`` hook for --report: the report explains the rows of the evaluated
    part (test, else valid) while they still exist."""
    from deepfm.plots import require_matplotlib
    from deepfm.report import write_report

    require_matplotlib()  # fail before training, not after it

    def write(bundle: Any, part: Any) -> None:
        log.info("wrote %s", write_report(bundle, path, data=part if part is not None and len(part) else None))

    return write


def cmd_compare(args: argparse.Namespace) -> int:
    from deepfm.compare import compare, to_markdown

    models = [m.strip() for m in args.models.split(",") if m.strip()]
    summary = compare(
        _run_config(args), args.data, args.out, models, seeds=args.seeds,
        valid=args.valid, test=args.test, split=args.split, cache=not args.no_cache, cache_dir=args.cache_dir,
    )  # fmt: skip
    print(to_markdown(summary))
    return 0


def cmd_tune(args: argparse.Namespace) -> int:
    from deepfm.tune import tune

    summary = tune(
        _run_config(args), args.data, args.out, trials=args.trials,
        timeout=args.minutes * 60 if args.minutes else None, valid=args.valid, test=args.test,
        split=args.split, cache=not args.no_cache, cache_dir=args.cache_dir, keep_trials=args.keep_trials,
        metric=args.metric,
    )  # fmt: skip
    keys = ("trials", "pruned", "metric", "best_trial", "best_valid_auc", "best_valid_logloss", "best", "default")
    print(json.dumps({"best_config": str(args.out / "best.yaml"), **{k: summary[k] for k in keys}}, default=str))
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from deepfm.predict import Predictor, evaluate

    predictor = Predictor.load(args.model, args.engine, args.onnx)
    result = evaluate(predictor, args.data, _model_read_options(predictor.bundle, args))
    print(json.dumps(result))
    return 0


def cmd_calibrate(args: argparse.Namespace) -> int:
    from deepfm.bundle import Bundle
    from deepfm.predict import calibrate

    bundle = Bundle.load(args.model)
    record = calibrate(bundle, args.data, args.method, _model_read_options(bundle, args))
    keys = ("auc", "logloss", "ece", "mean_prediction", "ctr")
    print(json.dumps({"model": str(args.model), "method": args.method, "rows": record["before"]["rows"],
                      **{f"{k}_before": record["before"][k] for k in keys if k != "ctr"},
                      **{f"{k}_after": record["after"][k] for k in keys if k != "ctr"}, "ctr": record["before"]["ctr"]}))  # fmt: skip
    return 0


def cmd_drift(args: argparse.Namespace) -> int:
    """Exit 0: within every threshold; 1: a threshold crossed (listed on stderr); 2: bad input."""
    from deepfm.bundle import Bundle
    from deepfm.drift import Threshold, check

    thresholds = [Threshold.parse(t) for t in args.fail_on]
    bundle = Bundle.load(args.model)
    report = check(bundle, args.data, thresholds, _model_read_options(bundle, args))
    out = args.out or args.model / "drift.json"
    out.write_text(json.dumps(report, indent=1))
    if args.report:
        from deepfm.report import write_report

        write_report(bundle, args.model / "report.html")
    worst = sorted(report["fields"].items(), key=lambda kv: -kv[1]["psi"])[:3]
    print(json.dumps({"out": str(out), "rows": report["rows"], "max_psi": report["max_psi"],
                      "worst": {k: round(v["psi"], 4) for k, v in worst}, "labels": report.get("labels"),
                      "failed": report["failed"]}))  # fmt: skip
    for line in report["failed"]:
        print(f"deepfm drift: threshold crossed: {line}", file=sys.stderr)
    return 1 if report["failed"] else 0


def cmd_predict(args: argparse.Namespace) -> int:
    from deepfm.predict import Predictor, predict_file

    predictor = Predictor.load(args.model, args.engine, args.onnx)
    keep = [k for k in args.keep.split(",") if k]
    rows = predict_file(predictor, args.data, args.out, keep=keep, options=_model_read_options(predictor.bundle, args))
    log.info("wrote %d probabilities to %s", rows, args.out)
    return 0


def cmd_explain(args: argparse.Namespace) -> int:
    from deepfm.bundle import Bundle
    from deepfm.explain import explain, parse_pair, write_explanation
    from deepfm.plots import require_matplotlib

    require_matplotlib()
    bundle = Bundle.load(args.model)
    expl = explain(
        bundle, args.data, rows=args.rows, pair=parse_pair(args.pair), options=_model_read_options(bundle, args),
        top_k=args.top, min_count=args.min_count,
    )  # fmt: skip
    written = write_explanation(expl, args.out, top_k=args.top)
    drill = expl.drilldown
    print(json.dumps({
        "out": str(args.out), "rows": expl.rows, "files": [p.name for p in written],
        "top_pairs": [{"fields": t["fields"], "mean_abs": round(t["mean_abs"], 4)} for t in expl.top_pairs(min(args.top, 5))],
        "drilldown": list(drill.fields) if drill is not None else None,
    }))  # fmt: skip
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from deepfm.bundle import Bundle
    from deepfm.explain import parse_pair
    from deepfm.plots import require_matplotlib
    from deepfm.report import write_report

    require_matplotlib()
    bundle = Bundle.load(args.model)
    out = args.out or args.model / "report.html"
    write_report(
        bundle, out, data=args.data, rows=args.rows, pair=parse_pair(args.pair),
        options=_model_read_options(bundle, args), min_count=args.min_count,
    )  # fmt: skip
    print(json.dumps({"out": str(out)}))
def cmd_export(args: argparse.Namespace) -> int:
    from deepfm.bundle import Bundle
    from deepfm.errors import require_extra
    from deepfm.export import export_onnx

    require_extra("onnx", "onnx", "onnxscript", "onnxruntime")  # before loading the model
    if args.check_rows < 0:
        raise _usage(f"--check-rows must be >= 0, got {args.check_rows}")
    print(json.dumps(export_onnx(Bundle.load(args.model), args.onnx, check_rows=args.check_rows)))
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from deepfm.errors import require_extra
    from deepfm.serve import ServeSettings, serve

    require_extra("serve", "fastapi", "uvicorn")
    if args.engine == "onnx":
        require_extra("onnx", "onnxruntime")
    settings = ServeSettings(
        model=str(args.model), engine=args.engine, onnx=str(args.onnx) if args.onnx else None,
        max_records=args.max_records, max_body_bytes=args.max_body_bytes, threads=args.threads,
    )  # fmt: skip
    serve(
        settings, host=args.host, port=args.port, workers=args.workers, access_log=args.access_log,
        log_level="warning" if args.quiet else "info",
    )  # fmt: skip
    return 0


def cmd_synth(args: argparse.Namespace) -> int:
    from deepfm.synth import write_synth
    from deepfm.synth_settings import get_setting

    if args.rows < 1:
        raise _usage(f"--rows must be at least 1, got {args.rows}")
    t0 = time.perf_counter()
    if args.day < 1:
        raise _usage(f"--day must be at least 1, got {args.day}")
    knobs = {k: getattr(args, k) for k in ("fm_weight", "mlp_weight", "card_scale", "zipf_shift", "numeric_share", "bayes_auc")}
    try:
        setting = get_setting(args.setting, **knobs)
    except ValueError as exc:
        raise _usage(str(exc)) from None
    result = write_synth(args.rows, args.out, seed=args.seed, day=args.day, setting=setting, header=args.header)
    print(
        json.dumps(
            {
                "out": str(result.path),
                "truth": str(result.truth_path),
                "rows": result.rows,
                "day": args.day,
                "header": args.header,
                "setting": setting.knobs(),
                "positive_rate": result.positive_rate,
                "seconds": round(time.perf_counter() - t0, 2),
            }
        )
    )
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from deepfm.demo import run_demo

    if args.rows < 1000:
        raise _usage(f"--rows must be at least 1000 for the demo's three parts, got {args.rows}")
    if args.out is not None:
        report = run_demo(args.rows, Path(args.out), seed=args.seed)
    else:
        with tempfile.TemporaryDirectory(prefix="deepfm-demo-") as tmp:
            report = run_demo(args.rows, Path(tmp), seed=args.seed)
    print(json.dumps(report, indent=1))
    return 0


def _model_read_options(bundle: Any, args: argparse.Namespace) -> Any:
    from dataclasses import replace

    overrides = {k: v for k, v in _read_overrides(args).items() if v is not None}
    return replace(bundle.config.data, **overrides)


def _usage(message: str) -> DeepFMError:
    from deepfm.errors import ConfigError

    return ConfigError(message)


if __name__ == "__main__":
    sys.exit(main())
