"""What a trained model learned: the logit split into its parts, and field-pair interactions.

FM's pairwise term makes the order-2 part readable. Field i's vector v_i already carries its
input (a scaled numeric's value times the field vector, a multi-hot list pooled), so
<v_i, v_j> is exactly what the pair (i, j) adds to the logit of a row. Over the rows given,
:func:`explain` streams the model's field vectors and accumulates

- ``pair_mean_abs`` (F, F): the mean of |<v_i, v_j>|, how strongly each pair moves the
  logit either way, and ``pair_mean`` (F, F), its signed mean;
- the logit split into bias, first order (sum_i w_i), FM pairs and DNN, which add up to the
  model's logit row by row;
- a drill-down for one pair (the strongest unless chosen): every value combination seen,
  decoded to the raw values through the fitted vocabulary, with its count, its mean
  contribution to the logit and its mean effect on the probability users get,
  p(logit) - p(logit - <v_i, v_j>), with p the sigmoid followed by the bundle's calibration.

Memory is bounded by F x F per pass plus the drill-down's distinct combinations and one
probability per row: no (N, F, F) tensor is ever held.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from deepfm.analysis.explanation import Combination, Drilldown, Explanation, PartStats
from deepfm.bundle import Bundle
from deepfm.data.encoded import Batch, EncodedDataset
from deepfm.data.source import ReadOptions
from deepfm.errors import ConfigError
from deepfm.features.state import FIRST_VALUE, MISSING, OOV
from deepfm.inference.predictor import open_input
from deepfm.model.calibration import postprocess
from deepfm.util.maths import sigmoid

PAIR_BATCH = 4096  # rows per (B, F, F) product: 4096 x 39 x 39 floats is 25 MB
SCALED_BIN = 0.5  # drill-down bins of a scaled numeric, in standard deviations
SCALED_BINS = 12  # from -3 to +3 standard deviations, the ends open
_COMPACT_ROWS = 1 << 20  # drill-down combinations pending before they are merged


def explain(
    bundle: Bundle,
    data: str | Path | EncodedDataset,
    rows: int | None = None,
    pair: tuple[str, str] | None = None,
    options: ReadOptions | None = None,
    top_k: int = 10,
    min_count: int = 5,
    grid_size: int = 12,
) -> Explanation:
    """Explain ``bundle``'s model over the first ``rows`` rows (all by default) of a file or an
    encoded part. ``pair`` picks the drilled-down pair (default: the strongest); combinations
    seen fewer than ``min_count`` times are left out of its up/down lists."""
    if rows is not None and rows < 1:
        raise ConfigError(f"--rows must be at least 1, got {rows}")
    if min_count < 1:
        raise ConfigError(f"--min-count must be at least 1, got {min_count}")
    names = [
        f.name for f in (*bundle.pipeline.single_fields, *bundle.pipeline.multi_hot_fields)
    ]  # the model's field order
    model = bundle.model.eval()
    if pair is not None:
        chosen = _pair_index(pair, names)
        if not model.config.uses_pairwise:
            raise ConfigError(
                f"a {model.config.kind!r} model has no pairwise term to drill into; --pair needs kind fm or deepfm"
            )
    batches = _batches(bundle, data, rows, options)
    scan = _Scan(model, len(names), _Combinations(bundle, chosen) if pair is not None else None)
    with torch.no_grad():
        for batch in batches():
            scan.add(batch)
    if scan.rows == 0:
        raise ConfigError(f"{_source(data)}: no rows to explain")
    pair_abs = pair_mean = None
    drill = None
    if model.config.uses_pairwise:
        pair_abs, pair_mean = scan.pair_abs / scan.rows, scan.pair_sum / scan.rows
        combos = scan.combos if scan.combos is not None else _strongest_pair(bundle, batches, scan, pair_abs)
        drill = combos.drilldown(min_count, top_k, grid_size)
    return Explanation(
        source=_source(data),
        kind=model.config.kind,
        fields=names,
        rows=scan.rows,
        parts={k: _stats(sums, scan.rows) for k, sums in scan.part_sums.items()},
        first_order=scan.first_order / scan.rows if model.config.uses_first_order else None,
        pair_mean_abs=pair_abs,
        pair_mean=pair_mean,
        drilldown=drill,
        # What users get (downsampling correction, fitted calibration): the report's reliability
        # diagram and ROC are drawn from these.
        probabilities=postprocess(sigmoid(np.concatenate(scan.logits)), bundle.calibration),
        labels=np.concatenate(scan.labels) if scan.labels else None,
    )


def _strongest_pair(
    bundle: Bundle, batches: Callable[[], Iterator[Batch]], scan: _Scan, pair_abs: np.ndarray
) -> _Combinations:
    """The combinations of the strongest pair, known only after the first pass: a second pass
    over the rows, with the logits the first one kept."""
    model = bundle.model
    i, j = np.triu_indices(pair_abs.shape[0], k=1)
    best = int(np.argmax(pair_abs[i, j]))
    combos = _Combinations(bundle, (int(i[best]), int(j[best])))
    row0, logits = 0, np.concatenate(scan.logits)
    with torch.no_grad():
        for batch in batches():
            combos.add(batch, _vectors(model, batch), logits[row0 : row0 + len(batch)])
            row0 += len(batch)
    return combos


def parse_pair(text: str | None) -> tuple[str, str] | None:
    """'C1,C2' -> ("C1", "C2")."""
    if text is None:
        return None
    names = [t.strip() for t in text.split(",")]
    if len(names) != 2 or not all(names):
        raise ConfigError(f"--pair wants two field names like C1,C2, got {text!r}")
    return names[0], names[1]


# ---------------------------------------------------------------- the streamed pass
class _Scan:
    """Sums over the rows: the parts, |part| and part^2, first order per field, the pair matrices."""

    def __init__(self, model: Any, n_fields: int, combos: _Combinations | None) -> None:
        self.model, self.combos = model, combos
        self.rows = 0
        # name -> [shift, sum of (part - shift), sum of |part|, sum of (part - shift)^2]; the
        # shift (the first batch's mean) keeps the variance from cancelling catastrophically.
        self.part_sums: dict[str, list[float]] = {}
        self.first_order = np.zeros(n_fields)
        self.pair_abs = np.zeros((n_fields, n_fields))
        self.pair_sum = np.zeros((n_fields, n_fields))
        self.logits: list[np.ndarray] = []
        self.labels: list[np.ndarray] = []

    def add(self, batch: Batch) -> None:
        model = self.model
        d = model.config.embedding_dim
        e = _vectors(model, batch)  # (B, F, D+1)
        parts = {k: p.double().cpu() for k, p in model.parts(e).items()}
        logit = torch.stack(list(parts.values())).sum(dim=0)  # what head(e) adds up
        for name, p in parts.items():
            s = self.part_sums.setdefault(name, [float(p.mean()) if len(p) else 0.0, 0.0, 0.0, 0.0])
            s[1] += float((p - s[0]).sum())
            s[2] += float(p.abs().sum())
            s[3] += float((p - s[0]).square().sum())
        if model.config.uses_first_order:
            self.first_order += e[..., d].abs().double().sum(dim=0).cpu().numpy()
        if model.config.uses_pairwise:
            v = e[..., :d]
            for start in range(0, len(batch), PAIR_BATCH):
                inner = torch.einsum(
                    "bfd,bgd->bfg", v[start : start + PAIR_BATCH], v[start : start + PAIR_BATCH]
                )  # (B, F, F)
                self.pair_abs += inner.abs().double().sum(dim=0).cpu().numpy()
                self.pair_sum += inner.double().sum(dim=0).cpu().numpy()
            # <v_i, v_i> is no part of the model: only i != j pairs enter the FM term.
            np.fill_diagonal(self.pair_abs, 0.0)
            np.fill_diagonal(self.pair_sum, 0.0)
        self.logits.append(logit.numpy())
        if self.combos is not None:
            self.combos.add(batch, e, self.logits[-1])
        if batch.labels is not None:
            self.labels.append(batch.labels.double().numpy())
        self.rows += len(batch)


class _Combinations:
    """The value combinations of one field pair: per distinct (key_i, key_j), the rows, the
    summed contribution <v_i, v_j> and the summed effect on the probability; merged chunk
    by chunk with NumPy (no per-row Python)."""

    def __init__(self, bundle: Bundle, pair: tuple[int, int]) -> None:
        self.keyers = (_FieldKeys(bundle, pair[0]), _FieldKeys(bundle, pair[1]))
        self.dim = bundle.config.model.embedding_dim
        self.calibration = bundle.calibration
        self.pending: list[tuple[np.ndarray, np.ndarray]] = []  # (keys (K, 2), [count, contribution, effect] (K, 3))
        self.pending_rows = 0

    def add(self, batch: Batch, e: torch.Tensor, logit: np.ndarray) -> None:
        """One batch (on the CPU), its field vectors (B, F, D+1) on the model's device, and
        its logits (B,)."""
        i, j, d = self.keyers[0].index, self.keyers[1].index, self.dim
        c = (e[:, i, :d] * e[:, j, :d]).sum(dim=1).double().cpu().numpy()  # (B,) <v_i, v_j>
        effect = postprocess(sigmoid(logit), self.calibration) - postprocess(sigmoid(logit - c), self.calibration)
        keys = np.stack([self.keyers[0].keys(batch), self.keyers[1].keys(batch)], axis=1)  # (B, 2)
        self.pending.append(_reduce(keys, np.stack([np.ones(len(keys)), c, effect], axis=1)))
        self.pending_rows += len(self.pending[-1][0])
        if self.pending_rows > _COMPACT_ROWS:
            self.pending = [self._merged()]
            self.pending_rows = len(self.pending[0][0])

    def _merged(self) -> tuple[np.ndarray, np.ndarray]:
        return _reduce(np.concatenate([k for k, _ in self.pending]), np.concatenate([s for _, s in self.pending]))

    def drilldown(self, min_count: int, top_k: int, grid_size: int) -> Drilldown:
        """The top_k combinations up and down (of those seen ``min_count`` times or more) and
        the grid of each field's ``grid_size`` most frequent values."""
        keyers = self.keyers
        keys, stats = self._merged()
        count, c_sum = stats[:, 0], stats[:, 1]
        mean_c, mean_e = c_sum / count, stats[:, 2] / count

        def listed(order: np.ndarray) -> list[Combination]:
            return [
                Combination(
                    (keyers[0].label(keys[o, 0]), keyers[1].label(keys[o, 1])),
                    int(count[o]),
                    float(mean_c[o]),
                    float(mean_e[o]),
                )
                for o in order
            ]

        often = np.flatnonzero(count >= min_count)
        by_effect = often[np.argsort(-mean_e[often], kind="stable")]
        up = by_effect[mean_e[by_effect] > 0][:top_k]
        down = by_effect[::-1][mean_e[by_effect[::-1]] < 0][:top_k]
        grids = []
        for side, keyer in enumerate(keyers):
            values, inverse = np.unique(keys[:, side], return_inverse=True)
            totals = np.bincount(inverse, weights=count)
            frequent = values[np.argsort(-totals, kind="stable")[:grid_size]]
            if keyer.spec.kind == "numeric":  # bins read best in value order
                frequent = np.array(sorted(frequent, key=keyer.order), dtype=np.int64)
            grids.append(frequent)
        r, col = _position(grids[0], keys[:, 0]), _position(grids[1], keys[:, 1])
        inside = (r >= 0) & (col >= 0)
        grid_sum = np.zeros((len(grids[0]), len(grids[1])))
        grid_count = np.zeros((len(grids[0]), len(grids[1])), dtype=np.int64)
        np.add.at(grid_sum, (r[inside], col[inside]), c_sum[inside])
        np.add.at(grid_count, (r[inside], col[inside]), count[inside].astype(np.int64))
        with np.errstate(invalid="ignore", divide="ignore"):
            grid_mean = np.where(grid_count > 0, grid_sum / grid_count, np.nan)
        return Drilldown(
            fields=(keyers[0].spec.name, keyers[1].spec.name),
            combinations=len(count),
            min_count=min_count,
            up=listed(up),
            down=listed(down),
            grid_rows=[keyers[0].label(k) for k in grids[0]],
            grid_columns=[keyers[1].label(k) for k in grids[1]],
            grid_contribution=grid_mean,
            grid_count=grid_count,
        )


def _reduce(keys: np.ndarray, stats: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sum ``stats`` (K, 3) over equal rows of ``keys`` (K, 2)."""
    unique, inverse = np.unique(keys, axis=0, return_inverse=True)
    summed = np.zeros((len(unique), stats.shape[1]))
    np.add.at(summed, inverse.ravel(), stats)
    return unique, summed


class _FieldKeys:
    """One int64 key per row for a field's value, and the key's raw value as text.

    Categorical and bucketized fields: the local id (0 rare or unseen, 1 missing, then the
    vocabulary). Scaled numerics: a bin of the standardized value, -1 when missing.
    Multi-hot lists: an order-free hash of the list's ids, with the first list seen kept to
    name it (pooling ignores order too).
    """

    def __init__(self, bundle: Bundle, index: int) -> None:
        pipeline = bundle.pipeline
        singles, multi = pipeline.single_fields, pipeline.multi_hot_fields
        self.index = index
        self.spec = singles[index] if index < len(singles) else multi[index - len(singles)]
        self.state = pipeline.states[self.spec.name]
        self.column = pipeline.scaled_positions.index(index) if self.spec.is_scaled else None
        self.bag = index - len(singles) if index >= len(singles) else None
        self.lists: dict[int, np.ndarray] = {}  # multi-hot: key -> local ids of a list

    def keys(self, batch: Batch) -> np.ndarray:
        """(B,) int64"""
        if self.bag is not None:
            offsets, ids = (t.numpy() for t in batch.multi_hot[self.bag])
            local = ids - self.state.offset
            mixed = _mix(local)
            keys = np.add.reduceat(mixed, offsets).view(np.int64) if len(ids) else np.zeros(0, np.int64)
            new, first = np.unique(keys, return_index=True)
            ends = np.r_[offsets[1:], len(ids)]
            for k, row in zip(new.tolist(), first.tolist()):
                self.lists.setdefault(k, local[offsets[row] : ends[row]])
            return keys
        local = batch.ids[:, self.index].numpy() - self.state.offset
        if self.column is None:
            return local
        z = batch.values[:, self.column].numpy()
        bins = (
            np.clip(np.floor(z / SCALED_BIN), -SCALED_BINS // 2, SCALED_BINS // 2 - 1).astype(np.int64)
            + SCALED_BINS // 2
        )
        return np.where(local == MISSING, -1, bins)

    def label(self, key: int) -> str:
        """The raw value (or range of values) a key stands for."""
        key = int(key)
        spec, st = self.spec, self.state
        if self.bag is not None:
            return spec.separator.join(self._token(int(t)) for t in self.lists[key])
        if self.column is not None:
            if key < 0:
                return "(missing)"
            lo = (key - SCALED_BINS // 2) * SCALED_BIN
            a, b = (_untransform(z * st.std + st.mean, spec.transform) for z in (lo, lo + SCALED_BIN))
            if key == 0:
                return f"< {b:.3g}"
            if key == SCALED_BINS - 1:
                return f">= {a:.3g}"
            return f"[{a:.3g}, {b:.3g})"
        return self._token(key)

    def order(self, key: int) -> tuple[int, float]:
        """Sort key for the drill-down grid: a numeric field's bins in value order, the
        missing and rare rows first."""
        key = int(key)
        if self.column is not None:
            return (0, -1.0) if key < 0 else (1, float(key))
        if key in (OOV, MISSING):
            return (0, float(key))
        if self.spec.is_hashed:
            return (1, float(key))
        assert self.state.vocab is not None
        return (1, float(self.state.vocab[key - FIRST_VALUE].as_py()))

    def _token(self, local: int) -> str:
        if local == OOV:
            return "(rare or unseen)"
        if local == MISSING:
            return "(missing)"
        if self.spec.is_hashed:  # no vocabulary kept: the values that share a bucket are unknown
            return f"(hash bucket {local - FIRST_VALUE} of {self.spec.hash_buckets})"
        assert self.state.vocab is not None
        value = self.state.vocab[local - FIRST_VALUE].as_py()
        if self.spec.kind != "numeric":
            return str(value)
        if self.spec.binning == "quantile":
            edges = self.state.edges
            lo = f"{edges[value - 1]:.4g}" if value > 0 else "-inf"
            hi = f"{edges[value]:.4g}" if value < len(edges) else "inf"
            return f"[{lo}, {hi})"
        return _log_bin_label(int(value))


def _log_bin_label(key: int) -> str:
    """The values of a log bin (the inverse of deepfm.features.encoders.log_bin_keys): |x| <= 2 keeps
    floor(x); larger |x| go to sign(x) * (100 + floor(log(|x|)^2))."""
    if abs(key) < 100:
        return "2" if key == 2 else f"[{key}, {key + 1})"  # 2 is the only value with floor 2 and |x| <= 2
    big = abs(key) - 100
    lo, hi = math.exp(math.sqrt(big)), math.exp(math.sqrt(big + 1))
    closed = lo > 2  # |x| = 2 itself falls in the small bins
    lo = max(lo, 2.0)
    if key > 0:
        return f"{'[' if closed else '('}{lo:.4g}, {hi:.4g})"
    return f"(-{hi:.4g}, -{lo:.4g}{']' if closed else ')'}"


def _untransform(t: float, transform: str) -> float:
    """A scaled numeric's raw value from its transformed one (log1p is signed)."""
    return math.copysign(math.expm1(abs(t)), t) if "log1p" in transform else t


def _mix(x: np.ndarray) -> np.ndarray:
    """splitmix64 finalizer: spreads ids over 64 bits so that sums of them rarely collide."""
    z = x.astype(np.uint64) + np.uint64(0x9E3779B97F4A7C15)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


# ---------------------------------------------------------------- inputs
def _batches(
    bundle: Bundle, data: str | Path | EncodedDataset, rows: int | None, options: ReadOptions | None
) -> Callable[[], Iterator[Batch]]:
    """A function that streams the first ``rows`` rows as Batches, once per call."""
    limit = rows if rows is not None else 1 << 62
    if isinstance(data, EncodedDataset):
        stop = min(limit, len(data))

        def from_part() -> Iterator[Batch]:
            for start in range(0, stop, 4 * PAIR_BATCH):
                yield data.batch(slice(start, min(start + 4 * PAIR_BATCH, stop)))

        return from_part
    reader = open_input(bundle, data, options)
    schema = bundle.config.schema
    labelled = schema.label in reader.columns
    columns = [schema.label, *schema.names] if labelled else schema.names

    def from_file() -> Iterator[Batch]:
        seen = 0
        for chunk in reader.chunks(columns, schema.numeric_columns):
            if seen >= limit:
                return
            if chunk.table.num_rows > limit - seen:
                chunk.table = chunk.table.slice(0, limit - seen)
            seen += chunk.table.num_rows
            yield Batch.from_chunk(bundle.pipeline.encode(chunk, with_labels=labelled))

    return from_file


def _pair_index(pair: tuple[str, str], names: list[str]) -> tuple[int, int]:
    missing = [p for p in pair if p not in names]
    if missing:
        raise ConfigError(f"--pair: no field {missing[0]!r} in this model; its fields are {names}")
    if pair[0] == pair[1]:
        raise ConfigError(f"--pair wants two different fields, got {pair[0]!r} twice")
    i, j = names.index(pair[0]), names.index(pair[1])
    return (i, j)


def _position(values: np.ndarray, keys: np.ndarray) -> np.ndarray:
    """Index of each key in ``values`` (unsorted), -1 where absent."""
    order = np.argsort(values)
    at = np.clip(np.searchsorted(values[order], keys), 0, max(len(values) - 1, 0))
    found = values[order][at] == keys if len(values) else np.zeros(len(keys), bool)
    return np.where(found, order[at], -1)


def _source(data: str | Path | EncodedDataset) -> str:
    return f"the {data.folder.name} part" if isinstance(data, EncodedDataset) else str(data)


def _vectors(model: Any, batch: Batch) -> torch.Tensor:
    """The field vectors of a (CPU) batch, on the model's device. -> (B, F, D+1)"""
    b = batch.to(next(model.parameters()).device)
    return model.embedding(b.ids, b.values, b.multi_hot)


def _stats(sums: list[float], rows: int) -> PartStats:
    """PartStats from _Scan's [shift, sum of x - shift, sum of |x|, sum of (x - shift)^2]."""
    shift, centred, absolute, square = sums
    mean = centred / rows
    return PartStats(mean=shift + mean, mean_abs=absolute / rows, std=math.sqrt(max(square / rows - mean**2, 0.0)))
