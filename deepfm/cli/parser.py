"""The argument parser of the ``deepfm`` command: every subcommand and its flags."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any, TypeAlias

from deepfm._version import __version__
from deepfm.cli.analyze import cmd_drift, cmd_explain, cmd_report
from deepfm.cli.data import cmd_demo, cmd_synth
from deepfm.cli.score import cmd_calibrate, cmd_evaluate, cmd_export, cmd_predict, cmd_serve
from deepfm.cli.train import cmd_compare, cmd_schema, cmd_train, cmd_tune
from deepfm.data.storage import is_uri
from deepfm.data.synth_settings import SETTINGS
from deepfm.util.validation import Auto


class _OneOrMany(argparse.Action):
    """A data argument: one file, folder, glob or URI as text; several as a list of them."""

    def __call__(
        self, parser: argparse.ArgumentParser, ns: argparse.Namespace, values: object, opt: object = None
    ) -> None:
        assert isinstance(values, list)
        setattr(ns, self.dest, values[0] if len(values) == 1 else values)


# --data, --valid, --test: a file, a folder, a glob (quoted), a URI (s3://, gs://, hdfs://, file://) or several
DATA: dict[str, Any] = {"nargs": "+", "action": _OneOrMany, "metavar": "PATH"}

# what add_subparsers returns: each _add_<command> below adds its subcommand to it
_Subcommands: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"


def _int_or_auto(text: str) -> int | Auto:
    """An integer, or "auto"."""
    if text == "auto":
        return "auto"
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer or auto, got {text!r}") from None


def _location(text: str) -> str | Path:
    """A model folder: a URI stays text (a Path would fold s3:// into s3:/)."""
    return text if is_uri(text) else Path(text)


def build_parser() -> argparse.ArgumentParser:
    """The ``deepfm`` parser: one subcommand per job, each with its flags and its ``func``."""
    parser = argparse.ArgumentParser(prog="deepfm", description="DeepFM click-through-rate models.")
    parser.add_argument("--version", action="version", version=f"deepfm {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    for add in (
        _add_demo,
        _add_synth,
        _add_train,
        _add_schema,
        _add_compare,
        _add_tune,
        _add_evaluate,
        _add_calibrate,
        _add_drift,
        _add_predict,
        _add_explain,
        _add_report,
        _add_export,
        _add_serve,
    ):
        add(sub)
    return parser


def _add_demo(sub: _Subcommands) -> None:
    """The ``deepfm demo`` subcommand and its flags."""
    p = sub.add_parser("demo", help="generate data, train, and compare with the Bayes-optimal model")
    p.add_argument("--rows", type=int, default=300_000, help="rows to generate (default 300000)")
    p.add_argument("--out", type=Path, default=None, help="keep the generated data and model here")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=cmd_demo)


def _add_synth(sub: _Subcommands) -> None:
    """The ``deepfm synth`` subcommand and its flags."""
    p = sub.add_parser("synth", help="write Criteo-layout data with known click probabilities")
    p.add_argument("--rows", type=int, required=True)
    p.add_argument("--out", type=Path, required=True, help="TSV to write; true probabilities go to <stem>.truth.csv")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--day",
        type=int,
        default=1,
        help="simulated day: from day 2 on, new ids appear, old ones fade "
        "and the click rate falls (default 1: no drift)",
    )
    _add_synth_setting_args(p)
    p.add_argument(
        "--header",
        action="store_true",
        help="start with a header line (label, I1..I13, C1..C26), so the file can be read without --preset",
    )
    p.add_argument(
        "--days",
        type=int,
        help="write a dataset instead of one file: --out FOLDER/day=YYYY-MM-DD/part-0.<format>, one folder a day "
        "(the same rows as one file of --rows, in order)",
    )
    p.add_argument(
        "--format",
        dest="file_format",
        choices=["parquet", "tsv.gz"],
        default="parquet",
        help="with --days: Parquet, or gzip TSV with a header",
    )
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=cmd_synth)


def _add_train(sub: _Subcommands) -> None:
    """The ``deepfm train`` subcommand and its flags."""
    p = sub.add_parser("train", help="train a model and save it to a folder")
    _add_run_args(p, data_required=False)
    p.add_argument(
        "--out",
        type=_location,
        default=Path("runs/model"),
        help="output folder (default runs/model); a URI (s3://bucket/model) gets the finished model uploaded",
    )
    p.add_argument(
        "--nproc",
        type=int,
        help="train data-parallel in this many processes on this machine: runs "
        "torchrun --standalone --nproc-per-node N -m deepfm train ... (--batch-size is per process)",
    )
    p.add_argument(
        "--shard-tables",
        choices=("auto", "row", "table"),
        help="with --nproc N: cut the embedding table into one table per field and shard them over the N "
        "processes with torchrec (deepfm[shard]); row: every table split row-wise, table: each placed whole, "
        "auto: split those larger than all rows / N. Tables train with row-wise Adagrad (needs --l2-embedding 0)",
    )
    p.add_argument(
        "--resume",
        type=Path,
        metavar="RUN",
        help="carry on with the interrupted run in this folder from its last checkpoint (same config and data; "
        "--lr, --embedding-lr, --epochs, --patience, --threads may change)",
    )
    p.add_argument(
        "--report",
        action="store_true",
        help="also write <out>/report.html, explained on the test part (valid without one)",
    )
    p.add_argument(
        "--warm-start",
        type=Path,
        metavar="MODEL",
        help="continue from this model folder on new data: its schema, statistics, vocabularies (grown by "
        "new values) and weights; training flags (--epochs, --lr, ...) still apply",
    )
    p.add_argument(
        "--neg-sample-rate",
        type=float,
        metavar="W",
        help="train on every positive and this share (0 < W <= 1) of the negatives of the training part; "
        "predictions are corrected back (valid/test keep every row)",
    )
    p.add_argument(
        "--register", metavar="NAME", help="with --track mlflow: register the model under this name (a new version)"
    )
    p.set_defaults(func=cmd_train)


def _add_schema(sub: _Subcommands) -> None:
    """The ``deepfm schema`` subcommand and its flags."""
    p = sub.add_parser("schema", help="print the schema inferred for a file, as a YAML config to edit")
    p.add_argument("--data", **DATA, required=True)
    p.add_argument("--label", default="label", help="the label column (default: label)")
    _add_read_options(p)
    p.set_defaults(func=cmd_schema)


def _add_compare(sub: _Subcommands) -> None:
    """The ``deepfm compare`` subcommand and its flags."""
    p = sub.add_parser("compare", help="train several model kinds with several seeds on the same split")
    _add_run_args(p)
    p.add_argument("--models", default="lr,fm,dnn,wide_deep,dcn,deepfm", help="model kinds, comma-separated")
    p.add_argument("--seeds", type=int, default=3, help="seeds per model (train.seed, +1, ...)")
    p.add_argument("--out", type=Path, default=Path("runs/compare"), help="compare.md, compare.json and the runs")
    p.set_defaults(func=cmd_compare)


def _add_tune(sub: _Subcommands) -> None:
    """The ``deepfm tune`` subcommand and its flags."""
    p = sub.add_parser("tune", help="hyperparameter search with Optuna; writes best.yaml")
    _add_run_args(p)
    p.add_argument("--trials", type=int, default=50, help="the most trials (default 50)")
    p.add_argument("--minutes", type=float, help="time budget; no new trial starts after it")
    p.add_argument("--keep-trials", action="store_true", help="keep every trial's model folder")
    p.add_argument(
        "--metric",
        choices=["auc", "logloss"],
        default="auc",
        help="rank trials by validation AUC (default) or log loss; every trial is calibrated first",
    )
    p.add_argument("--out", type=Path, default=Path("runs/tune"), help="best.yaml, trials.md, trials.json")
    p.set_defaults(func=cmd_tune)


def _add_evaluate(sub: _Subcommands) -> None:
    """The ``deepfm evaluate`` subcommand and its flags."""
    p = sub.add_parser("evaluate", help="AUC and logloss of a saved model on a labelled file (JSON)")
    p.add_argument("model", type=_location)
    p.add_argument("--data", **DATA, required=True)
    _add_read_options(p, defaults_from_model=True)
    _add_engine_args(p)
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=cmd_evaluate)


def _add_calibrate(sub: _Subcommands) -> None:
    """The ``deepfm calibrate`` subcommand and its flags."""
    p = sub.add_parser(
        "calibrate", help="fit isotonic or Platt calibration on held-out labelled rows and store it in the model"
    )
    p.add_argument("model", type=_location)
    p.add_argument("--data", **DATA, required=True, help="labelled rows the model did not train on (a validation file)")
    p.add_argument(
        "--method",
        choices=["platt", "isotonic"],
        default="platt",
        help="platt (default: two parameters, safe on tens of thousands of rows) or isotonic (a step function: needs more rows)",
    )
    _add_read_options(p, defaults_from_model=True)
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=cmd_calibrate)


def _add_drift(sub: _Subcommands) -> None:
    """The ``deepfm drift`` subcommand and its flags."""
    p = sub.add_parser(
        "drift",
        help="compare new rows with the training data: OOV and missing rates, PSI per field, "
        "predicted vs observed CTR; exit 1 when a --fail-on threshold is crossed",
    )
    p.add_argument("model", type=_location)
    p.add_argument("--data", **DATA, required=True, help="new rows (labels optional)")
    p.add_argument("--out", type=Path, help="JSON to write (default <model>/drift.json, which deepfm report shows)")
    p.add_argument(
        "--fail-on",
        action="append",
        default=[],
        metavar="METRIC>VALUE",
        help="e.g. psi>0.25, oov_change>0.05, missing_change>0.1, ctr_gap>0.1, auc<0.7; repeatable",
    )
    p.add_argument(
        "--report", action="store_true", help="also write <model>/report.html (recorded figures + this check)"
    )
    _add_read_options(p, defaults_from_model=True)
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=cmd_drift)


def _add_predict(sub: _Subcommands) -> None:
    """The ``deepfm predict`` subcommand and its flags."""
    p = sub.add_parser("predict", help="write click probabilities for a file")
    p.add_argument("model", type=_location)
    p.add_argument("--data", **DATA, required=True)
    p.add_argument("--out", type=Path, required=True, help="CSV with a 'probability' column, one row per input row")
    p.add_argument("--keep", default="", help="input columns to copy into the output, e.g. id")
    _add_read_options(p, defaults_from_model=True)
    _add_engine_args(p)
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=cmd_predict)


def _add_explain(sub: _Subcommands) -> None:
    """The ``deepfm explain`` subcommand and its flags."""
    p = sub.add_parser(
        "explain", help="field-pair interactions and the logit's parts over some rows: PNG heatmaps + explain.json"
    )
    p.add_argument("model", type=_location)
    p.add_argument("--data", **DATA, required=True, help="rows to explain (labels not needed)")
    p.add_argument(
        "--out", type=Path, required=True, help="folder for explain.json, pairs.png, decomposition.png, drilldown.png"
    )
    _add_explain_args(p)
    p.add_argument("--top", type=int, default=10, help="pairs and value combinations to list (default 10)")
    _add_read_options(p, defaults_from_model=True)
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=cmd_explain)


def _add_report(sub: _Subcommands) -> None:
    """The ``deepfm report`` subcommand and its flags."""
    p = sub.add_parser("report", help="one self-contained HTML: learning curves, calibration, ROC, explanation")
    p.add_argument("model", type=_location)
    p.add_argument(
        "--data",
        **DATA,
        help="labelled rows for calibration, ROC and the explanation "
        "(default: calibration and ROC as recorded for the test part; no explanation)",
    )
    p.add_argument("--out", type=Path, help="HTML file to write (default <model>/report.html)")
    _add_explain_args(p)
    _add_read_options(p, defaults_from_model=True)
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=cmd_report)


def _add_export(sub: _Subcommands) -> None:
    """The ``deepfm export`` subcommand and its flags."""
    p = sub.add_parser(
        "export", help="write the model as an ONNX graph over encoded inputs (pip install 'deepfm[onnx]')"
    )
    p.add_argument("model", type=_location)
    p.add_argument("--onnx", type=Path, required=True, help="the .onnx file to write")
    p.add_argument(
        "--check-rows", type=int, default=2000, help="generated rows to compare ONNX Runtime with PyTorch on (0: skip)"
    )
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=cmd_export)


def _add_serve(sub: _Subcommands) -> None:
    """The ``deepfm serve`` subcommand and its flags."""
    p = sub.add_parser(
        "serve",
        help="HTTP prediction service: POST /predict, GET /health, /ready, /schema, /metrics, /docs "
        "(pip install 'deepfm[serve]')",
    )
    p.add_argument("model", type=_location, nargs="?", help="model folder (or give --watch PATH)")
    p.add_argument(
        "--watch",
        metavar="PATH",
        help="serve PATH (a model folder, or a symlink to one) and reload it whenever it changes, with no failed "
        "request; a bundle that fails to load or verify leaves the old model serving",
    )
    p.add_argument("--watch-seconds", type=float, default=2.0, help="how often --watch looks (default 2)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--workers", type=int, default=1, help="server processes, each with its own copy of the model")
    _add_engine_args(p)
    p.add_argument("--threads", type=int, default=1, help="model threads per worker (default 1: many small requests)")
    p.add_argument("--max-records", type=int, default=10_000, help="records per request (default 10000)")
    p.add_argument("--max-body-bytes", type=int, default=16 << 20, help="request body size (default 16 MiB)")
    p.add_argument(
        "--access-log", action="store_true", help="log every request: its id, status, time and model (costs throughput)"
    )
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=cmd_serve)


def _add_synth_setting_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("generator setting (deepfm/data/synth_settings.py; a flag overrides the setting's value)")
    g.add_argument(
        "--setting",
        choices=list(SETTINGS),
        default="criteo",
        help="named knobs: criteo (default, the original generator), interactions, tail, noisy",
    )
    g.add_argument("--fm-weight", type=float, help="weight of the teacher's pairwise (FM) part (criteo 0.7)")
    g.add_argument("--mlp-weight", type=float, help="weight of the teacher's higher-order (MLP) part (criteo 0.5)")
    g.add_argument("--card-scale", type=float, help="vocabulary sizes times this (criteo 1)")
    g.add_argument("--zipf-shift", type=float, help="added to every Zipf exponent; < 0: longer tails (criteo 0)")
    g.add_argument(
        "--numeric-share",
        type=float,
        help="share of the signal's field importance in I1..I13 (criteo: as drawn, 0.23 for seed 0)",
    )
    g.add_argument("--bayes-auc", type=float, help="AUC of the true probabilities, i.e. the noise (criteo 0.80)")


def _add_explain_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--pair", help="the field pair to drill into, e.g. C1,C2 (default: the strongest)")
    p.add_argument("--rows", type=int, help="explain only the first N rows (default: all)")
    p.add_argument("--min-count", type=int, default=5, help="rows a value combination needs to be listed (default 5)")


def _add_engine_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("engine")
    g.add_argument(
        "--engine", choices=["torch", "onnx"], default="torch", help="run the model with PyTorch or ONNX Runtime"
    )
    g.add_argument("--onnx", type=Path, help="the exported graph for --engine onnx (default: <model>/model.onnx)")


def _add_run_args(p: argparse.ArgumentParser, data_required: bool = True) -> None:
    """Data, schema, reading and model/training overrides: shared by train and compare."""
    p.add_argument(
        "--data",
        **DATA,
        required=data_required,
        help="training data (CSV/TSV, Parquet or libFM): a file, folder, glob, URI or several",
    )
    p.add_argument("--valid", **DATA, help="validation file (early stopping)")
    p.add_argument("--test", **DATA, help="test file (reported in metrics.json)")
    p.add_argument("--split", help="split --data by row order: train,valid[,test] fractions, e.g. 0.8,0.1,0.1")
    p.add_argument(
        "--split-by",
        metavar="COLUMN",
        help="split --data by this column's value (a partition key such as day, or a column): below "
        "--valid-from trains, from --valid-from validates, from --test-from tests (docs/datasets.md)",
    )
    p.add_argument("--valid-from", metavar="V", help="with --split-by: the first value of the validation rows")
    p.add_argument("--test-from", metavar="V", help="with --split-by: the first value of the test rows")
    p.add_argument("--config", type=Path, help="YAML config: fields, model, train, data")
    p.add_argument("--preset", choices=["criteo"], help="a ready schema (criteo: label, I1..I13, C1..C26)")
    p.add_argument("--label", default=None, help="label column when the schema is inferred (default: label)")
    p.add_argument(
        "--cache-dir",
        type=Path,
        help="keep encoded data here for later runs (default $DEEPFM_CACHE_DIR or ~/.cache/deepfm/encoded)",
    )
    p.add_argument("--no-cache", action="store_true", help="encode into a temporary folder and throw it away")
    p.add_argument(
        "--track",
        action="append",
        metavar="SPEC",
        help="track the run in tensorboard:DIR or mlflow[:TRACKING_URI] (again for both; needs pip install 'deepfm[track]')",
    )
    _add_read_options(p)
    _add_training_overrides(p)
    p.add_argument("--quiet", action="store_true")


def _add_training_overrides(p: argparse.ArgumentParser) -> None:
    """The model and training flags that override the config's values."""
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
    g.add_argument(
        "--min-count",
        type=_int_or_auto,
        help="for every field with a vocabulary (categorical, bucketized, multi-hot); "
        '"auto" (the default of a new schema) grows from 2 to 10 with the training rows',
    )
    g.add_argument(
        "--max-vocab",
        type=int,
        help="cap on every vocabulary (0: none); fresh fits keep the most frequent, "
        "warm starts evict the lowest recency-weighted counts",
    )
    g.add_argument(
        "--hash-buckets",
        type=int,
        help="hash every categorical and multi-hot field into this many rows "
        "instead of fitting a vocabulary (0: vocabularies); memory is then fixed whatever the distinct values",
    )
    g.add_argument("--seed", type=int)
    g.add_argument("--device", help="auto, cpu or cuda")
    g.add_argument(
        "--threads",
        type=int,
        help="torch threads per process (default: PyTorch's, which follows "
        "OMP_NUM_THREADS; one per core, or cores / N under --nproc N)",
    )
    g.add_argument(
        "--checkpoint-every",
        type=int,
        help="steps between checkpoints in the output folder (default 2000; 0: epoch ends only)",
    )


def _add_read_options(p: argparse.ArgumentParser, defaults_from_model: bool = False) -> None:
    g = p.add_argument_group("reading" + (" (default: as in training)" if defaults_from_model else ""))
    g.add_argument("--format", choices=["auto", "text", "parquet", "libfm"])
    g.add_argument("--delimiter", help="for text files; default: guessed from the first line")
    g.add_argument("--header", choices=["auto", "yes", "no"])
    g.add_argument(
        "--on-bad-row", choices=["error", "skip"], help="skip rows with the wrong column count and report how many"
    )
