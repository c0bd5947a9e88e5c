"""deepfm drift, explain, report."""

from __future__ import annotations

import argparse
import json
import sys

from deepfm.analysis.drift import Threshold, check
from deepfm.analysis.explain import explain, parse_pair
from deepfm.analysis.plots import require_matplotlib
from deepfm.analysis.report import write_explanation, write_report
from deepfm.bundle import Bundle
from deepfm.cli.common import model_read_options


def cmd_drift(args: argparse.Namespace) -> int:
    """Exit 0: within every threshold; 1: a threshold crossed (listed on stderr); 2: bad input."""
    thresholds = [Threshold.parse(t) for t in args.fail_on]
    bundle = Bundle.load(args.model)
    report = check(bundle, args.data, thresholds, model_read_options(bundle, args))
    out = args.out or args.model / "drift.json"
    out.write_text(json.dumps(report, indent=1))
    if args.report:
        write_report(bundle, args.model / "report.html")
    worst = sorted(report["fields"].items(), key=lambda kv: -kv[1]["psi"])[:3]
    print(
        json.dumps(
            {
                "out": str(out),
                "rows": report["rows"],
                "max_psi": report["max_psi"],
                "worst": {k: round(v["psi"], 4) for k, v in worst},
                "labels": report.get("labels"),
                "failed": report["failed"],
            }
        )
    )
    for line in report["failed"]:
        print(f"deepfm drift: threshold crossed: {line}", file=sys.stderr)
    return 1 if report["failed"] else 0


def cmd_explain(args: argparse.Namespace) -> int:
    require_matplotlib()
    bundle = Bundle.load(args.model)
    expl = explain(
        bundle,
        args.data,
        rows=args.rows,
        pair=parse_pair(args.pair),
        options=model_read_options(bundle, args),
        top_k=args.top,
        min_count=args.min_count,
    )
    written = write_explanation(expl, args.out, top_k=args.top)
    drill = expl.drilldown
    print(
        json.dumps(
            {
                "out": str(args.out),
                "rows": expl.rows,
                "files": [p.name for p in written],
                "top_pairs": [
                    {"fields": t["fields"], "mean_abs": round(t["mean_abs"], 4)}
                    for t in expl.top_pairs(min(args.top, 5))
                ],
                "drilldown": list(drill.fields) if drill is not None else None,
            }
        )
    )
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    require_matplotlib()
    bundle = Bundle.load(args.model)
    out = args.out or args.model / "report.html"
    write_report(
        bundle,
        out,
        data=args.data,
        rows=args.rows,
        pair=parse_pair(args.pair),
        options=model_read_options(bundle, args),
        min_count=args.min_count,
    )
    print(json.dumps({"out": str(out)}))
    return 0
