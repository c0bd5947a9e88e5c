"""One encoder class per field kind, chosen once from the FieldSpec (:func:`encoder_for`).

    kind         mode / binning     encoder              ids                     fitted state
    categorical                     CategoricalEncoder   vocabulary position     vocab, counts
    categorical  hash_buckets > 0   HashedEncoder        hash bucket             (none)
    multi_hot                       MultiHotEncoder      a bag of either above   vocab, counts
    numeric      scaled             ScaledEncoder        value row / missing     mean, std
    numeric      bucketized, log    LogBinEncoder        log bin's position      vocab of bin keys
    numeric      bucketized, quant. QuantileEncoder      quantile bin            edges

Each encoder knows its kind's three steps: counting a chunk in the single fitting pass
(``count``; with a spill, it also keeps what encoding the chunk needs), turning the counts
into fitted state (``finish``, or ``grow`` for a warm start from a fitted field), and
encoding (``encode`` a chunk, ``encode_spilled`` a spilled one). A new field kind is one class
here and a line in :func:`encoder_for`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from deepfm.data.columns import to_float, to_strings
from deepfm.data.schema import FieldSpec
from deepfm.data.source import Chunk
from deepfm.errors import DataError
from deepfm.features.counting import BinCounts, Dictionary, Reservoir, Spill
from deepfm.features.hashing import hashed_ids
from deepfm.features.state import FIRST_VALUE, MISSING, OOV, FieldState, lookup
from deepfm.features.vocab import grow_vocabulary

Ids = np.ndarray  # (N,) int64 ids, already offset into the shared table
Bags = tuple[np.ndarray, np.ndarray]  # CSR: offsets (N+1,), ids (nnz,)
RowError = Callable[[int, str], DataError]  # (row of the chunk, message) -> the error to raise


@dataclass
class FieldFit:
    """What the fitting pass gathers for one field (the encoder says which parts it uses)."""

    counter: Dictionary | BinCounts | None = None  # distinct values and their counts
    moments: list[np.ndarray] = field(default_factory=list)  # per chunk (count, sum, sum of squares)
    sample: Reservoir = field(default_factory=Reservoir.empty)  # values, for quantile edges
    # One generator per field: fields are counted in parallel, in no fixed order.
    rng: np.random.Generator = field(default_factory=lambda: np.random.default_rng(0))


@dataclass
class Spilled:
    """Chunk ``i`` of a fit's spill, to encode: its ``rows`` and ``error`` for a bad one."""

    spill: Spill
    i: int
    rows: int
    error: Callable[[str, int, str], DataError]  # (field, row, message)

    def get(self, name: str) -> np.ndarray:
        return self.spill.get(name, self.i)


class FieldEncoder:
    """The common part: a field whose values are looked up as keys (see the subclasses)."""

    multi_hot = False  # one id per row (False) or a bag of them (True)

    def __init__(self, spec: FieldSpec) -> None:
        self.spec = spec
        self.name = spec.name

    # ------------------------------------------------------------ fitting
    def new_fit(self, rng: np.random.Generator, keep_maps: bool) -> FieldFit:
        """Empty fit state; ``keep_maps``: a spill will encode the chunks after fitting."""
        return FieldFit(rng=rng)

    def count(self, fit: FieldFit, chunk: Chunk, spill: Spill | None) -> None:
        """Count ``chunk``'s values (and spill what encoding it will need)."""
        raise NotImplementedError

    def uncount(self, fit: FieldFit, spill: Spill, cut: list[tuple[int, int]], n_fit: int) -> None:
        """Take back what rows from ``n_fit`` on counted: ``cut`` holds (chunk, rows kept)."""

    def finish(self, st: FieldState, fit: FieldFit) -> np.ndarray | None:
        """Fitted state into ``st`` (its size too). Returns the map from the counter's
        positions to local ids, for fields encoded through one."""
        raise NotImplementedError

    def grow(self, st: FieldState, fit: FieldFit, old: FieldState) -> np.ndarray | None:
        """Warm start: ``old``'s fitted state, grown by what ``fit`` counted (as ``finish``)."""
        return self.finish(st, fit)

    def load_vocab(self, keys: pa.Array) -> pa.Array:
        """A saved vocabulary (stored as text) in the type ``lookup`` compares with."""
        return keys

    def example(self, st: FieldState) -> Any:
        """A typical raw value of the field (the most frequent, or one in the common range)."""
        return _first_values(st, 1)[0] if st.vocab is not None and len(st.vocab) else "a"

    # ------------------------------------------------------------ encoding
    def keys(self, chunk: Chunk, st: FieldState) -> pa.Array | pa.ChunkedArray:
        """The chunk's values as the keys of ``st``'s vocabulary (null: missing)."""
        return to_strings(chunk, self.name)

    def encode(self, chunk: Chunk, st: FieldState, error: RowError) -> tuple[Ids, np.ndarray | None]:
        """(ids (N,), the values that scale their rows (N,) float32 or None)."""
        return st.offset + lookup(self.keys(chunk, st), st), None

    def encode_spilled(
        self, fit: FieldFit, chunk: Spilled, st: FieldState, remap: np.ndarray | None, out: np.ndarray
    ) -> np.ndarray | None:
        """Spilled chunk's ids into ``out`` (N,); returns the scaling values, if any."""
        assert fit.counter is not None and remap is not None
        fit.counter.encode(chunk.i, chunk.get(self.name), remap, st.offset, out=out)
        return None

    def encode_bags(self, chunk: Chunk, st: FieldState) -> Bags:
        raise NotImplementedError

    def encode_spilled_bags(self, fit: FieldFit, chunk: Spilled, st: FieldState, remap: np.ndarray | None) -> Bags:
        raise NotImplementedError


class CategoricalEncoder(FieldEncoder):
    """Values counted into a vocabulary: the ``min_count`` most frequent first, the rest OOV."""

    def new_fit(self, rng: np.random.Generator, keep_maps: bool) -> FieldFit:
        return FieldFit(counter=Dictionary(keep_maps), rng=rng)

    def count_keys(self, chunk: Chunk) -> pa.Array | pa.ChunkedArray | np.ndarray:
        return to_strings(chunk, self.name)

    def count(self, fit: FieldFit, chunk: Chunk, spill: Spill | None) -> None:
        assert fit.counter is not None
        idx = fit.counter.add(self.count_keys(chunk))
        if spill is not None:
            spill.put(self.name, idx)

    def uncount(self, fit: FieldFit, spill: Spill, cut: list[tuple[int, int]], n_fit: int) -> None:
        assert fit.counter is not None
        fit.counter.uncount({i: spill.get(self.name, i)[keep:] for i, keep in cut})

    def finish(self, st: FieldState, fit: FieldFit) -> np.ndarray | None:
        assert fit.counter is not None
        keys, cnt = fit.counter.finish()
        kept = np.flatnonzero(cnt >= _min_count(self.spec))
        # Most frequent first; ties broken by the key so the order does not depend on how the
        # file was cut into chunks. max_vocab keeps the most frequent.
        order = kept[np.lexsort((_sort_keys(keys.take(pa.array(kept))), -cnt[kept]))]
        order = order[: self.spec.max_vocab or None]
        st.vocab = self.load_vocab(keys.take(pa.array(order, pa.int64())))
        st.counts = cnt[order]
        st.size = FIRST_VALUE + len(st.vocab)
        remap = np.full(len(keys), OOV, dtype=np.int64)
        remap[order] = FIRST_VALUE + np.arange(len(order), dtype=np.int64)
        return remap

    def grow(self, st: FieldState, fit: FieldFit, old: FieldState) -> np.ndarray | None:
        """Known values keep their local ids (:func:`deepfm.features.vocab.grow_vocabulary`)."""
        assert fit.counter is not None and old.vocab is not None and old.counts is not None
        keys, cnt = fit.counter.finish()
        st.vocab, st.counts, pos = grow_vocabulary(
            old.vocab, old.counts, keys, cnt, _min_count(self.spec), self.spec.max_vocab
        )
        st.size = FIRST_VALUE + len(st.vocab)
        return np.where(pos >= 0, FIRST_VALUE + pos, OOV)


class LogBinEncoder(CategoricalEncoder):
    """Numeric values binned by :func:`log_bin_keys`; the bins seen are a vocabulary."""

    def new_fit(self, rng: np.random.Generator, keep_maps: bool) -> FieldFit:
        return FieldFit(counter=BinCounts(), rng=rng)

    def count_keys(self, chunk: Chunk) -> np.ndarray:
        return log_bin_keys(to_float(chunk, self.name))

    def load_vocab(self, keys: pa.Array) -> pa.Array:
        return pc.cast(keys, pa.int64())

    def keys(self, chunk: Chunk, st: FieldState) -> pa.Array:
        return key_array(log_bin_keys(to_float(chunk, self.name)))

    def example(self, st: FieldState) -> Any:
        """A number in the most frequent bin: small keys are the value itself, larger ones
        sign * (100 + floor(log(|x|)^2)) (see :func:`log_bin_keys`)."""
        if st.vocab is None or not len(st.vocab):
            return 0
        key = int(_first_values(st, 1)[0])
        if abs(key) < 100:
            return key
        return int(np.sign(key)) * round(float(np.exp(np.sqrt(abs(key) - 100 + 0.5))), 1)


class HashedEncoder(FieldEncoder):
    """Values hashed into ``hash_buckets`` rows: no vocabulary, nothing to count."""

    def count(self, fit: FieldFit, chunk: Chunk, spill: Spill | None) -> None:
        if spill is not None:  # the local ids themselves
            spill.put(self.name, hashed_ids(to_strings(chunk, self.name), self.spec.hash_buckets, FIRST_VALUE, MISSING))

    def finish(self, st: FieldState, fit: FieldFit) -> np.ndarray | None:
        st.size = FIRST_VALUE + self.spec.hash_buckets
        return None

    def encode_spilled(
        self, fit: FieldFit, chunk: Spilled, st: FieldState, remap: np.ndarray | None, out: np.ndarray
    ) -> np.ndarray | None:
        out[:] = st.offset + chunk.get(self.name)
        return None


class MultiHotEncoder(FieldEncoder):
    """Lists like ``Action|Comedy``: each token a vocabulary value (or a hash bucket with
    ``hash_buckets``); a row's ids form a bag the model pools. An empty list is MISSING."""

    multi_hot = True

    def __init__(self, spec: FieldSpec) -> None:
        super().__init__(spec)
        self.vocabulary = CategoricalEncoder(spec) if not spec.is_hashed else None

    def new_fit(self, rng: np.random.Generator, keep_maps: bool) -> FieldFit:
        return FieldFit(counter=Dictionary(keep_maps) if self.vocabulary else None, rng=rng)

    def count(self, fit: FieldFit, chunk: Chunk, spill: Spill | None) -> None:
        if fit.counter is None and spill is None:
            return  # hashed: nothing to count, nothing to keep
        tokens = tokenize(to_strings(chunk, self.name), self.spec.separator)
        if fit.counter is not None:
            idx = fit.counter.add(tokens.values)
        else:
            idx = hashed_ids(tokens.values, self.spec.hash_buckets, FIRST_VALUE, MISSING)
        if spill is not None:
            spill.put(f"{self.name}.idx", idx)
            spill.put(f"{self.name}.len", np.bincount(tokens.parents, minlength=chunk.table.num_rows).astype(np.int32))

    def uncount(self, fit: FieldFit, spill: Spill, cut: list[tuple[int, int]], n_fit: int) -> None:
        if fit.counter is None:
            return
        name = self.name
        firsts = [int(spill.get(f"{name}.len", i)[:keep].sum()) for i, keep in cut]  # first token of row `keep`
        fit.counter.uncount({i: spill.get(f"{name}.idx", i)[first:] for (i, _), first in zip(cut, firsts)})

    def finish(self, st: FieldState, fit: FieldFit) -> np.ndarray | None:
        if self.vocabulary is None:
            st.size = FIRST_VALUE + self.spec.hash_buckets
            return None
        return self.vocabulary.finish(st, fit)

    def grow(self, st: FieldState, fit: FieldFit, old: FieldState) -> np.ndarray | None:
        return self.finish(st, fit) if self.vocabulary is None else self.vocabulary.grow(st, fit, old)

    def example(self, st: FieldState) -> Any:
        return (_first_values(st, 2) if st.vocab is not None else []) or ["a"]

    def encode_bags(self, chunk: Chunk, st: FieldState) -> Bags:
        tokens = tokenize(to_strings(chunk, self.name), self.spec.separator)
        local = lookup(tokens.values, st) if len(tokens.values) else np.zeros(0, dtype=np.int64)
        return bags(local, tokens.parents, tokens.rows, st.offset)

    def encode_spilled_bags(self, fit: FieldFit, chunk: Spilled, st: FieldState, remap: np.ndarray | None) -> Bags:
        local = chunk.get(f"{self.name}.idx")
        if isinstance(fit.counter, Dictionary):
            assert remap is not None
            local = fit.counter.table(chunk.i, remap, 0)[local]
        parents = np.repeat(np.arange(chunk.rows, dtype=np.int64), chunk.get(f"{self.name}.len"))
        return bags(local, parents, chunk.rows, st.offset)


class ScaledEncoder(FieldEncoder):
    """A numeric value, transformed and standardized, multiplies its field's one vector (row
    0); a missing value uses row 1 (value 1)."""

    def count(self, fit: FieldFit, chunk: Chunk, spill: Spill | None) -> None:
        x = to_float(chunk, self.name)
        fit.moments.append(moments(x, self.spec.transform))
        if spill is not None:
            spill.put(self.name, x)

    def uncount(self, fit: FieldFit, spill: Spill, cut: list[tuple[int, int]], n_fit: int) -> None:
        for i, keep in cut:
            fit.moments[i] = moments(spill.get(self.name, i)[:keep], self.spec.transform)

    def finish(self, st: FieldState, fit: FieldFit) -> np.ndarray | None:
        n, s, ss = np.sum(fit.moments, axis=0) if fit.moments else (0, 0.0, 0.0)
        if "standardize" in self.spec.transform and n > 0:
            with np.errstate(over="ignore", invalid="ignore"):
                mean, var = s / n, ss / n - (s / n) ** 2
            if not (math.isfinite(mean) and math.isfinite(var)):
                # Squares of values near 1e154 and above overflow: say so rather than let NaN
                # reach the model.
                raise DataError(
                    "values are too large to standardize (their squares overflow); "
                    "use transform log1p_standardize or bucketize the field",
                    field=self.name,
                )
            st.mean, st.std = float(mean), float(math.sqrt(max(var, 0.0))) or 1.0
        st.size = 2
        return None

    def grow(self, st: FieldState, fit: FieldFit, old: FieldState) -> np.ndarray | None:
        st.mean, st.std, st.size = old.mean, old.std, 2  # the old standardization, kept
        return None

    def encode(self, chunk: Chunk, st: FieldState, error: RowError) -> tuple[Ids, np.ndarray | None]:
        return self.scale(to_float(chunk, self.name), st, error)

    def encode_spilled(
        self, fit: FieldFit, chunk: Spilled, st: FieldState, remap: np.ndarray | None, out: np.ndarray
    ) -> np.ndarray | None:
        out[:], values = self.scale(chunk.get(self.name), st, lambda row, msg: chunk.error(self.name, row, msg))
        return values

    def example(self, st: FieldState) -> Any:
        """The training mean, back through the transform."""
        m = st.mean if "standardize" in self.spec.transform else 0.0
        return round(float(np.sign(m) * np.expm1(abs(m))) if "log1p" in self.spec.transform else m, 3)

    def scale(self, x: np.ndarray, st: FieldState, error: RowError) -> tuple[Ids, np.ndarray]:
        """Ids (row 0: the value vector, row 1: missing) and float32 values (1 if missing). A
        value beyond float32's range after scaling is an error: it would reach the model as inf."""
        t = transform(x, self.spec.transform)
        missing = np.isnan(t)
        with np.errstate(over="ignore"):
            values = np.where(missing, 1.0, (t - st.mean) / st.std).astype(np.float32)
        bad = np.flatnonzero(np.isinf(values))
        if bad.size:
            i = int(bad[0])
            raise error(
                i, f"{float(x[i])!r} is too large for this field: out of float32's range (3.4e38) after scaling"
            )
        return st.offset + missing.astype(np.int64), values


class QuantileEncoder(FieldEncoder):
    """Numeric values in ``bins`` quantile bins, their edges placed on a uniform sample."""

    def count(self, fit: FieldFit, chunk: Chunk, spill: Spill | None) -> None:
        x = to_float(chunk, self.name)
        present = np.flatnonzero(~np.isnan(x))
        fit.sample.add(x[present], chunk.row0 + present, fit.rng)
        if spill is not None:
            spill.put(self.name, x)

    def uncount(self, fit: FieldFit, spill: Spill, cut: list[tuple[int, int]], n_fit: int) -> None:
        fit.sample.before(n_fit)

    def finish(self, st: FieldState, fit: FieldFit) -> np.ndarray | None:
        st.edges = quantile_edges(fit.sample.values, self.spec.bins)
        st.vocab = pa.array(np.arange(len(st.edges) + 1, dtype=np.int64))  # every bin, in order
        st.counts = np.zeros(len(st.edges) + 1, dtype=np.int64)
        st.size = FIRST_VALUE + len(st.vocab)
        return None

    def grow(self, st: FieldState, fit: FieldFit, old: FieldState) -> np.ndarray | None:
        st.edges, st.vocab, st.counts, st.size = list(old.edges), old.vocab, old.counts, old.size  # the same bins
        return None

    def load_vocab(self, keys: pa.Array) -> pa.Array:
        return pc.cast(keys, pa.int64())

    def keys(self, chunk: Chunk, st: FieldState) -> pa.Array:
        return key_array(quantile_keys(to_float(chunk, self.name), st.edges))

    def example(self, st: FieldState) -> Any:
        return round(st.edges[len(st.edges) // 2], 3) if st.edges else 0.0

    def encode_spilled(
        self, fit: FieldFit, chunk: Spilled, st: FieldState, remap: np.ndarray | None, out: np.ndarray
    ) -> np.ndarray | None:
        keys = quantile_keys(chunk.get(self.name), st.edges)
        out[:] = st.offset + np.where(np.isnan(keys), MISSING, FIRST_VALUE + np.nan_to_num(keys)).astype(np.int64)
        return None


def _min_count(spec: FieldSpec) -> int:
    """``spec``'s min_count; the pipeline makes "auto" a number before any encoder finishes."""
    if not isinstance(spec.min_count, int):
        raise RuntimeError(f"field {spec.name!r}: min_count {spec.min_count!r} was not resolved before the fit")
    return spec.min_count


def encoder_for(spec: FieldSpec) -> FieldEncoder:
    """The encoder of ``spec``'s kind: the one place that reads kind, mode and binning."""
    if spec.kind == "multi_hot":
        return MultiHotEncoder(spec)
    if spec.kind == "categorical":
        return HashedEncoder(spec) if spec.is_hashed else CategoricalEncoder(spec)
    if spec.mode == "scaled":
        return ScaledEncoder(spec)
    return LogBinEncoder(spec) if spec.binning == "log" else QuantileEncoder(spec)


# ---------------------------------------------------------------- keys and bags
def transform(x: np.ndarray, how: str) -> np.ndarray:
    """Numeric transform before scaling. log1p is signed: sign(x)·log(1+|x|), so negatives work."""
    if "log1p" in how:
        return np.sign(x) * np.log1p(np.abs(x))
    return x


def moments(x: np.ndarray, how: str) -> np.ndarray:
    """(count, sum, sum of squares) of the transformed non-missing values of ``x``."""
    t = transform(x[~np.isnan(x)], how)
    with np.errstate(over="ignore"):  # an overflow is reported once, by finish, naming the field
        return np.array([t.size, t.sum(), np.square(t).sum()])


def log_bin_keys(x: np.ndarray) -> np.ndarray:
    """Log bins as the Criteo winners used: small values keep their integer part, larger ones
    fall into floor(log(|x|)^2), with offsets so negative, small and large keys never collide.
    NaN stays NaN (missing)."""
    with np.errstate(invalid="ignore", divide="ignore"):
        ax = np.abs(x)
        small = ax <= 2  # False for NaN
        keys = np.maximum(ax, 1.0)  # in place from here: this runs on every numeric value
        np.log(keys, out=keys)
        np.square(keys, out=keys)
        np.floor(keys, out=keys)
        keys += 100
        np.copysign(keys, x, out=keys)
        keys[small] = np.floor(x[small])
    return keys


def key_array(keys: np.ndarray) -> pa.Array:
    """Bin keys (float, NaN for missing) as an int64 Arrow array with nulls."""
    null = np.isnan(keys)
    return pa.array(np.where(null, 0, keys).astype(np.int64), mask=null)


def quantile_keys(x: np.ndarray, edges: list[float]) -> np.ndarray:
    keys = np.searchsorted(np.asarray(edges), x, side="right").astype(np.float64)
    keys[np.isnan(x)] = np.nan
    return keys


def quantile_edges(values: np.ndarray, bins: int) -> list[float]:
    if values.size == 0:
        return []
    qs = np.quantile(values, np.linspace(0, 1, bins + 1)[1:-1])
    return [float(e) for e in np.unique(qs)]


def _first_values(st: FieldState, n: int) -> list[Any]:
    """The ``n`` most frequent values of ``st``'s vocabulary, as Python values."""
    assert st.vocab is not None
    return list(st.vocab.slice(0, n).to_pylist())


def _sort_keys(keys: pa.Array) -> np.ndarray:
    """Keys as something np.lexsort can order (ties in counts break by key)."""
    if pa.types.is_integer(keys.type):
        return keys.to_numpy()
    return pc.rank(keys, sort_keys="ascending", tiebreaker="first").to_numpy()


@dataclass
class TokenLists:
    values: pa.Array
    parents: np.ndarray  # row index of each token (non-decreasing)
    rows: int


def tokenize(strings: pa.Array | pa.ChunkedArray, separator: str) -> TokenLists:
    """Split lists like "Action|Comedy"; empty tokens ("a||b", trailing "|") are dropped."""
    combined = strings.combine_chunks() if isinstance(strings, pa.ChunkedArray) else strings
    parts = pc.split_pattern(combined, separator)
    flat = pc.list_flatten(parts)
    parents = pc.list_parent_indices(parts)
    trimmed = pc.utf8_trim_whitespace(flat)
    keep = pc.not_equal(trimmed, "")
    return TokenLists(values=trimmed.filter(keep), parents=parents.filter(keep).to_numpy(), rows=len(combined))


def bags(local: np.ndarray, parents: np.ndarray, rows: int, offset: int) -> Bags:
    """CSR bags from token ids and their (non-decreasing) rows: (offsets (rows+1,), ids)."""
    counts = np.bincount(parents, minlength=rows)
    empty = np.flatnonzero(counts == 0)
    # An empty or missing list gets the field's MISSING row, so it is learned, not a zero vector.
    order = np.argsort(np.concatenate([parents, empty]), kind="stable")
    ids = np.concatenate([local, np.full(empty.size, MISSING, dtype=np.int64)])[order]
    offsets = np.zeros(rows + 1, dtype=np.int64)
    np.cumsum(np.maximum(counts, 1), out=offsets[1:])
    return offsets, offset + ids
