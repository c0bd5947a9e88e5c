"""Drift check: is new data still what the model was trained on?

Training records a profile of its data (:mod:`deepfm.features.profile`): per field, how the
rows fell into the model's own buckets (the most frequent values, the rest, OOV, missing; bins
of a scaled numeric's value).

:func:`check` encodes new rows with the model's pipeline (streamed), fills the same buckets and
reports per field the OOV and missing rates against training and the population stability
index PSI = sum_i (a_i - e_i) ln(a_i / e_i) over the buckets (shares e in training, a in the new
data; each floored at 1e-4 so an empty bucket is finite). Usual reading: < 0.1 stable,
0.1-0.25 moderate shift, > 0.25 a shift worth acting on. With labels it also compares the
mean prediction with the observed click rate. Thresholds like ``psi>0.25`` turn the report
into a pass/fail verdict (``deepfm drift --fail-on``: exit status 1).
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from deepfm.bundle import Bundle
from deepfm.data.encoded import EncodedChunk
from deepfm.data.source import ReadOptions
from deepfm.errors import BundleError, ConfigError
from deepfm.features.profile import PROFILE_FILE, FieldCounts, vocab_buckets
from deepfm.features.state import MISSING, OOV
from deepfm.inference.predictor import open_input
from deepfm.util.metrics import auc, logloss

_FLOOR = 1e-4


def psi(expected: np.ndarray, actual: np.ndarray) -> float:
    """Population stability index of two count vectors over the same buckets. (K,), (K,)"""
    e = np.maximum(np.asarray(expected, np.float64) / max(float(np.sum(expected)), 1.0), _FLOOR)
    a = np.maximum(np.asarray(actual, np.float64) / max(float(np.sum(actual)), 1.0), _FLOOR)
    return float(np.sum((a - e) * np.log(a / e)))


# ---------------------------------------------------------------- thresholds
FIELD_METRICS = ("psi", "oov", "oov_change", "missing_change")
GLOBAL_METRICS = ("ctr_gap", "auc", "logloss")


@dataclass(frozen=True)
class Threshold:
    """``metric>value`` or ``metric<value``; a field metric fails when any field crosses it."""

    metric: str
    op: str
    value: float

    @classmethod
    def parse(cls, text: str) -> Threshold:
        m = re.fullmatch(r"\s*([a-z_]+)\s*([<>])\s*([0-9.eE+-]+)\s*", text)
        names = FIELD_METRICS + GLOBAL_METRICS
        if not m or m.group(1) not in names:
            raise ConfigError(
                f"--fail-on wants METRIC>VALUE or METRIC<VALUE with METRIC one of {list(names)}, got {text!r}"
            )
        try:
            return cls(m.group(1), m.group(2), float(m.group(3)))
        except ValueError:
            raise ConfigError(f"--fail-on: {m.group(3)!r} is not a number (in {text!r})") from None

    def crossed(self, x: float | None) -> bool:
        if x is None or not math.isfinite(x):
            return False
        return x > self.value if self.op == ">" else x < self.value

    def __str__(self) -> str:
        return f"{self.metric}{self.op}{self.value:g}"


# ---------------------------------------------------------------- the check
def load_profile(bundle: Bundle) -> dict[str, Any]:
    raw = bundle.extra.get(PROFILE_FILE)
    if raw is None:
        raise BundleError(
            f"{bundle.path}: no {PROFILE_FILE} (the model was trained before drift checks existed); train it again"
        )
    return json.loads(raw)


def check(
    bundle: Bundle, path: str | Path, thresholds: list[Threshold] | None = None, options: ReadOptions | None = None
) -> dict[str, Any]:
    """Compare the rows of ``path`` with the model's training profile. Returns the report
    (JSON-able); ``report["failed"]`` lists the thresholds crossed and where."""
    reference = load_profile(bundle)
    pipeline, schema = bundle.pipeline, bundle.config.schema
    reader = open_input(bundle, path, options)
    has_label = schema.label in reader.columns
    columns = [schema.label, *schema.names] if has_label else schema.names
    counter = FieldCounts(pipeline)
    labels, probs = [], []
    for chunk in reader.chunks(columns, schema.numeric_columns):
        enc: EncodedChunk = pipeline.encode(chunk, with_labels=has_label)
        counter.add(enc.ids, enc.values, enc.multi_hot)
        probs.append(bundle.predict_encoded(enc))
        if enc.labels is not None:
            labels.append(enc.labels)
    p = np.concatenate(probs) if probs else np.zeros(0)
    fields: dict[str, Any] = {}
    for spec in schema.fields:
        ref = reference["fields"][spec.name]
        counts = counter.ids[spec.name]
        if ref["kind"] == "scaled":
            x = np.concatenate(counter.values[spec.name]) if counter.values[spec.name] else np.zeros(0)
            hist = np.bincount(np.searchsorted(ref["edges"], x, side="right"), minlength=len(ref["edges"]) + 1)
            new_buckets = [*hist.tolist(), int(counts[MISSING])]
        else:
            new_buckets = vocab_buckets(counts, np.asarray(ref["top"], dtype=np.int64))
        total, ref_total = max(int(counts.sum()), 1), max(ref["total"], 1)
        oov = float(counts[OOV]) / total if ref["kind"] != "scaled" else 0.0
        missing = float(counts[MISSING]) / total
        fields[spec.name] = {
            "psi": psi(np.asarray(ref["buckets"]), np.asarray(new_buckets)),
            "oov": oov,
            "oov_train": ref["oov"] / ref_total,
            "oov_change": oov - ref["oov"] / ref_total,
            "missing": missing,
            "missing_train": ref["missing"] / ref_total,
            "missing_change": abs(missing - ref["missing"] / ref_total),
        }
    report: dict[str, Any] = {
        "model": str(bundle.path),
        "data": str(path),
        "rows": int(p.size),
        "training_rows": reference["rows"],
        "reference_part": reference.get("part", "train"),
        "mean_prediction": float(p.mean()) if p.size else None,
        "fields": fields,
        "max_psi": max((f["psi"] for f in fields.values()), default=0.0),
    }
    if labels:
        y = np.concatenate(labels)
        report["labels"] = {"ctr": float(y.mean()), "auc": auc(y, p), "logloss": logloss(y, p)}
        ctr = report["labels"]["ctr"]
        report["labels"]["ctr_gap"] = abs(report["mean_prediction"] - ctr) / ctr if ctr > 0 else None
    report["thresholds"] = [str(t) for t in thresholds or []]
    report["failed"] = _failures(report, thresholds or [])
    return report


def _failures(report: dict[str, Any], thresholds: list[Threshold]) -> list[str]:
    failed = []
    for t in thresholds:
        if t.metric in FIELD_METRICS:
            where = [f"{name} ({f[t.metric]:.4g})" for name, f in report["fields"].items() if t.crossed(f[t.metric])]
            if where:
                failed.append(f"{t}: {', '.join(where)}")
        else:
            x = report.get("labels", {}).get(t.metric)
            if "labels" not in report:
                failed.append(f"{t}: the data has no labels to measure {t.metric}")
            elif t.crossed(x):
                failed.append(f"{t}: {x:.4g}")
    return failed
