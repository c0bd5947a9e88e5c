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

import json
import logging
import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.ipc as ipc

from deepfm.errors import BundleError, DataError
from deepfm.io import Chunk, to_float, to_label, to_strings
from deepfm.schema import FieldSpec, Schema

log = logging.getLogger(__name__)

OOV, MISSING, FIRST_VALUE = 0, 1, 2
_RESERVOIR = 200_000  # values kept per field to place quantile bin edges
_DICT_LOOKUP_ROWS = 1024  # keys looked up in a dict (below) rather than by pc.index_in


@dataclass
class EncodedChunk:
    """Encoded rows. Shapes: ids (N, S) int64, values (N, V) float32, labels (N,) float32;
    multi_hot[k] = (offsets (N+1,) int64, ids (nnz,) int64) for the k-th multi-hot field."""

    ids: np.ndarray
    values: np.ndarray
    multi_hot: list[tuple[np.ndarray, np.ndarray]]
    labels: np.ndarray | None

    def __len__(self) -> int:
        return int(self.ids.shape[0])


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
    def input_columns(self) -> list[str]:
        return [f.name for f in self.schema.fields]

    # ------------------------------------------------------------ fit
    def fit(self, chunks: Iterable[Chunk]) -> FeaturePipeline:
        """One streamed pass over the training rows: counts, numeric stats, bin samples."""
        fitter = _Fitter(self.schema, spill=None)
        for chunk in chunks:
            fitter.add(chunk, count_rows=chunk.table.num_rows)
        self._finish_fit(fitter)
        return self

    def fit_encode(self, chunks: Iterable[Chunk], n_fit: int, spill_dir: Path) -> Iterator[tuple[int, EncodedChunk]]:
        """Fit on the first ``n_fit`` rows and encode every row, parsing the input once.

        The parse pass dictionary-encodes each column chunk (Arrow) and spills the small
        per-chunk indices to ``spill_dir``; after fitting, each chunk's dictionary is mapped to
        vocabulary ids once and the rows are encoded by NumPy gathers. Yields (first row,
        encoded chunk) in order. Same result as ``fit`` on those rows, then ``encode``.
        """
        spill = _Spill(spill_dir)
        try:
            fitter = _Fitter(self.schema, spill=spill)
            for chunk in chunks:
                fitter.add(chunk, count_rows=min(max(n_fit - chunk.row0, 0), chunk.table.num_rows))
            remaps = self._finish_fit(fitter)
            for i, (row0, n) in enumerate(fitter.chunk_rows):
                yield row0, fitter.encode_spilled(i, n, self, remaps)
        finally:
            spill.close()

    def _finish_fit(self, fitter: _Fitter) -> dict[str, np.ndarray]:
        """Vocabularies, statistics and offsets from what the fitter gathered. Returns, for
        each vocabulary field, the map from its unified dictionary to local ids."""
        if fitter.rows_counted == 0:
            raise DataError("no training rows to fit the features on")
        remaps: dict[str, np.ndarray] = {}
        offset = 0
        for spec in self.schema.fields:
            st = self.states[spec.name]
            if spec.is_scaled:
                n, s, ss = fitter.moments[spec.name]
                if "standardize" in spec.transform and n > 0:
                    st.mean = float(s / n)
                    st.std = float(math.sqrt(max(ss / n - st.mean**2, 0.0))) or 1.0
                st.size = 2
            elif spec.kind == "numeric" and spec.binning == "quantile":
                values = fitter.samples.get(spec.name, (np.empty(0), np.empty(0)))[0]
                st.edges = _quantile_edges(values, spec.bins)
                st.vocab = pa.array(np.arange(len(st.edges) + 1, dtype=np.int64))
                st.counts = np.zeros(len(st.edges) + 1, dtype=np.int64)
                st.size = FIRST_VALUE + len(st.vocab)
            else:
                keys, cnt = fitter.dictionaries[spec.name].finish()
                kept = np.flatnonzero(cnt >= spec.min_count)
                # Most frequent first; ties broken by the key so the order does not depend on
                # how the file was cut into chunks.
                order = kept[np.lexsort((_sort_keys(keys.take(pa.array(kept))), -cnt[kept]))]
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
                ids[:, j], values[:, v] = _encode_scaled(to_float(chunk, spec.name), spec, st)
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
            labels = to_label(chunk, self.schema.label, libfm=chunk.reader.format == "libfm")
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
        big = np.floor(np.log(np.maximum(ax, 1.0)) ** 2)
        keys = np.where(ax <= 2, np.floor(x), np.sign(x) * (100 + big))
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


def _reservoir(
    current: tuple[np.ndarray, np.ndarray] | None, x: np.ndarray, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Uniform sample of at most _RESERVOIR values: keep those with the smallest random keys."""
    keys = rng.random(x.size)
    if current is not None:
        x = np.concatenate([current[0], x])
        keys = np.concatenate([current[1], keys])
    if x.size > _RESERVOIR:
        keep = np.argpartition(keys, _RESERVOIR)[:_RESERVOIR]
        x, keys = x[keep], keys[keep]
    return x, keys


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


def _encode_scaled(x: np.ndarray, spec: FieldSpec, st: FieldState) -> tuple[np.ndarray, np.ndarray]:
    """A scaled numeric's ids (row 0: the value vector, row 1: missing) and values (1 if missing)."""
    t = _transform(x, spec.transform)
    missing = np.isnan(t)
    return st.offset + missing.astype(np.int64), np.where(missing, 1.0, (t - st.mean) / st.std)


# ---------------------------------------------------------------- single-pass fitting
class _Dictionary:
    """The distinct values of one field across chunks, merged by Arrow's dictionary unifier,
    with their counts over the rows being fitted."""

    COMPACT_EVERY = 16  # chunk dictionaries merged into the global one this often

    def __init__(self, keep_maps: bool) -> None:
        self.values: pa.Array | None = None
        self.counts = np.zeros(0, dtype=np.int64)
        self.pending: list[tuple[pa.Array, np.ndarray]] = []
        self.maps: list[np.ndarray] = []  # per chunk: position in its dictionary -> global position
        self.keep_maps = keep_maps

    def add(self, values: pa.Array, count_items: int) -> np.ndarray:
        """Dictionary-encode a chunk's values; the first ``count_items`` count towards the
        vocabulary. Returns the chunk-local index of each value (-1 for null). (n,) int32"""
        encoded = pc.dictionary_encode(values)
        idx = np.asarray(pc.fill_null(encoded.indices, -1).to_numpy(zero_copy_only=False), dtype=np.int32)
        counted = idx[:count_items]
        cnt = np.bincount(counted[counted >= 0], minlength=len(encoded.dictionary)).astype(np.int64)
        self.pending.append((encoded.dictionary, cnt))
        if len(self.pending) >= self.COMPACT_EVERY:
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
                self.maps.append(positions.astype(np.int64))
        self.values, self.counts, self.pending = values, counts, []

    def finish(self) -> tuple[pa.Array, np.ndarray]:
        self._compact()
        if self.values is None:
            return pa.array([], pa.string()), np.zeros(0, dtype=np.int64)
        return self.values, self.counts


class _Spill:
    """Append-only arrays on disk, one file per name, read back chunk by chunk."""

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.files: dict[str, Any] = {}
        self.where: dict[str, list[tuple[int, int, np.dtype]]] = {}

    def put(self, name: str, array: np.ndarray) -> None:
        f = self.files.get(name)
        if f is None:
            f = self.files[name] = open(self.folder / f"{name}.bin", "w+b")
            self.where[name] = []
        self.where[name].append((f.tell(), array.size, array.dtype))
        f.write(memoryview(np.ascontiguousarray(array)))

    def get(self, name: str, i: int) -> np.ndarray:
        offset, count, dtype = self.where[name][i]
        f = self.files[name]
        f.flush()
        return np.fromfile(f.name, dtype=dtype, count=count, offset=offset)

    def close(self) -> None:
        for f in self.files.values():
            f.close()


class _Fitter:
    """Gathers what fitting needs in one pass: dictionaries and counts, numeric moments and
    samples. With a spill, it also keeps each chunk's per-row indices and values on disk."""

    def __init__(self, schema: Schema, spill: _Spill | None) -> None:
        self.schema, self.spill = schema, spill
        self.dictionaries = {f.name: _Dictionary(spill is not None) for f in schema.fields if _uses_dictionary(f)}
        self.moments = {f.name: np.zeros(3) for f in schema.fields}  # count, sum, sum of squares
        self.samples: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        self.rng = np.random.default_rng(0)
        self.rows_counted = 0
        self.chunk_rows: list[tuple[int, int]] = []

    def add(self, chunk: Chunk, count_rows: int) -> None:
        n = chunk.table.num_rows
        self.rows_counted += count_rows
        self.chunk_rows.append((chunk.row0, n))
        spill = self.spill
        for spec in self.schema.fields:
            name = spec.name
            if spec.kind == "multi_hot":
                tokens = _tokens(to_strings(chunk, name), spec.separator)
                counted = int(np.searchsorted(tokens.parents, count_rows))
                idx = self.dictionaries[name].add(tokens.values, counted)
                if spill is not None:
                    spill.put(f"{name}.idx", idx)
                    spill.put(f"{name}.len", np.bincount(tokens.parents, minlength=n).astype(np.int32))
            elif _uses_dictionary(spec):
                if spec.kind == "numeric":
                    values = _key_array(_log_bin_keys(to_float(chunk, name)))
                else:
                    values = to_strings(chunk, name).combine_chunks()
                idx = self.dictionaries[name].add(values, count_rows)
                if spill is not None:
                    spill.put(name, idx)
            else:  # scaled or quantile-binned numerics: keep the values themselves
                x = to_float(chunk, name)
                fit_x = x[:count_rows]
                fit_x = fit_x[~np.isnan(fit_x)]
                if spec.is_scaled:
                    t = _transform(fit_x, spec.transform)
                    self.moments[name] += (t.size, t.sum(), np.square(t).sum())
                elif fit_x.size:
                    self.samples[name] = _reservoir(self.samples.get(name), fit_x, self.rng)
                if spill is not None:
                    spill.put(name, x)
        if spill is not None:
            spill.put("label", to_label(chunk, self.schema.label, libfm=chunk.reader.format == "libfm"))

    def encode_spilled(self, i: int, n: int, pipe: FeaturePipeline, remaps: dict[str, np.ndarray]) -> EncodedChunk:
        """Encode chunk ``i`` from the spill, as ``pipe.encode`` would encode its rows."""
        assert self.spill is not None
        spill = self.spill
        singles = pipe.single_fields
        ids_t = np.empty((len(singles), n), dtype=np.int64)  # field-major while filling
        values = np.empty((n, len(pipe.scaled_positions)), dtype=np.float32)
        v = 0
        for j, spec in enumerate(singles):
            st = pipe.states[spec.name]
            if spec.is_scaled:
                ids_t[j], values[:, v] = _encode_scaled(spill.get(spec.name, i), spec, st)
                v += 1
            elif _uses_dictionary(spec):
                np.take(self._id_map(spec.name, i, remaps, st.offset), spill.get(spec.name, i), out=ids_t[j])
            else:  # quantile bins: the vocabulary is every bin, in order
                keys = _quantile_keys(spill.get(spec.name, i), st.edges)
                null = np.isnan(keys)
                ids_t[j] = st.offset + np.where(null, MISSING, FIRST_VALUE + np.nan_to_num(keys)).astype(np.int64)
        ids = np.ascontiguousarray(ids_t.T)
        multi = []
        for spec in pipe.multi_hot_fields:
            st = pipe.states[spec.name]
            local = self._id_map(spec.name, i, remaps, 0)[spill.get(f"{spec.name}.idx", i)]
            lengths = spill.get(f"{spec.name}.len", i)
            parents = np.repeat(np.arange(n, dtype=np.int64), lengths)
            multi.append(_bags(local, parents, n, st.offset))
        return EncodedChunk(ids=ids, values=values, multi_hot=multi, labels=spill.get("label", i))

    def _id_map(self, name: str, i: int, remaps: dict[str, np.ndarray], offset: int) -> np.ndarray:
        """Chunk ``i``'s dictionary position -> id (offset + local id), with one extra entry
        at the end for index -1 (null): the MISSING row. Encoding is then one gather."""
        to_local = remaps[name][self.dictionaries[name].maps[i]]
        return offset + np.append(to_local, MISSING)


def _uses_dictionary(spec: FieldSpec) -> bool:
    """Fields whose values are counted into a vocabulary (not scaled or quantile numerics)."""
    return spec.kind != "numeric" or (spec.mode == "bucketized" and spec.binning == "log")
