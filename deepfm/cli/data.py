"""deepfm synth, demo."""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from deepfm.cli.common import usage_error
from deepfm.cli.demo import run_demo
from deepfm.data.synth import write_synth
from deepfm.data.synth_days import write_synth_days
from deepfm.data.synth_settings import get_setting


def cmd_synth(args: argparse.Namespace) -> int:
    if args.rows < 1:
        raise usage_error(f"--rows must be at least 1, got {args.rows}")
    t0 = time.perf_counter()
    if args.day < 1:
        raise usage_error(f"--day must be at least 1, got {args.day}")
    knobs = {
        k: getattr(args, k)
        for k in ("fm_weight", "mlp_weight", "card_scale", "zipf_shift", "numeric_share", "bayes_auc")
    }
    try:
        setting = get_setting(args.setting, **knobs)
    except ValueError as exc:
        raise usage_error(str(exc)) from None
    if args.days is not None:
        if not 1 <= args.days <= args.rows:
            raise usage_error(f"--days must be between 1 and --rows, got {args.days}")
        files = write_synth_days(args.rows, args.days, args.out, args.file_format, seed=args.seed, setting=setting)
        print(json.dumps({"out": str(args.out), "files": len(files), "rows": args.rows, "format": args.file_format}))
        return 0
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
    if args.rows < 1000:
        raise usage_error(f"--rows must be at least 1000 for the demo's three parts, got {args.rows}")
    if args.out is not None:
        report = run_demo(args.rows, Path(args.out), seed=args.seed)
    else:
        with tempfile.TemporaryDirectory(prefix="deepfm-demo-") as tmp:
            report = run_demo(args.rows, Path(tmp), seed=args.seed)
    print(json.dumps(report, indent=1))
    return 0
