"""The accuracy benchmark's data sets: which there are, and making each ready once.

Real data comes from ../shared/data (its licences forbid copying it into this repository):
everything derived from it -- the Frappe CSV with a header, the peers' encoded arrays, the
quick run's shortened copies -- is written into the benchmark's --workdir, outside the
repository. Generated data (`deepfm synth --header`) is written there too and reused.
"""

from __future__ import annotations

import fnmatch
import json
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from benchlib import BENCH, ROOT, fail, log

SHARED = ROOT.parent / "shared" / "data"
CRITEO_SAMPLE = SHARED / "criteo" / "criteo_sampled_data_10k.csv"
FRAPPE = SHARED / "frappe" / "nfm_libfm"
# The ten positions of every Frappe libFM line (NFM's files), in order.
FRAPPE_FIELDS = ["user", "item", "daytime", "weekday", "isweekend", "homework", "cost", "weather", "country", "city"]

SYNTH_SETTINGS = ["criteo", "interactions", "tail", "noisy"]
SYNTH_SIZES = {"100k": 100_000, "300k": 300_000, "1m": 1_000_000}
INFERRED_MAX_ROWS = 300_000  # the schema-inferred runs on synth: at 100k and 300k rows
QUICK_ROWS = {100_000: 3_000, 300_000: 4_000, 1_000_000: 5_000}  # --quick: the sizes' stand-ins
QUICK_REAL_ROWS = 3_000  # --quick: the first rows of each real file
SPLIT3 = "0.8,0.1,0.1"


@dataclass(frozen=True)
class DataSet:
    """One row group of the results. ``rows``: the nominal size the checks use (a --quick
    run keeps the nominal size while it trains on a few thousand rows)."""

    name: str
    family: str  # criteo-sample | frappe | synth
    rows: int
    setting: str | None = None
    title: str = ""


@dataclass
class Prepared:
    """A data set ready to train on: deepfm's data flags, and the peers' encoded arrays."""

    deepfm_args: list[str]  # --data ... [--preset criteo] --split ... [--test ...]
    inferred_args: list[str] | None  # the same files with a header, no --preset: only --label
    encoded: Path
    meta: dict  # encode.py's meta.json: fields, vocabulary sizes, rows per part, fingerprint
    truth: dict | None = None  # synth: the Bayes-optimal test AUC / logloss and the click rate
    source: dict = field(default_factory=dict)  # what to record about the files (no local paths)


def catalogue() -> list[DataSet]:
    """Every data set, in the order they run (smallest first, so a smoke run fails early)."""
    sets = [
        DataSet("criteo-10k", "criteo-sample", 9_999, title="Criteo sample (10k rows)"),
        DataSet("frappe", "frappe", 86_582, title="Frappe (NFM validation + test files)"),
    ]
    for size, rows in SYNTH_SIZES.items():
        for setting in SYNTH_SETTINGS:
            sets.append(DataSet(f"synth-{setting}-{size}", "synth", rows, setting, f"synth {setting}, {rows:,} rows"))
    return sets


def select(patterns: str | None) -> list[DataSet]:
    """--datasets: comma-separated names or shell patterns (synth-*-1m)."""
    sets = catalogue()
    if not patterns:
        return sets
    wanted = [p.strip() for p in patterns.split(",") if p.strip()]
    chosen = [d for d in sets if any(fnmatch.fnmatchcase(d.name, p) for p in wanted)]
    unmatched = [p for p in wanted if not any(fnmatch.fnmatchcase(d.name, p) for d in sets)]
    if unmatched or not chosen:
        fail(
            f"--datasets: no data set matches {', '.join(unmatched) or patterns}; known: {', '.join(d.name for d in sets)}"
        )
    return chosen


def check_shared(sets: list[DataSet]) -> None:
    """Say clearly, before anything runs, when the real data is not where it should be."""
    needs = {
        "criteo-sample": [CRITEO_SAMPLE],
        "frappe": [FRAPPE / "frappe.validation.libfm", FRAPPE / "frappe.test.libfm"],
    }
    missing = [p for d in sets for p in needs.get(d.family, []) if not p.exists()]
    if missing:
        fail(
            "the real data sets live in ../shared/data next to the repository (see their PROVENANCE.md), "
            f"and {', '.join(str(p) for p in missing)} is not there; leave them out with e.g. --datasets 'synth-*'"
        )


def prepare(ds: DataSet, workdir: Path, peer_python: Path | None, quick: bool) -> Prepared:
    """Files for deepfm and the encoded arrays for the peers, made once in workdir."""
    folder = workdir / "data" / ds.name
    folder.mkdir(parents=True, exist_ok=True)
    if ds.family == "criteo-sample":
        data = _head(CRITEO_SAMPLE, folder / "criteo-quick.csv", QUICK_REAL_ROWS + 1) if quick else CRITEO_SAMPLE
        args = ["--data", str(data), "--split", SPLIT3]
        prepared = _finish(
            ds,
            folder,
            args + ["--preset", "criteo"],
            args + ["--label", "label"],
            ["--data", str(data), "--format", "criteo", "--split", SPLIT3],
            peer_python,
        )
        prepared.source = {"file": "../shared/data/criteo/criteo_sampled_data_10k.csv", "split": SPLIT3}
    elif ds.family == "frappe":
        valid, test = FRAPPE / "frappe.validation.libfm", FRAPPE / "frappe.test.libfm"
        if quick:
            valid, test = (
                _head(valid, folder / valid.name, QUICK_REAL_ROWS),
                _head(test, folder / test.name, QUICK_REAL_ROWS),
            )
        offsets = frappe_offsets([valid, test])
        csv_valid, csv_test = folder / "frappe.validation.csv", folder / "frappe.test.csv"
        libfm_to_csv(valid, csv_valid, offsets)
        libfm_to_csv(test, csv_test, offsets)
        prepared = _finish(
            ds,
            folder,
            ["--data", str(valid), "--split", "0.8,0.2", "--test", str(test)],
            ["--data", str(csv_valid), "--split", "0.8,0.2", "--test", str(csv_test), "--label", "label"],
            ["--data", str(valid), "--test", str(test), "--format", "libfm", "--split", "0.8,0.2"],
            peer_python,
        )
        prepared.source = {
            "file": "../shared/data/frappe/nfm_libfm/frappe.validation.libfm",
            "split": "0.8,0.2",
            "test": "../shared/data/frappe/nfm_libfm/frappe.test.libfm",
        }
    else:
        rows = QUICK_ROWS[ds.rows] if quick else ds.rows
        data, synth = _synth(folder / f"{ds.name}.tsv", rows, ds.setting or "criteo")
        args = ["--data", str(data), "--split", SPLIT3]
        inferred = args + ["--label", "label"] if ds.rows <= INFERRED_MAX_ROWS else None
        prepared = _finish(
            ds,
            folder,
            args + ["--preset", "criteo"],
            inferred,
            ["--data", str(data), "--format", "criteo", "--split", SPLIT3],
            peer_python,
        )
        prepared.truth = bayes_optimal(data.with_suffix(".truth.csv"), prepared.encoded, prepared.meta)
        prepared.source = {
            "synth": {k: synth[k] for k in ("rows", "setting", "header", "positive_rate")},
            "split": SPLIT3,
        }
    return prepared


def _finish(
    ds: DataSet,
    folder: Path,
    deepfm_args: list[str],
    inferred: list[str] | None,
    encode_args: list[str],
    peer_python: Path | None,
) -> Prepared:
    encoded = folder / "encoded"
    meta = encode(encode_args, encoded, peer_python)
    return Prepared(deepfm_args, inferred, encoded, meta)


def encode(args: list[str], out: Path, peer_python: Path | None) -> dict:
    """The peers' integer ids, by benchmarks/peers/encode.py in their environment, once:
    meta.json is written last, and the same arguments find it again."""
    marker = out / "meta.json"
    if marker.exists():
        meta = json.loads(marker.read_text())
        if meta.get("args") == args:
            return meta
    if peer_python is None:
        # deepfm-only runs still record the data set's fingerprint; pandas and scikit-learn are
        # in deepfm's test extra, which is what this interpreter runs with.
        peer_python = Path(sys.executable)
    shutil.rmtree(out, ignore_errors=True)
    cmd = [str(peer_python), str(BENCH / "peers" / "encode.py"), *args, "--out", str(out)]
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=BENCH / "peers")
    if done.returncode != 0:
        fail(f"encoding for the peers failed: {' '.join(cmd)}\n{done.stderr[-2000:]}")
    meta = json.loads(marker.read_text()) | {"args": args}
    marker.write_text(json.dumps(meta, indent=1))
    return meta


def _synth(path: Path, rows: int, setting: str) -> tuple[Path, dict]:
    """`deepfm synth --header` once per (rows, setting); its summary line marks it whole."""
    marker = path.with_suffix(".synth.json")
    if path.exists() and marker.exists():
        done = json.loads(marker.read_text())
        if done.get("rows") == rows and done.get("setting", {}).get("name") == setting and done.get("header"):
            return path, done
    log(f"generating {rows:,} rows of synth setting {setting} -> {path.name}")
    cmd = [
        sys.executable,
        "-m",
        "deepfm",
        "synth",
        "--rows",
        str(rows),
        "--setting",
        setting,
        "--header",
        "--out",
        str(path),
        "--quiet",
    ]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        fail(f"deepfm synth failed:\n{done.stderr[-2000:]}")
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    marker.write_text(json.dumps(summary) + "\n")
    return path, summary


def _head(src: Path, dst: Path, lines: int) -> Path:
    """The first lines of a file (--quick), written once."""
    if not dst.exists():
        with open(src, "rb") as f, open(dst, "wb") as out:
            for _, line in zip(range(lines), f):
                out.write(line)
    return dst


def frappe_offsets(paths: list[Path]) -> list[int]:
    """Per field position, the smallest feature index it holds in these libFM files: NFM
    numbers the features of one field as one block of global indices."""
    lows: list[int] = []
    for path in paths:
        with open(path) as f:
            for line in f:
                indices = [int(t.split(":", 1)[0]) for t in line.split()[1:]]
                lows = indices if not lows else [min(a, b) for a, b in zip(lows, indices)]
    return lows


def libfm_to_csv(src: Path, dst: Path, offsets: list[int]) -> None:
    """Frappe's libFM lines as a CSV with a header: label 0/1, then each field's index within
    its field (the global index minus the field's offset)."""
    if len(offsets) != len(FRAPPE_FIELDS):
        raise ValueError(f"Frappe has {len(FRAPPE_FIELDS)} fields, got {len(offsets)} offsets")
    tmp = dst.with_name(dst.name + ".partial")
    with open(src) as f, open(tmp, "w") as out:
        out.write(",".join(["label", *FRAPPE_FIELDS]) + "\n")
        for number, line in enumerate(f, 1):
            tokens = line.split()
            if not tokens:
                continue
            indices = [int(t.split(":", 1)[0]) for t in tokens[1:]]
            if len(indices) != len(offsets):
                raise ValueError(f"{src.name}, line {number}: {len(indices)} features, expected {len(offsets)}")
            label = "1" if float(tokens[0]) > 0 else "0"
            out.write(",".join([label, *(str(i - o) for i, o in zip(indices, offsets))]) + "\n")
    tmp.replace(dst)


def bayes_optimal(truth: Path, encoded: Path, meta: dict) -> dict:
    """AUC and logloss of the true probabilities on the test part (the file's last rows)."""
    import pyarrow.csv as pacsv

    from deepfm.util.metrics import auc, logloss

    p = pacsv.read_csv(truth).column("p_true").to_numpy()
    y = np.load(encoded / "test_y.npy").astype(np.float64)
    p_test = p[len(p) - len(y) :]
    return {"test_auc": float(auc(y, p_test)), "test_logloss": float(logloss(y, p_test)), "click_rate": float(y.mean())}
