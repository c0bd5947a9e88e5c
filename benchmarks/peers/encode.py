"""Encode one data set once for every peer (accuracy protocol): raw file -> integer ids.

    python encode.py --data clicks.tsv --format criteo --split 0.8,0.1,0.1 --out DIR
    python encode.py --data frappe.validation.libfm --format libfm --split 0.8,0.2 \\
        --test frappe.test.libfm --out DIR

Runs in the peers' environment, with the common rules of common.py: vocabularies fitted on
the training part only; values seen fewer than --min-count times there, and unseen values,
share one OOV index per field; a missing value is a value of its own; Criteo counts are
log-bucketized into categorical ids; every libFM field is categorical (its value is the
feature index of that position). Writes {train,valid,test}_{x,y}.npy and meta.json (fields,
vocabulary sizes, rows and a fingerprint of the arrays, which accuracy.py's --reuse matches).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import time

import common
import numpy as np


def main() -> None:
    args = parse_args()
    t0 = time.perf_counter()
    if args.format == "criteo":
        labels, values, fields = read_criteo(args.data)
        test = read_criteo(args.test) if args.test else None
    else:
        labels, values, fields = read_libfm(args.data)
        test = read_libfm(args.test) if args.test else None
    bounds = common.split_bounds(len(labels), args.split)
    if test is not None:
        if test[2] != fields:
            raise SystemExit(f"encode.py: {args.test} has other fields than {args.data}")
        n = len(labels)
        labels = np.concatenate([labels[: bounds["valid"][1]], test[0]])
        values = [np.concatenate([v[: bounds["valid"][1]], t]) for v, t in zip(values, test[1])]
        bounds["test"] = (bounds["valid"][1], bounds["valid"][1] + len(test[0]))
        if bounds["valid"][1] != n:
            raise SystemExit("encode.py: --test with a three-part --split leaves rows of --data unused")
    matrix, vocab_sizes = common.encode_columns(values, slice(*bounds["train"]), args.min_count)
    os.makedirs(args.out, exist_ok=True)
    digest = hashlib.sha256(json.dumps([fields, vocab_sizes]).encode())
    rows = {}
    for part, (a, b) in bounds.items():
        x, y = np.ascontiguousarray(matrix[a:b]), labels[a:b].astype(np.float32)
        np.save(os.path.join(args.out, f"{part}_x.npy"), x)
        np.save(os.path.join(args.out, f"{part}_y.npy"), y)
        digest.update(x.tobytes())
        digest.update(y.tobytes())
        rows[part] = int(b - a)
    meta = {
        "fields": fields,
        "vocab_sizes": vocab_sizes,
        "rows": rows,
        "fingerprint": digest.hexdigest()[:16],
        "source": {
            "data": args.data,
            "test": args.test,
            "format": args.format,
            "split": args.split,
            "min_count": args.min_count,
        },
        "seconds": round(time.perf_counter() - t0, 2),
    }
    # meta.json last: its presence says the arrays beside it are whole.
    with open(os.path.join(args.out, "meta.json"), "w") as f:
        json.dump(meta, f, indent=1)
    print(json.dumps(meta))


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", required=True, help="training (and validation) file")
    p.add_argument("--test", help="separate test file (then --split has two fractions)")
    p.add_argument("--format", choices=["criteo", "libfm"], required=True)
    p.add_argument("--split", default="0.8,0.1,0.1")
    p.add_argument("--min-count", type=int, default=2)
    p.add_argument("--out", required=True, help="folder for the arrays and meta.json")
    args = p.parse_args()
    args.split = [float(s) for s in args.split.split(",")]
    return args


def read_criteo(path: str) -> tuple[np.ndarray, list[np.ndarray], list[str]]:
    """Criteo layout, tab- or comma-separated, with or without the header label,I1..,C26."""
    import pandas as pd

    with open(path) as f:
        first = f.readline()
    sep = "\t" if "\t" in first else ","
    header = first.rstrip("\r\n").split(sep)[0] == "label"
    # Hashes are read as strings so that an all-digit hash stays the string it is.
    dtypes = {c: str for c in common.CATEGORICAL} | {c: "float64" for c in common.NUMERIC}
    df = pd.read_csv(path, sep=sep, header=0 if header else None, names=common.COLUMNS, dtype=dtypes)
    return df["label"].to_numpy(dtype=np.float32), common.criteo_values(df), list(common.FIELDS)


def read_libfm(path: str) -> tuple[np.ndarray, list[np.ndarray], list[str]]:
    """libFM lines 'label idx:val ...' with one feature per field position; labels 1/-1 (or
    1/0) become 1/0. A field's value is its feature index, as a string."""
    labels, rows = [], []
    with open(path) as f:
        for number, line in enumerate(f, 1):
            tokens = line.split()
            if not tokens:
                continue
            labels.append(1.0 if float(tokens[0]) > 0 else 0.0)
            rows.append([t.split(":", 1)[0] for t in tokens[1:]])
            if len(rows[-1]) != len(rows[0]):
                raise SystemExit(
                    f"encode.py: {path}, line {number}: {len(rows[-1])} features, the first line has {len(rows[0])}"
                )
    table = np.array(rows, dtype=object)
    fields = [f"f{i}" for i in range(table.shape[1])]
    return np.array(labels, dtype=np.float32), [table[:, i] for i in range(table.shape[1])], fields


if __name__ == "__main__":
    main()
