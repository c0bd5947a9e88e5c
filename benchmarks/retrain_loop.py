#!/usr/bin/env python3
"""Daily retraining on simulated days: warm start vs retraining from scratch vs never retraining.

    .venv/bin/python benchmarks/retrain_loop.py                         # 5 days of 200k rows
    .venv/bin/python benchmarks/retrain_loop.py --rows 20000 --days 3   # smoke run

For each day d = 1..days it

1. writes day d with ``deepfm synth --day d`` (new ids appear, old ones fade, the click rate
   falls) and cuts it by row order into train / valid / test files;
2. scratch: ``deepfm train --preset criteo`` on day d alone (early stopping on valid);
3. warm:    ``deepfm train --warm-start warm/day{d-1} --epochs 1`` on day d (day 1: the scratch model);
4. warm+ds: the same warm start with ``--neg-sample-rate W`` (day 1: scratch with W), to
   measure what downsampling saves and costs;
5. never:   the day-1 model, evaluated on day d;
6. drift:   ``deepfm drift`` of yesterday's warm model on today's test rows.

Every arm is scored on day d's test rows (metrics.json's test part, or ``deepfm evaluate``).
Times are the wall-clock seconds of each ``deepfm train`` command (process start, reading,
preprocessing, training, evaluation, saving). Every command is printed as it runs and saved
with the results in benchmarks/results/retrain-loop-<date>.json; the script ends with the
Markdown tables of docs/retraining.md.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent


def run(cmd: list[str], log: list[dict[str, Any]]) -> tuple[float, str]:
    """Run one deepfm command; returns (wall seconds, stdout). The command is logged."""
    line = "deepfm " + shlex.join(cmd)
    print(f"$ {line}", flush=True)
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "deepfm", *cmd], capture_output=True, text=True, env=os.environ.copy())
    seconds = time.perf_counter() - t0
    log.append({"command": line, "seconds": round(seconds, 2), "exit": proc.returncode})
    if proc.returncode not in (0, 1):  # drift exits 1 when a threshold is crossed
        sys.exit(f"failed ({proc.returncode}): {line}\n{proc.stderr[-3000:]}")
    return seconds, proc.stdout


def split_day(src: Path, folder: Path, day: int, sizes: dict[str, int]) -> dict[str, Path]:
    """Cut a generated day into train / valid / test files by row order (streamed)."""
    out = {name: folder / f"day{day}.{name}.tsv" for name in sizes}
    with open(src, "rb") as f:
        for name, n in sizes.items():
            with open(out[name], "wb") as w:
                for _ in range(n):
                    w.write(f.readline())
    src.unlink()
    return out


def test_metrics(folder: Path) -> dict[str, Any]:
    m = json.loads((folder / "metrics.json").read_text())
    keys = (
        "test_auc",
        "test_logloss",
        "test_ece",
        "test_mean_prediction",
        "test_ctr",
        "epochs",
        "train_seconds",
        "train_rows",
    )
    return {k.removeprefix("test_"): m[k] for k in keys}


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=200_000, help="training rows per day (default 200000)")
    ap.add_argument("--valid-rows", type=int, default=20_000)
    ap.add_argument("--test-rows", type=int, default=50_000)
    ap.add_argument("--days", type=int, default=5)
    ap.add_argument("--seed", type=int, default=0, help="generator seed")
    ap.add_argument("--threads", type=int, default=1, help="torch threads per run (default 1: a shared 2-core machine)")
    ap.add_argument(
        "--scratch-epochs", type=int, default=10, help="the most epochs from scratch (early stopping ends sooner)"
    )
    ap.add_argument("--warm-epochs", type=int, default=1)
    ap.add_argument("--neg-sample-rate", type=float, default=0.25)
    ap.add_argument("--out", type=Path, default=ROOT / "runs" / "retrain-loop")
    return ap.parse_args()


class Loop:
    """One run of the loop: its settings, output folder and command log."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.out: Path = args.out
        self.log: list[dict[str, Any]] = []
        self.common = ["--threads", str(args.threads), "--no-cache", "--quiet"]
        self.sizes = {"train": args.rows, "valid": args.valid_rows, "test": args.test_rows}

    def write_day(self, d: int) -> dict[str, Path]:
        """Generate day d and cut it into its train / valid / test files."""
        raw = self.out / "data" / f"day{d}.tsv"
        rows = str(sum(self.sizes.values()))
        run(
            ["synth", "--day", str(d), "--rows", rows, "--seed", str(self.args.seed), "--out", str(raw), "--quiet"],
            self.log,
        )
        raw.with_suffix(".truth.csv").unlink()
        return split_day(raw, self.out / "data", d, self.sizes)

    def train(
        self, arm: str, d: int, files: dict[str, Path], start: list[str], epochs: int, ds: bool
    ) -> dict[str, Any]:
        """One ``deepfm train`` into <out>/<arm>/day<d>: its test metrics and wall seconds."""
        folder = self.out / arm / f"day{d}"
        parts = ["--data", str(files["train"]), "--valid", str(files["valid"]), "--test", str(files["test"])]
        sampling = ["--neg-sample-rate", str(self.args.neg_sample_rate)] if ds else []
        cmd = ["train", *start, *parts, "--epochs", str(epochs), *sampling, "--out", str(folder), *self.common]
        secs, _ = run(cmd, self.log)
        return {**test_metrics(folder), "seconds": secs}

    def day(self, d: int) -> dict[str, Any]:
        """Every arm of day d, scored on its test rows (and the drift from yesterday's model)."""
        files = self.write_day(d)
        args, out = self.args, self.out
        row: dict[str, Any] = {
            "day": d,
            "scratch": self.train("scratch", d, files, ["--preset", "criteo"], args.scratch_epochs, False),
        }
        if d == 1:
            shutil.copytree(out / "scratch/day1", out / "warm/day1")
            row["warm"] = dict(row["scratch"])
            row["warm_ds"] = self.train("warm-ds", d, files, ["--preset", "criteo"], args.scratch_epochs, True)
            row["never"] = dict(row["scratch"])
            return row
        for arm, key, ds in (("warm", "warm", False), ("warm-ds", "warm_ds", True)):
            start = ["--warm-start", str(out / f"{arm}/day{d - 1}")]
            row[key] = self.train(arm, d, files, start, args.warm_epochs, ds)
        m = json.loads((out / f"warm/day{d}/metrics.json").read_text())
        row["warm"]["vocabulary"] = m["warm_start"]
        _, text = run(["evaluate", str(out / "scratch/day1"), "--data", str(files["test"]), "--quiet"], self.log)
        ev = json.loads(text)
        row["never"] = {k: ev[k] for k in ("auc", "logloss", "ece", "mean_prediction", "ctr")}
        row["drift"] = self.drift(d, files["test"])
        return row

    def drift(self, d: int, test: Path) -> dict[str, Any]:
        """``deepfm drift`` of yesterday's warm model on today's test rows."""
        path = self.out / f"drift-day{d}.json"
        cmd = ["drift", str(self.out / f"warm/day{d - 1}"), "--data", str(test), "--out", str(path)]
        _, text = run([*cmd, "--fail-on", "psi>0.25", "--quiet"], self.log)
        drift = json.loads(text)
        fields = json.loads(path.read_text())["fields"].values()
        return {
            "max_psi": drift["max_psi"],
            "worst": drift["worst"],
            "fields_over_0.25": sum(1 for f in fields if f["psi"] > 0.25),
            "ctr_gap": (drift.get("labels") or {}).get("ctr_gap"),
        }


def main() -> None:
    args = parse_args()
    shutil.rmtree(args.out, ignore_errors=True)
    (args.out / "data").mkdir(parents=True)
    loop = Loop(args)
    days: list[dict[str, Any]] = []
    for d in range(1, args.days + 1):
        days.append(loop.day(d))
        print(json.dumps(days[-1]), flush=True)

    result = {
        "date": dt.date.today().isoformat(),
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
        "python": platform.python_version(),
        "args": {k: str(v) for k, v in vars(args).items()},
        "days": days,
        "commands": loop.log,
    }
    (BENCH / "results").mkdir(exist_ok=True)
    path = BENCH / "results" / f"retrain-loop-{result['date']}.json"
    path.write_text(json.dumps(result, indent=1))
    print(f"\nwrote {path}\n")
    print(tables(days))


def tables(days: list[dict[str, Any]]) -> str:
    lines = [
        "| day | test CTR | scratch AUC | warm AUC | never AUC | scratch logloss | warm logloss | never logloss | scratch s | warm s | warm / scratch time |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in days:
        s, w, n = r["scratch"], r["warm"], r["never"]
        lines.append(
            f"| {r['day']} | {s['ctr']:.4f} | {s['auc']:.4f} | {w['auc']:.4f} | {n['auc']:.4f} | {s['logloss']:.4f} | "
            f"{w['logloss']:.4f} | {n['logloss']:.4f} | {s['seconds']:.1f} ({s['epochs']} ep) | {w['seconds']:.1f} ({w['epochs']} ep) | "
            f"{w['seconds'] / s['seconds']:.2f} |"
        )
    lines += [
        "",
        "| day | warm AUC | warm+ds AUC | warm logloss | warm+ds logloss | warm+ds mean prediction | test CTR | warm train s | warm+ds train s | rows trained (ds) |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in days:
        w, ds = r["warm"], r["warm_ds"]
        lines.append(
            f"| {r['day']} | {w['auc']:.4f} | {ds['auc']:.4f} | {w['logloss']:.4f} | {ds['logloss']:.4f} | {ds['mean_prediction']:.4f} | "
            f"{ds['ctr']:.4f} | {w['train_seconds']:.1f} | {ds['train_seconds']:.1f} | {ds['train_rows']:,} |"
        )
    lines += [
        "",
        "| day | new values | evicted | max PSI (yesterday's warm model) | fields with PSI > 0.25 | never: mean prediction vs CTR |",
        "|---:|---:|---:|---:|---:|---:|",
    ]
    for r in days[1:]:
        v, dr, n = r["warm"]["vocabulary"], r["drift"], r["never"]
        lines.append(
            f"| {r['day']} | {v['new_values']:,} | {v['evicted_values']:,} | {dr['max_psi']:.2f} | {dr['fields_over_0.25']} | "
            f"{n['mean_prediction']:.4f} vs {n['ctr']:.4f} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
