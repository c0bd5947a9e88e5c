"""The profile of a model's data, saved with it: what ``deepfm drift`` compares new rows with.

Training records it (``profile.json`` in the bundle, signed by the manifest) from the valid
part when it has one -- held-out rows of the training period, whose OOV rate is what unseen
rows of that period show; the training rows' own is lower by construction, as the vocabulary
was fitted on them -- else from the training part. For every field it records how the rows
fell into the model's own buckets: the TOP most frequent vocabulary values one by one, the
rest of the vocabulary as "other", the OOV row and the missing row; for a scaled numeric,
NUMERIC_BINS quantile bins of its value plus missing. A multi-hot field is profiled over its
tokens. :mod:`deepfm.analysis.drift` fills the same buckets from new rows.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from deepfm.data.encoded import EncodedDataset
from deepfm.features.pipeline import FIRST_VALUE, MISSING, OOV, FeaturePipeline

PROFILE_FILE = "profile.json"
TOP = 50  # vocabulary values with a bucket of their own
NUMERIC_BINS = 10
_SAMPLE = 200_000  # scaled values used to place the bin edges
_BLOCK = 65_536


class FieldCounts:
    """Per-field counts of local ids (vocabulary fields) or values (scaled numerics)."""

    def __init__(self, pipeline: FeaturePipeline) -> None:
        self.pipeline = pipeline
        self.ids = {f.name: np.zeros(pipeline.states[f.name].size, dtype=np.int64) for f in pipeline.schema.fields}
        self.values: dict[str, list[np.ndarray]] = {f.name: [] for f in pipeline.single_fields if f.is_scaled}

    def add(self, ids: np.ndarray, values: np.ndarray, multi_hot: list[tuple[np.ndarray, np.ndarray]]) -> None:
        """ids (N, S), values (N, V), multi-hot CSR (offsets, ids) as in an EncodedChunk."""
        v = 0
        for j, spec in enumerate(self.pipeline.single_fields):
            st = self.pipeline.states[spec.name]
            local = np.asarray(ids[:, j], dtype=np.int64) - st.offset
            self.ids[spec.name] += np.bincount(local, minlength=st.size)
            if spec.is_scaled:
                present = local != MISSING
                self.values[spec.name].append(np.asarray(values[:, v])[present])
                v += 1
        for spec, (_, flat) in zip(self.pipeline.multi_hot_fields, multi_hot):
            st = self.pipeline.states[spec.name]
            self.ids[spec.name] += np.bincount(np.asarray(flat, dtype=np.int64) - st.offset, minlength=st.size)


def profile(pipeline: FeaturePipeline, part: EncodedDataset) -> dict[str, Any]:
    """The training profile of ``part`` (encoded by ``pipeline``); see the module docstring."""
    counter = FieldCounts(pipeline)
    for start in range(0, len(part), _BLOCK):
        sl = slice(start, min(start + _BLOCK, len(part)))
        mh = []
        for offsets, flat in part.multi_hot:
            mh.append((offsets[sl.start : sl.stop + 1], flat[offsets[sl.start] : offsets[sl.stop]]))
        counter.add(part.ids[sl], part.values[sl], mh)
    fields: dict[str, Any] = {}
    for spec in pipeline.schema.fields:
        counts = counter.ids[spec.name]
        if spec.is_scaled:
            x = np.concatenate(counter.values[spec.name]) if counter.values[spec.name] else np.zeros(0, np.float32)
            sample = x[:: max(1, x.size // _SAMPLE)]
            edges = np.unique(np.quantile(sample, np.linspace(0, 1, NUMERIC_BINS + 1)[1:-1])).tolist() if x.size else []
            hist = np.bincount(np.searchsorted(edges, x, side="right"), minlength=len(edges) + 1)
            fields[spec.name] = {"kind": "scaled", "edges": edges, "buckets": [*hist.tolist(), int(counts[MISSING])]}
        else:
            top = FIRST_VALUE + np.argsort(-counts[FIRST_VALUE:], kind="stable")[:TOP]
            fields[spec.name] = {"kind": "vocabulary", "top": top.tolist(), "buckets": vocab_buckets(counts, top)}
        fields[spec.name]["total"] = int(counts.sum())
        fields[spec.name]["oov"] = int(counts[OOV]) if not spec.is_scaled else 0
        fields[spec.name]["missing"] = int(counts[MISSING])
    return {"rows": len(part), "top": TOP, "fields": fields}


def vocab_buckets(counts: np.ndarray, top: np.ndarray) -> list[int]:
    """Counts of: each top value, the other values, OOV, missing."""
    top_counts = counts[top]
    other = int(counts[FIRST_VALUE:].sum() - top_counts.sum())
    return [*top_counts.tolist(), other, int(counts[OOV]), int(counts[MISSING])]
