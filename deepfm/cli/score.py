"""deepfm evaluate, predict, calibrate, export, serve."""

from __future__ import annotations

import argparse
import json
import logging

from deepfm.bundle import Bundle
from deepfm.cli.common import model_read_options, usage_error
from deepfm.errors import require_extra
from deepfm.inference.export import export_onnx
from deepfm.inference.predictor import Predictor, calibrate, evaluate, predict_file
from deepfm.inference.serve import ServeSettings, serve

log = logging.getLogger("deepfm")


def cmd_evaluate(args: argparse.Namespace) -> int:
    predictor = Predictor.load(args.model, args.engine, args.onnx)
    result = evaluate(predictor, args.data, model_read_options(predictor.bundle, args))
    print(json.dumps(result))
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    predictor = Predictor.load(args.model, args.engine, args.onnx)
    keep = [k for k in args.keep.split(",") if k]
    rows = predict_file(predictor, args.data, args.out, keep=keep, options=model_read_options(predictor.bundle, args))
    log.info("wrote %d probabilities to %s", rows, args.out)
    return 0


def cmd_calibrate(args: argparse.Namespace) -> int:
    bundle = Bundle.load(args.model)
    record = calibrate(bundle, args.data, args.method, model_read_options(bundle, args))
    keys = ("auc", "logloss", "ece", "mean_prediction", "ctr")
    print(
        json.dumps(
            {
                "model": str(args.model),
                "method": args.method,
                "rows": record["before"]["rows"],
                **{f"{k}_before": record["before"][k] for k in keys if k != "ctr"},
                **{f"{k}_after": record["after"][k] for k in keys if k != "ctr"},
                "ctr": record["before"]["ctr"],
            }
        )
    )
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    require_extra("onnx", "onnx", "onnxscript", "onnxruntime")  # before loading the model
    if args.check_rows < 0:
        raise usage_error(f"--check-rows must be >= 0, got {args.check_rows}")
    print(json.dumps(export_onnx(Bundle.load(args.model), args.onnx, check_rows=args.check_rows)))
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    require_extra("serve", "fastapi", "uvicorn")
    if args.engine == "onnx":
        require_extra("onnx", "onnxruntime")
    if args.model is None and args.watch is None:
        raise usage_error("deepfm serve needs a model folder, or --watch PATH")
    if args.model is not None and args.watch is not None and str(args.model) != args.watch:
        raise usage_error(f"give the model folder or --watch PATH, not both ({args.model}, {args.watch})")
    settings = ServeSettings(
        model=str(args.model if args.model is not None else args.watch),
        watch=args.watch is not None,
        watch_seconds=args.watch_seconds,
        engine=args.engine,
        onnx=str(args.onnx) if args.onnx else None,
        max_records=args.max_records,
        max_body_bytes=args.max_body_bytes,
        threads=args.threads,
    )
    serve(
        settings,
        host=args.host,
        port=args.port,
        workers=args.workers,
        access_log=args.access_log,
        log_level="warning" if args.quiet else "info",
    )
    return 0
