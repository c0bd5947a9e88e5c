"""FeaturePipeline: fit vocabularies and numeric statistics on the training rows, then encode.

All fields share one id space (one embedding table). Field ``f`` owns rows
``offset_f .. offset_f + size_f - 1`` and within them:

- row 0: OOV (values unseen in training, or seen fewer than ``min_count`` times);
- row 1: missing (an empty field; for multi-hot also an empty list);
- rows 2..: the vocabulary, most frequent first.

A scaled numeric field owns two rows: row 0 is the vector its value multiplies, row 1 the
vector used when the value is missing (so "missing" is learned, not imputed as 0).

Encoded rows are int64 ids already offset into the shared space (the model does one
lookup), float32 values for scaled numerics, and multi-hot fields as CSR (offsets, ids).
Fitted state is plain JSON plus one Arrow file of vocabularies: nothing is pickled.
"""

from __future__ import annotations

import functools
import json
import logging
import math
import threading
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.ipc as ipc

from deepfm.data.encoded import EncodedChunk
from deepfm.errors import BundleError, DataError
from deepfm.features.hashing import hashed_ids
from deepfm.data.columns import to_float, to_label, to_strings
from deepfm.data.source import Chunk
from deepfm.data.schema import FieldSpec, Schema
from deepfm.features.vocab import grow_vocabulary

log = logging.getLogger(__name__)

OOV, MISSING, FIRST_VALUE = 0, 1, 2
_RESERVOIR = 200_000  # values kept per field to place quantile bin edges
SPILL_MEMORY = 512 << 20  # bytes of the single-parse spill kept in memory; the rest goes to disk
_DICT_LOOKUP_ROWS = 1024  # keys looked up in a dict (below) rather than by pc.index_in


@dataclass
class FieldState:
    """What was fitted for one field."""

    spec: FieldSpec
    offset: int = 0
    size: int = 2
    vocab: pa.Array | None = None  # keys, most frequent first (strings, or int64 bin keys)
    counts: np.ndarray | None = None
    mean: float = 0.0  # scaled numerics: standardization after the transform
    std: float = 1.0
    edges: list[float] = field(default_factory=list)  # quantile bins
    _index: tuple[pa.Array, dict[Any, int]] | None = field(default=None, repr=False, compare=False)

    def index(self) -> dict[Any, int]:
        """Key -> local id as a dict, built on first use and again if ``vocab`` is replaced."""
        if self._index is None or self._index[0] is not self.vocab:
            assert self.vocab is not None
            self._index = (self.vocab, {k: FIRST_VALUE + i for i, k in enumerate(self.vocab.to_pylist())})
        return self._index[1]

    def local_ids(self, keys: pa.Array | pa.ChunkedArray) -> np.ndarray:
        """Local ids of raw keys (text, or int64 bin keys): FIRST_VALUE + position in the
        vocabulary or the hash bucket, OOV for unseen values, MISSING for nulls. (N,) int64"""
        return _lookup(keys, self)

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.spec.name,
            "offset": self.offset,
            "size": self.size,
            "mean": self.mean,
            "std": self.std,
            "edges": self.edges,
            "vocab_size": 0 if self.vocab is None else len(self.vocab),
        }


class FeaturePipeline:
    """Turns raw columns into model inputs. ``fit`` once on training rows, then ``encode``."""

    def __init__(self, schema: Schema) -> None:
        self.schema = schema
        self.states = {f.name: FieldState(spec=f) for f in schema.fields}
        self.fitted = False

    # ------------------------------------------------------------ layout
    @property
    def single_fields(self) -> list[FieldSpec]:
        """Fields with one id per row (categorical, numeric), in schema order."""
        return [f for f in self.schema.fields if f.kind != "multi_hot"]

    @property
    def multi_hot_fields(self) -> list[FieldSpec]:
        return [f for f in self.schema.fields if f.kind == "multi_hot"]

    @property
    def scaled_positions(self) -> list[int]:
        """Columns of ``ids`` whose rows are multiplied by a value (scaled numerics)."""
        return [i for i, f in enumerate(self.single_fields) if f.is_scaled]

    @property
    def num_embeddings(self) -> int:
        return sum(s.size for s in self.states.values())

    @property
    def id_dtype(self) -> type:
        """Smallest integer type that holds every id: int32 halves what encoded data weighs."""
        return np.int32 if self.num_embeddings < 2**31 else np.int64

    @property
    def input_columns(self) -> list[str]:
        return [f.name for f in self.schema.fields]

    # ------------------------------------------------------------ fit
    def fit(self, chunks: Iterable[Chunk], base: FeaturePipeline | None = None) -> FeaturePipeline:
        """One streamed pass over the training rows: counts, numeric stats, bin samples.
        ``base``: a fitted pipeline to grow (warm start, see :meth:`_finish_fit`)."""
        fitter = _Fitter(self.schema, spill=None)
        for chunk in chunks:
            fitter.add(chunk)
        self._finish_fit(fitter, base)
        return self

    def fit_encode(
        self, chunks: Iterable[Chunk], n_fit: int | Callable[[int], int], spill_dir: Path, base: FeaturePipeline | None = None
    ) -> Iterator[tuple[int, EncodedChunk]]:
        """Fit on the first ``n_fit`` rows and encode every row, parsing the input once.

        ``n_fit`` may be a function of the number of rows read, so a split by fractions needs
        no counting pass before the parse. The parse pass dictionary-encodes each column chunk
        (Arrow) and spills the small per-chunk indices to ``spill_dir``; after fitting, each
        chunk's dictionary is mapped to vocabulary ids once and the rows are encoded by NumPy
        gathers. Yields (first row, encoded chunk) in order. Same result as ``fit`` on those
        rows, then ``encode``.

        Threads: the reader parses in its own thread; here fields are counted on two threads
        (this one and a helper), and encoding runs one chunk ahead of the caller, which writes
        the previous one.
        """
        spill = _Spill(spill_dir)
        try:
            with ThreadPoolExecutor(1, thread_name_prefix="deepfm-fit") as pool:
                fitter = _Fitter(self.schema, spill=spill)
                for chunk in chunks:
                    fitter.add(chunk, pool)
                spill.seal()
                counters = list(fitter.dictionaries.values())  # their last merges, on both threads
                other = pool.submit(lambda: [c.finish() for c in counters[1::2]])
                [c.finish() for c in counters[0::2]]
                other.result()
                fitter.limit(n_fit(fitter.rows_counted) if callable(n_fit) else n_fit)
                remaps = self._finish_fit(fitter, base)

                def encode(i: int) -> EncodedChunk:
                    return fitter.encode_spilled(i, self, remaps, self.id_dtype)

                # More threads only fight over the GIL: encoding is many small gathers.
                with ThreadPoolExecutor(1, thread_name_prefix="deepfm-encode") as encoder:
                    ahead: Future[EncodedChunk] | None = encoder.submit(encode, 0) if fitter.chunk_rows else None
                    for i, (row0, _) in enumerate(fitter.chunk_rows):
                        assert ahead is not None
                        done, ahead = ahead, encoder.submit(encode, i + 1) if i + 1 < len(fitter.chunk_rows) else None
                        yield row0, done.result()
        finally:
            spill.close()

    def _finish_fit(self, fitter: _Fitter, base: FeaturePipeline | None = None) -> dict[str, np.ndarray]:
        """Vocabularies, statistics and offsets from what the fitter gathered. Returns, for
        each vocabulary field, the map from its unified dictionary to local ids.

        With ``base`` (warm start) the numeric statistics and bin edges are ``base``'s, kept
        rather than refitted, and each vocabulary is ``base``'s grown by the new counts
        (:func:`deepfm.vocab.grow_vocabulary`): known values keep their local ids."""
        if fitter.rows_counted == 0:
            raise DataError("no training rows to fit the features on")
        remaps: dict[str, np.ndarray] = {}
        offset = 0
        for spec in self.schema.fields:
            st = self.states[spec.name]
            old = base.states[spec.name] if base is not None else None
            if spec.is_hashed:  # no vocabulary: a fixed number of rows
                st.size = FIRST_VALUE + spec.hash_buckets
            elif old is not None and old.vocab is None:  # scaled: keep the old standardization
                st.mean, st.std, st.size = old.mean, old.std, 2
            elif old is not None and not _uses_dictionary(spec):  # quantile bins: the same bins
                st.edges, st.vocab, st.counts, st.size = list(old.edges), old.vocab, old.counts, old.size
            elif old is not None:
                keys, cnt = fitter.dictionaries[spec.name].finish()
                st.vocab, st.counts, pos = grow_vocabulary(old.vocab, old.counts, keys, cnt, spec.min_count, spec.max_vocab)
                st.size = FIRST_VALUE + len(st.vocab)
                remaps[spec.name] = np.where(pos >= 0, FIRST_VALUE + pos, OOV)
            elif spec.is_scaled:
                n, s, ss = np.sum(fitter.moments[spec.name], axis=0) if fitter.moments[spec.name] else (0, 0.0, 0.0)
                if "standardize" in spec.transform and n > 0:
                    with np.errstate(over="ignore", invalid="ignore"):
                        mean, var = s / n, ss / n - (s / n) ** 2
                    if not (math.isfinite(mean) and math.isfinite(var)):
                        # Squares of values near 1e154 and above overflow: say so rather
                        # than let NaN reach the model.
                        raise DataError(
                            "values are too large to standardize (their squares overflow); "
                            "use transform log1p_standardize or bucketize the field",
                            field=spec.name,
                        )
                    st.mean, st.std = float(mean), float(math.sqrt(max(var, 0.0))) or 1.0
                st.size = 2
            elif spec.kind == "numeric" and spec.binning == "quantile":
                values = fitter.samples[spec.name].values if spec.name in fitter.samples else np.empty(0)
                st.edges = _quantile_edges(values, spec.bins)
                st.vocab = pa.array(np.arange(len(st.edges) + 1, dtype=np.int64))
                st.counts = np.zeros(len(st.edges) + 1, dtype=np.int64)
                st.size = FIRST_VALUE + len(st.vocab)
            else:
                keys, cnt = fitter.dictionaries[spec.name].finish()
                kept = np.flatnonzero(cnt >= spec.min_count)
                # Most frequent first; ties broken by the key so the order does not depend on
                # how the file was cut into chunks. max_vocab keeps the most frequent.
                order = kept[np.lexsort((_sort_keys(keys.take(pa.array(kept))), -cnt[kept]))]
                order = order[: spec.max_vocab or None]
                st.vocab = keys.take(pa.array(order, pa.int64()))
                st.counts = cnt[order]
                st.size = FIRST_VALUE + len(st.vocab)
                if spec.kind == "numeric":
                    st.vocab = pc.cast(st.vocab, pa.int64())
                remap = np.full(len(keys), OOV, dtype=np.int64)
                remap[order] = FIRST_VALUE + np.arange(len(order), dtype=np.int64)
                remaps[spec.name] = remap
            st.offset = offset
            offset += st.size
        self.fitted = True
        log.info("fitted %d fields on %d rows: %d embedding rows", len(self.states), fitter.rows_counted, offset)
        return remaps

    # ------------------------------------------------------------ encode
    def encode(self, chunk: Chunk, with_labels: bool = True) -> EncodedChunk:
        """Encode one chunk. Never fails on unseen values: they go to the field's OOV row."""
        if not self.fitted:
            raise RuntimeError("FeaturePipeline.encode called before fit")
        n = chunk.table.num_rows
        singles = self.single_fields
        ids = np.empty((n, len(singles)), dtype=np.int64)
        values = np.empty((n, len(self.scaled_positions)), dtype=np.float32)
        v = 0
        for j, spec in enumerate(singles):
            st = self.states[spec.name]
            if spec.is_scaled:
                too_large = functools.partial(_chunk_error, chunk, spec.name)
                ids[:, j], values[:, v] = _encode_scaled(to_float(chunk, spec.name), spec, st, too_large)
                v += 1
                continue
            if spec.kind == "numeric":
                x = to_float(chunk, spec.name)
                keys_arr = _key_array(_log_bin_keys(x) if spec.binning == "log" else _quantile_keys(x, st.edges))
            else:
                keys_arr = to_strings(chunk, spec.name)
            ids[:, j] = st.offset + _lookup(keys_arr, st)
        multi = []
        for spec in self.multi_hot_fields:
            st = self.states[spec.name]
            multi.append(_encode_multi_hot(to_strings(chunk, spec.name), spec.separator, st))
        labels = None
        if with_labels:
            labels = to_label(chunk, self.schema.label)
        return EncodedChunk(ids=ids, values=values, multi_hot=multi, labels=labels)

    # ------------------------------------------------------------ save/load
    def save(self, folder: Path) -> list[str]:
        """Write ``pipeline.json`` (schema, offsets, stats) and ``vocab.arrow``. Returns file names."""
        folder = Path(folder)
        state = {
            "schema": self.schema.to_dict(),
            "fields": [self.states[f.name].to_json() for f in self.schema.fields],
            "num_embeddings": self.num_embeddings,
        }
        (folder / "pipeline.json").write_text(json.dumps(state, indent=1))
        names, keys, cnts = [], [], []
        for f in self.schema.fields:
            st = self.states[f.name]
            if st.vocab is None:
                continue
            names.append(np.full(len(st.vocab), f.name, dtype=object))
            keys.append(pc.cast(st.vocab, pa.string()))
            cnts.append(st.counts)
        table = pa.table(
            {
                "field": pa.array(np.concatenate(names) if names else [], pa.string()),
                "key": pa.concat_arrays([k for k in keys]) if keys else pa.array([], pa.string()),
                "count": pa.array(np.concatenate(cnts) if cnts else [], pa.int64()),
            }
        )
        with ipc.new_file(folder / "vocab.arrow", table.schema) as writer:
            writer.write_table(table)
        return ["pipeline.json", "vocab.arrow"]

    @classmethod
    def load(cls, folder: Path) -> FeaturePipeline:
        folder = Path(folder)
        try:
            state = json.loads((folder / "pipeline.json").read_text())
            with ipc.open_file(folder / "vocab.arrow") as reader:
                vocab = reader.read_all()
        except (OSError, json.JSONDecodeError, pa.ArrowInvalid) as exc:
            raise BundleError(f"{folder}: cannot read the fitted features ({exc})") from exc
        try:
            return cls._from_state(state, vocab, folder)
        except (KeyError, TypeError, ValueError, pa.ArrowInvalid) as exc:
            raise BundleError(f"{folder}: pipeline.json or vocab.arrow is not what this deepfm wrote ({exc!r})") from None

    @classmethod
    def _from_state(cls, state: dict[str, Any], vocab: pa.Table, folder: Path) -> FeaturePipeline:
        pipe = cls(Schema.from_dict(state["schema"]))
        field_col = vocab.column("field")
        for saved in state["fields"]:
            st = pipe.states[saved["name"]]
            st.offset, st.size = saved["offset"], saved["size"]
            st.mean, st.std, st.edges = saved["mean"], saved["std"], saved["edges"]
            if st.spec.has_vocabulary:
                rows = vocab.filter(pc.equal(field_col, saved["name"]))
                keys = rows.column("key").combine_chunks()
                st.vocab = pc.cast(keys, pa.int64()) if st.spec.kind == "numeric" else keys
                st.counts = rows.column("count").to_numpy()
                if len(st.vocab) != saved["vocab_size"]:
                    raise BundleError(f"{folder}: vocab.arrow does not match pipeline.json for {saved['name']!r}")
        pipe.fitted = True
        return pipe


# ---------------------------------------------------------------- helpers
def _transform(x: np.ndarray, transform: str) -> np.ndarray:
    """Numeric transform before scaling. log1p is signed: sign(x)·log(1+|x|), so negatives work."""
    if "log1p" in transform:
        return np.sign(x) * np.log1p(np.abs(x))
    return x


def _log_bin_keys(x: np.ndarray) -> np.ndarray:
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


def _key_array(keys: np.ndarray) -> pa.Array:
    """Bin keys (float, NaN for missing) as an int64 Arrow array with nulls."""
    null = np.isnan(keys)
    return pa.array(np.where(null, 0, keys).astype(np.int64), mask=null)


def _quantile_keys(x: np.ndarray, edges: list[float]) -> np.ndarray:
    keys = np.searchsorted(np.asarray(edges), x, side="right").astype(np.float64)
    keys[np.isnan(x)] = np.nan
    return keys


def _quantile_edges(values: np.ndarray, bins: int) -> list[float]:
    if values.size == 0:
        return []
    qs = np.quantile(values, np.linspace(0, 1, bins + 1)[1:-1])
    return [float(e) for e in np.unique(qs)]


@dataclass
class _Reservoir:
    """Uniform sample of at most _RESERVOIR values (those with the smallest random keys),
    with the row each came from."""

    values: np.ndarray
    keys: np.ndarray
    rows: np.ndarray

    @classmethod
    def empty(cls) -> _Reservoir:
        return cls(np.empty(0), np.empty(0), np.empty(0, dtype=np.int64))

    def add(self, x: np.ndarray, rows: np.ndarray, rng: np.random.Generator) -> None:
        self.values = np.concatenate([self.values, x])
        self.keys = np.concatenate([self.keys, rng.random(x.size)])
        self.rows = np.concatenate([self.rows, rows])
        if self.values.size > _RESERVOIR:
            keep = np.argpartition(self.keys, _RESERVOIR)[:_RESERVOIR]
            self.values, self.keys, self.rows = self.values[keep], self.keys[keep], self.rows[keep]

    def before(self, n_rows: int) -> None:
        """Keep the values of rows < n_rows: still a uniform sample of those rows."""
        keep = self.rows < n_rows
        self.values, self.keys, self.rows = self.values[keep], self.keys[keep], self.rows[keep]


def _sort_keys(keys: pa.Array) -> np.ndarray:
    """Keys as something np.lexsort can order (ties in counts break by key)."""
    if pa.types.is_integer(keys.type):
        return keys.to_numpy()
    return pc.rank(keys, sort_keys="ascending", tiebreaker="first").to_numpy()


def _lookup(keys: pa.Array | pa.ChunkedArray, st: FieldState) -> np.ndarray:
    """Local ids: FIRST_VALUE + position in the vocabulary, OOV for unseen, MISSING for nulls.

    pc.index_in hashes the whole vocabulary on every call: right for a chunk of a file, but
    most of the cost of scoring a few records (an HTTP request). Those go through a dict
    built once per field instead (memory: a Python dict of the vocabulary); same ids."""
    if st.spec.is_hashed:
        return hashed_ids(keys, st.spec.hash_buckets, FIRST_VALUE, MISSING)
    vocab = st.vocab
    assert vocab is not None
    if len(keys) <= _DICT_LOOKUP_ROWS:
        index = st.index()
        found = (MISSING if k is None else index.get(k, OOV) for k in keys.to_pylist())
        return np.fromiter(found, dtype=np.int64, count=len(keys))
    pos = pc.index_in(keys, value_set=vocab)
    null = pc.is_null(keys).to_numpy(zero_copy_only=False)
    filled = pc.fill_null(pc.add(pc.cast(pos, pa.int64()), FIRST_VALUE), OOV)
    out = np.array(filled.to_numpy(zero_copy_only=False), dtype=np.int64)  # writable copy
    out[null] = MISSING
    return out


def _tokens(strings: pa.ChunkedArray, separator: str) -> _TokenLists:
    """Split lists like "Action|Comedy"; empty tokens ("a||b", trailing "|") are dropped."""
    combined = strings.combine_chunks() if isinstance(strings, pa.ChunkedArray) else strings
    parts = pc.split_pattern(combined, separator)
    flat = pc.list_flatten(parts)
    parents = pc.list_parent_indices(parts)
    trimmed = pc.utf8_trim_whitespace(flat)
    keep = pc.not_equal(trimmed, "")
    return _TokenLists(values=trimmed.filter(keep), parents=parents.filter(keep).to_numpy(), rows=len(combined))


@dataclass
class _TokenLists:
    values: pa.Array
    parents: np.ndarray  # row index of each token (non-decreasing)
    rows: int


def _encode_multi_hot(strings: pa.ChunkedArray, separator: str, st: FieldState) -> tuple[np.ndarray, np.ndarray]:
    tokens = _tokens(strings, separator)
    local = _lookup(tokens.values, st) if len(tokens.values) else np.zeros(0, dtype=np.int64)
    return _bags(local, tokens.parents, tokens.rows, st.offset)


def _bags(local: np.ndarray, parents: np.ndarray, rows: int, offset: int) -> tuple[np.ndarray, np.ndarray]:
    """CSR bags from token ids and their (non-decreasing) rows: (offsets (rows+1,), ids)."""
    counts = np.bincount(parents, minlength=rows)
    empty = np.flatnonzero(counts == 0)
    # An empty or missing list gets the field's MISSING row, so it is learned, not a zero vector.
    order = np.argsort(np.concatenate([parents, empty]), kind="stable")
    ids = np.concatenate([local, np.full(empty.size, MISSING, dtype=np.int64)])[order]
    offsets = np.zeros(rows + 1, dtype=np.int64)
    np.cumsum(np.maximum(counts, 1), out=offsets[1:])
    return offsets, offset + ids


def _encode_scaled(
    x: np.ndarray, spec: FieldSpec, st: FieldState, error: Callable[[int, str], DataError]
) -> tuple[np.ndarray, np.ndarray]:
    """A scaled numeric's ids (row 0: the value vector, row 1: missing) and float32 values (1
    if missing). A value beyond float32's range after scaling is an ``error(row, message)``:
    it would reach the model as inf."""
    t = _transform(x, spec.transform)
    missing = np.isnan(t)
    with np.errstate(over="ignore"):
        values = np.where(missing, 1.0, (t - st.mean) / st.std).astype(np.float32)
    bad = np.flatnonzero(np.isinf(values))
    if bad.size:
        i = int(bad[0])
        raise error(i, f"{float(x[i])!r} is too large for this field: out of float32's range (3.4e38) after scaling")
    return st.offset + missing.astype(np.int64), values


# ---------------------------------------------------------------- single-pass fitting
class _Dictionary:
    """The distinct values of one field across chunks, merged by Arrow's dictionary unifier,
    with their counts over the rows being fitted."""

    # Merging rehashes the global dictionary, so merge only once the chunk dictionaries
    # waiting add up to its size: each value is then rehashed O(1) times on average, where
    # merging every k chunks costs O(rows^2 / k) on high-cardinality fields.
    MIN_PENDING = 1 << 18

    def __init__(self, keep_maps: bool) -> None:
        self.values: pa.Array | None = None
        self.counts = np.zeros(0, dtype=np.int64)
        self.pending: list[tuple[pa.Array, np.ndarray]] = []
        self.pending_values = 0
        self.maps: list[np.ndarray] = []  # per chunk: position in its dictionary -> global position
        self.keep_maps = keep_maps

    def add(self, values: pa.Array | pa.ChunkedArray) -> np.ndarray:
        """Dictionary-encode and count a chunk's values. Returns the chunk-local index of each
        value (-1 for null). (n,) int32"""
        encoded = pc.dictionary_encode(values)
        if isinstance(encoded, pa.ChunkedArray):
            # The pieces share one dictionary (the hash table carries over), so no copy of
            # the strings is needed to treat them as one array.
            dictionary = encoded.chunk(0).dictionary if encoded.num_chunks else pa.array([], values.type)
            indices: pa.Array | pa.ChunkedArray = pa.chunked_array([c.indices for c in encoded.chunks], pa.int32())
        else:
            dictionary, indices = encoded.dictionary, encoded.indices
        idx = np.asarray(pc.fill_null(indices, -1).to_numpy(zero_copy_only=False), dtype=np.int32)
        cnt = np.bincount(idx + 1, minlength=len(dictionary) + 1)[1:].astype(np.int64)  # slot 0: nulls
        self.pending.append((dictionary, cnt))
        self.pending_values += len(dictionary)
        if self.pending_values >= max(self.MIN_PENDING, 0 if self.values is None else len(self.values)):
            self._compact()
        return idx

    def _compact(self) -> None:
        if not self.pending:
            return
        arrays = ([self.values] if self.values is not None else []) + [d for d, _ in self.pending]
        as_dicts = [pa.DictionaryArray.from_arrays(pa.array(np.arange(len(a), dtype=np.int32)), a) for a in arrays]
        unified = pa.chunked_array(as_dicts).unify_dictionaries()
        values = unified.chunk(0).dictionary
        counts = np.zeros(len(values), dtype=np.int64)
        counts[: len(self.counts)] = self.counts  # the unifier keeps the first dictionary's order
        first = 1 if self.values is not None else 0
        for i, (_, cnt) in enumerate(self.pending):
            positions = unified.chunk(first + i).indices.to_numpy()
            counts[positions] += cnt  # positions are distinct: dictionary entries are
            if self.keep_maps:
                self.maps.append(positions.astype(np.int32))
        self.values, self.counts, self.pending, self.pending_values = values, counts, [], 0

    def uncount(self, chunks: dict[int, np.ndarray]) -> None:
        """Take back the counts of values at chunk-local indices: {chunk: indices}."""
        if not chunks:
            return
        self._compact()
        positions = np.concatenate([self.maps[i][idx[idx >= 0]] for i, idx in chunks.items()])
        self.counts -= np.bincount(positions, minlength=len(self.counts))

    def finish(self) -> tuple[pa.Array, np.ndarray]:
        self._compact()
        if self.values is None:
            return pa.array([], pa.string()), np.zeros(0, dtype=np.int64)
        return self.values, self.counts

    def table(self, i: int, remap: np.ndarray, offset: int) -> np.ndarray:
        """Chunk ``i``'s index -> id (offset + local id), with one extra entry at the end for
        index -1 (null): the MISSING row. Encoding is then one gather."""
        return offset + np.append(remap[self.maps[i]], MISSING)

    def encode(self, i: int, idx: np.ndarray, remap: np.ndarray, offset: int, out: np.ndarray) -> None:
        """Ids of chunk ``i``'s spilled indices into ``out``."""
        np.take(self.table(i, remap, offset).astype(out.dtype), idx, out=out)


class _BinCounts:
    """Counts of integer bin keys (log-binned numerics) in a dense array over the range of keys
    seen: the keys are small integers, so counting needs no hashing. Same interface as
    _Dictionary; a chunk's spilled index is the key itself (NULL for missing)."""

    NULL = np.iinfo(np.int32).min

    def __init__(self) -> None:
        self.lo = 0
        self.counts = np.zeros(0, dtype=np.int64)  # counts[k - lo] for key k

    def add(self, keys: np.ndarray) -> np.ndarray:
        """Count a chunk's bin keys (float, NaN for missing). Returns them as int32. (n,)"""
        null = np.isnan(keys)
        idx = np.where(null, self.NULL, keys).astype(np.int32)
        present = idx[~null]
        if present.size:
            lo, hi = int(present.min()), int(present.max())
            self._cover(lo, hi)
            counted = np.bincount(present - lo)
            self.counts[lo - self.lo : lo - self.lo + counted.size] += counted
        return idx

    def _cover(self, lo: int, hi: int) -> None:
        """Grow the dense range to hold keys lo..hi."""
        if not self.counts.size:
            self.lo, self.counts = lo, np.zeros(hi - lo + 1, dtype=np.int64)
            return
        new_lo, new_hi = min(lo, self.lo), max(hi, self.lo + self.counts.size - 1)
        if (new_lo, new_hi) != (self.lo, self.lo + self.counts.size - 1):
            grown = np.zeros(new_hi - new_lo + 1, dtype=np.int64)
            grown[self.lo - new_lo : self.lo - new_lo + self.counts.size] = self.counts
            self.lo, self.counts = new_lo, grown

    def uncount(self, chunks: dict[int, np.ndarray]) -> None:
        if not chunks:
            return
        present = np.concatenate([idx[idx != self.NULL] for idx in chunks.values()])
        self.counts -= np.bincount(present - self.lo, minlength=self.counts.size)

    def finish(self) -> tuple[pa.Array, np.ndarray]:
        return pa.array(self.lo + np.arange(self.counts.size, dtype=np.int64)), self.counts

    def encode(self, i: int, idx: np.ndarray, remap: np.ndarray, offset: int, out: np.ndarray) -> None:
        table = (offset + np.append(remap, MISSING)).astype(out.dtype)
        np.take(table, np.where(idx == self.NULL, remap.size, idx.astype(np.int64) - self.lo), out=out)


class _Spill:
    """Append-only arrays, one series per name, read back chunk by chunk. The first
    ``memory_budget`` bytes stay in memory (no write and read back); the rest go to one file
    per name in ``folder``, so memory stays bounded whatever the size of the input."""

    def __init__(self, folder: Path, memory_budget: int | None = None) -> None:
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.files: dict[str, Any] = {}
        self.where: dict[str, list[np.ndarray | tuple[int, int, np.dtype]]] = {}
        self.memory_left = SPILL_MEMORY if memory_budget is None else memory_budget
        self.lock = threading.Lock()  # put() runs on two threads

    def put(self, name: str, array: np.ndarray) -> None:
        array = np.ascontiguousarray(array)
        with self.lock:
            where = self.where.setdefault(name, [])
            in_memory = array.nbytes <= self.memory_left
            if in_memory:
                self.memory_left -= array.nbytes
        if in_memory:
            where.append(array)
            return
        f = self.files.get(name)
        if f is None:
            f = self.files[name] = open(self.folder / f"{name}.bin", "w+b")
        where.append((f.tell(), array.size, array.dtype))
        f.write(memoryview(array))

    def seal(self) -> None:
        """Done writing: flush every file so ``get`` can read from any thread."""
        for f in self.files.values():
            f.flush()

    def get(self, name: str, i: int) -> np.ndarray:
        where = self.where[name][i]
        if isinstance(where, np.ndarray):
            return where
        offset, count, dtype = where
        return np.fromfile(self.folder / f"{name}.bin", dtype=dtype, count=count, offset=offset)

    def close(self) -> None:
        for f in self.files.values():
            f.close()


class _Fitter:
    """Gathers what fitting needs in one pass: dictionaries and counts, numeric moments and
    samples. With a spill, it also keeps each chunk's per-row indices and values on disk, so
    ``limit`` can take back what rows past the training part added, and ``encode_spilled``
    can encode every row without parsing again."""

    def __init__(self, schema: Schema, spill: _Spill | None) -> None:
        self.schema, self.spill = schema, spill
        self.dictionaries: dict[str, _Dictionary | _BinCounts] = {
            f.name: _BinCounts() if f.kind == "numeric" else _Dictionary(spill is not None)
            for f in schema.fields
            if _uses_dictionary(f)
        }
        # Scaled numerics: per chunk (count, sum, sum of squares); summed in _finish_fit.
        self.moments: dict[str, list[np.ndarray]] = {f.name: [] for f in schema.fields if f.is_scaled}
        self.samples: dict[str, _Reservoir] = {}
        # One generator per field: fields are added in parallel, in no fixed order.
        self.rngs = {f.name: np.random.default_rng([0, i]) for i, f in enumerate(schema.fields)}
        self.rows_counted = 0
        self.chunk_rows: list[tuple[int, int]] = []
        self.reader: Any = None  # where the chunks come from: errors name its lines

    def _row_error(self, i: int, field: str, row: int, message: str) -> DataError:
        """An error at ``row`` of spilled chunk ``i``, located in the file it came from."""
        assert self.reader is not None
        return DataError(message, path=str(self.reader.path), line=self.reader.locate(self.chunk_rows[i][0] + row), field=field)

    def add(self, chunk: Chunk, pool: ThreadPoolExecutor | None = None) -> None:
        """Count every row of ``chunk`` (and spill what encoding it needs). With a ``pool``,
        half the fields are done there meanwhile: Arrow and NumPy release the GIL for the
        heavy parts."""
        n = chunk.table.num_rows
        self.rows_counted += n
        self.chunk_rows.append((chunk.row0, n))
        self.reader = chunk.reader
        fields = list(enumerate(self.schema.fields))

        def run(part: list[tuple[int, FieldSpec]]) -> tuple[int, Exception] | None:
            """The first failure (field index, error), if any."""
            for k, spec in part:
                try:
                    self._add_field(chunk, spec)
                except Exception as exc:
                    return k, exc
            return None

        if pool is None:
            failures = [run(fields)]
        else:  # one task per half: fewer hand-overs than one per field
            other = pool.submit(run, fields[1::2])
            failures = [run(fields[0::2]), other.result()]
        failed = [f for f in failures if f is not None]
        if failed:
            raise min(failed, key=lambda f: f[0])[1]  # the error of the first field, as in order
        if self.spill is not None:
            self.spill.put("label", to_label(chunk, self.schema.label))

    def _add_field(self, chunk: Chunk, spec: FieldSpec) -> None:
        name, spill = spec.name, self.spill
        if spec.is_hashed:  # nothing to count: spill the local ids themselves
            if spill is None:
                return
            if spec.kind == "multi_hot":
                tokens = _tokens(to_strings(chunk, name), spec.separator)
                spill.put(f"{name}.idx", hashed_ids(tokens.values, spec.hash_buckets, FIRST_VALUE, MISSING))
                spill.put(f"{name}.len", np.bincount(tokens.parents, minlength=chunk.table.num_rows).astype(np.int32))
            else:
                spill.put(name, hashed_ids(to_strings(chunk, name), spec.hash_buckets, FIRST_VALUE, MISSING))
        elif spec.kind == "multi_hot":
            tokens = _tokens(to_strings(chunk, name), spec.separator)
            idx = self.dictionaries[name].add(tokens.values)
            if spill is not None:
                spill.put(f"{name}.idx", idx)
                spill.put(f"{name}.len", np.bincount(tokens.parents, minlength=chunk.table.num_rows).astype(np.int32))
        elif _uses_dictionary(spec):
            values = _log_bin_keys(to_float(chunk, name)) if spec.kind == "numeric" else to_strings(chunk, name)
            idx = self.dictionaries[name].add(values)
            if spill is not None:
                spill.put(name, idx)
        else:  # scaled or quantile-binned numerics: keep the values themselves
            x = to_float(chunk, name)
            if spec.is_scaled:
                self.moments[name].append(_moments(x, spec.transform))
            else:
                present = np.flatnonzero(~np.isnan(x))
                self.samples.setdefault(name, _Reservoir.empty()).add(x[present], chunk.row0 + present, self.rngs[name])
            if spill is not None:
                spill.put(name, x)

    def limit(self, n_fit: int) -> None:
        """Fit on the first ``n_fit`` rows only: take back what later rows counted, reading
        their indices and values back from the spill."""
        assert self.spill is not None
        spill = self.spill
        cut = [(i, min(max(n_fit - row0, 0), n)) for i, (row0, n) in enumerate(self.chunk_rows) if n_fit < row0 + n]
        for spec in self.schema.fields:
            name = spec.name
            if spec.is_hashed:  # counted nothing
                continue
            if spec.kind == "multi_hot":
                firsts = [int(spill.get(f"{name}.len", i)[:keep].sum()) for i, keep in cut]  # first token of row `keep`
                self.dictionaries[name].uncount({i: spill.get(f"{name}.idx", i)[first:] for (i, _), first in zip(cut, firsts)})
            elif _uses_dictionary(spec):
                self.dictionaries[name].uncount({i: spill.get(name, i)[keep:] for i, keep in cut})
            elif spec.is_scaled:
                for i, keep in cut:
                    self.moments[name][i] = _moments(spill.get(name, i)[:keep], spec.transform)
        for reservoir in self.samples.values():
            reservoir.before(n_fit)
        self.rows_counted = min(n_fit, self.rows_counted)

    def encode_spilled(
        self, i: int, pipe: FeaturePipeline, remaps: dict[str, np.ndarray], id_dtype: type = np.int64
    ) -> EncodedChunk:
        """Encode chunk ``i`` from the spill, as ``pipe.encode`` would encode its rows (ids as
        ``id_dtype``: int32 halves the bytes written while every id fits)."""
        assert self.spill is not None
        spill = self.spill
        n = self.chunk_rows[i][1]
        singles = pipe.single_fields
        # Field-major while filling (each gather writes contiguous memory), transposed once.
        ids_t = np.empty((len(singles), n), dtype=id_dtype)
        values = np.empty((n, len(pipe.scaled_positions)), dtype=np.float32)
        v = 0
        for j, spec in enumerate(singles):
            st = pipe.states[spec.name]
            if spec.is_scaled:
                too_large = functools.partial(self._row_error, i, spec.name)
                ids_t[j], values[:, v] = _encode_scaled(spill.get(spec.name, i), spec, st, too_large)
                v += 1
            elif spec.is_hashed:
                ids_t[j] = st.offset + spill.get(spec.name, i)
            elif _uses_dictionary(spec):
                self.dictionaries[spec.name].encode(i, spill.get(spec.name, i), remaps[spec.name], st.offset, out=ids_t[j])
            else:  # quantile bins: the vocabulary is every bin, in order
                keys = _quantile_keys(spill.get(spec.name, i), st.edges)
                null = np.isnan(keys)
                ids_t[j] = st.offset + np.where(null, MISSING, FIRST_VALUE + np.nan_to_num(keys)).astype(np.int64)
        ids = np.ascontiguousarray(ids_t.T)
        multi = []
        for spec in pipe.multi_hot_fields:
            st = pipe.states[spec.name]
            if spec.is_hashed:
                local = spill.get(f"{spec.name}.idx", i)
            else:
                dictionary = self.dictionaries[spec.name]
                assert isinstance(dictionary, _Dictionary)
                local = dictionary.table(i, remaps[spec.name], 0)[spill.get(f"{spec.name}.idx", i)]
            lengths = spill.get(f"{spec.name}.len", i)
            parents = np.repeat(np.arange(n, dtype=np.int64), lengths)
            multi.append(_bags(local, parents, n, st.offset))
        return EncodedChunk(ids=ids, values=values, multi_hot=multi, labels=spill.get("label", i))


def _chunk_error(chunk: Chunk, field: str, row: int, message: str) -> DataError:
    return chunk.error(row, message, field=field)


def _moments(x: np.ndarray, transform: str) -> np.ndarray:
    """(count, sum, sum of squares) of the transformed non-missing values of ``x``."""
    t = _transform(x[~np.isnan(x)], transform)
    with np.errstate(over="ignore"):  # an overflow is reported once, by _finish_fit, naming the field
        return np.array([t.size, t.sum(), np.square(t).sum()])


def _uses_dictionary(spec: FieldSpec) -> bool:
    """Fields whose values are counted into a vocabulary (not scaled or quantile numerics)."""
    return (spec.kind != "numeric" and not spec.is_hashed) or (spec.mode == "bucketized" and spec.binning == "log")
