"""What :func:`deepfm.analysis.explain.explain` finds, as plain data: the logit's parts, the
pair strengths, the drill-down of one pair, and their JSON (explain.json)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass
class PartStats:
    """One additive part of the logit over the rows: mean, mean of |part|, standard deviation."""

    mean: float
    mean_abs: float
    std: float


@dataclass
class Combination:
    """A pair's value combination: decoded values, rows, mean contribution to the logit and
    mean change of the probability it causes."""

    values: tuple[str, str]
    count: int
    mean_contribution: float
    mean_effect: float


@dataclass
class Drilldown:
    """Value combinations of one field pair. ``grid``: mean contribution (R, C) over the most
    frequent values of each field (NaN where no row has both), with counts (R, C)."""

    fields: tuple[str, str]
    combinations: int
    min_count: int
    up: list[Combination]
    down: list[Combination]
    grid_rows: list[str]
    grid_columns: list[str]
    grid_contribution: np.ndarray
    grid_count: np.ndarray


@dataclass
class Explanation:
    """What :func:`explain` measured over ``rows`` rows of ``source``."""

    source: str
    kind: str
    fields: list[str]
    rows: int
    parts: dict[str, PartStats]  # bias, first_order, fm_pairs, dnn: those the kind has
    first_order: np.ndarray | None  # (F,) mean |w_i|; None for kinds without a first-order term
    pair_mean_abs: np.ndarray | None  # (F, F), zero diagonal; None for kinds without FM pairs
    pair_mean: np.ndarray | None  # (F, F)
    drilldown: Drilldown | None
    probabilities: np.ndarray = field(repr=False)  # (N,) the model's probability of each row
    labels: np.ndarray | None = field(repr=False)  # (N,) when the rows had labels

    def top_pairs(self, k: int = 10) -> list[dict[str, Any]]:
        """The k pairs with the largest mean |<v_i, v_j>|, strongest first."""
        if self.pair_mean_abs is None:
            return []
        i, j = np.triu_indices(len(self.fields), k=1)
        strength = self.pair_mean_abs[i, j]
        signed = self.pair_mean[i, j] if self.pair_mean is not None else np.full(len(i), np.nan)
        order = np.argsort(-strength, kind="stable")[:k]
        return [
            {"fields": [self.fields[i[o]], self.fields[j[o]]], "mean_abs": float(strength[o]), "mean": float(signed[o])}
            for o in order
        ]

    def to_json(self, top_k: int = 10) -> dict[str, Any]:
        """The numbers as plain JSON types (NaN as null)."""
        out: dict[str, Any] = {
            "source": self.source,
            "model": self.kind,
            "rows": self.rows,
            "fields": self.fields,
            "decomposition": {k: vars(v) for k, v in self.parts.items()},
            "first_order_mean_abs": listed(self.first_order),
            "pairs": None,
            "top_pairs": self.top_pairs(top_k),
            "drilldown": None,
        }
        if self.pair_mean_abs is not None:
            out["pairs"] = {"mean_abs": listed(self.pair_mean_abs), "mean": listed(self.pair_mean)}
        if self.drilldown is not None:
            d = self.drilldown
            out["drilldown"] = {
                "fields": list(d.fields),
                "combinations": d.combinations,
                "min_count": d.min_count,
                "up": [vars(c) | {"values": list(c.values)} for c in d.up],
                "down": [vars(c) | {"values": list(c.values)} for c in d.down],
                "grid": {
                    "rows": d.grid_rows,
                    "columns": d.grid_columns,
                    "mean_contribution": listed(d.grid_contribution),
                    "count": d.grid_count.tolist(),
                },
            }
        return out


# ---------------------------------------------------------------- entry point


def listed(a: np.ndarray | None) -> Any:
    """An array as nested lists with NaN as None (JSON null)."""
    if a is None:
        return None
    out = a.astype(object)
    out[~np.isfinite(a)] = None
    return out.tolist()
