"""Warm start: a model for grown preprocessing that begins where yesterday's model ended.

The new pipeline was fitted with the old one as its base (FeaturePipeline.fit_encode(...,
base=)), so the schema, numeric statistics and bin edges are the old ones and every known value
kept its local id; only the field offsets may have moved (earlier fields grew). The new model
is built like a fresh one (same seed, same init), then:

- dense weights (FM bias, MLP, cross network, batch-norm statistics) are copied as they are;
- each kept table row -- a known value, a field's OOV and missing rows, a scaled numeric's two
  rows -- is copied from its old place to its new one (vector and first-order weight);
- rows of new values, and of evicted values' ids reused by newcomers, keep their fresh init.

Optimizer state is not carried over: Adam and the row-wise Adam start with zero moments and
the configured learning rates. Yesterday's moments describe yesterday's gradients, and the
bundle keeps no optimizer state (it holds what prediction needs); a fresh start with the
usual warm-up of Adam's bias correction is the documented, reproducible choice.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import torch

from deepfm.bundle import Bundle
from deepfm.errors import ConfigError
from deepfm.features.pipeline import FeaturePipeline
from deepfm.features.state import FIRST_VALUE, MISSING, OOV
from deepfm.model.deepfm import DeepFM


def check_compatible(old: Bundle, config_schema: Any, model_config: Any) -> None:
    """A warm start keeps the model's shape and every field's meaning: say what differs."""
    old_fields = {f.name: f for f in old.config.schema.fields}
    for f in config_schema.fields:
        o = old_fields.get(f.name)
        if o is None:
            raise ConfigError(f"warm start from {old.path}: field {f.name!r} is not in that model's schema")
        # hash_buckets too: another count sends a value to another row, and a vocabulary's
        # rows have nothing in common with buckets.
        same = ("kind", "mode", "transform", "binning", "bins", "separator", "pooling", "hash_buckets")
        changed = [f"{k} {getattr(o, k)!r} -> {getattr(f, k)!r}" for k in same if getattr(o, k) != getattr(f, k)]
        if changed:
            raise ConfigError(
                f"warm start from {old.path}: field {f.name!r} changed {', '.join(changed)}; only min_count and max_vocab may"
            )
    if [f.name for f in config_schema.fields] != list(old_fields):
        raise ConfigError(
            f"warm start from {old.path}: the fields must be that model's, in its order: {list(old_fields)}"
        )
    # The initialization may differ ("auto" against the std it resolved to): the weights come
    # from the old model, and new rows start as a fresh model's would. batch_norm "auto"
    # keeps the old model's choice (see warm_model_config).
    if (
        dataclasses.replace(warm_model_config(model_config, old), init_std=old.config.model.init_std)
        != old.config.model
    ):
        raise ConfigError(f"warm start from {old.path}: the model settings must stay as they were ({old.config.model})")


def warm_model_config(model_config: Any, old: Bundle) -> Any:
    """The model settings a warm start from ``old`` trains with: "auto" batch norm is the old
    model's (its layers and statistics carry over; data-dependent settings must not change the
    architecture under a warm start)."""
    if model_config.batch_norm == "auto":
        return dataclasses.replace(model_config, batch_norm=old.config.model.batch_norm)
    return model_config


def row_map(old: FeaturePipeline, new: FeaturePipeline, field: str) -> tuple[np.ndarray, np.ndarray]:
    """(old rows, new rows) of the table rows of ``field`` that carry over. (R,), (R,) int64"""
    o, n = old.states[field], new.states[field]
    if o.vocab is None:  # scaled numeric: its value row and its missing row
        local_old = local_new = np.arange(o.size, dtype=np.int64)
    else:
        local_old = np.arange(o.size, dtype=np.int64)
        found = n.local_ids(o.vocab)  # FIRST_VALUE + position in the new vocabulary, or OOV
        local_new = np.concatenate([[OOV, MISSING], found]).astype(np.int64)
        keep = np.r_[True, True, found != OOV]
        local_old, local_new = local_old[keep], local_new[keep]
    return o.offset + local_old, n.offset + local_new


@torch.no_grad()
def warm_start_weights(model: DeepFM, pipeline: FeaturePipeline, old: Bundle) -> dict[str, int]:
    """Copy ``old``'s weights into the freshly initialised ``model`` (see the module
    docstring). Returns counts: known values kept, new values, known values evicted."""
    state = model.state_dict()
    old_state = old.model.state_dict()
    for name, tensor in old_state.items():
        if name != "embedding.weight":
            state[name].copy_(tensor)
    table, old_table = state["embedding.weight"], old_state["embedding.weight"].to(state["embedding.weight"].device)
    kept = new = evicted = 0
    for spec in pipeline.schema.fields:
        rows_old, rows_new = row_map(old.pipeline, pipeline, spec.name)
        table[torch.from_numpy(rows_new)] = old_table[torch.from_numpy(rows_old)]
        o, n = old.pipeline.states[spec.name], pipeline.states[spec.name]
        if o.vocab is not None and n.vocab is not None:
            carried = len(rows_old) - FIRST_VALUE
            kept += carried
            evicted += len(o.vocab) - carried
            new += len(n.vocab) - carried
    model.load_state_dict(state)
    return {"known_values_kept": kept, "new_values": new, "evicted_values": evicted}
