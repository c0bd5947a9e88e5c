"""FeaturePipeline: fit vocabularies and numeric statistics on the training rows, then encode.

All fields share one id space (one embedding table); :mod:`deepfm.features.state` describes
the rows each field owns (OOV, missing, its values). Each field is fitted and encoded by the
encoder of its kind (:mod:`deepfm.features.encoders`), chosen once from its FieldSpec.

Encoded rows are int64 ids already offset into the shared space (the model does one
lookup), float32 values for scaled numerics, and multi-hot fields as CSR (offsets, ids).
Fitted state is plain JSON plus one Arrow file of vocabularies: nothing is pickled.
"""

from __future__ import annotations

import functools
import json
import logging
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.ipc as ipc

from deepfm.data.columns import to_label
from deepfm.data.encoded import EncodedChunk
from deepfm.data.schema import FieldSpec, Schema
from deepfm.data.source import Chunk
from deepfm.errors import BundleError, DataError
from deepfm.features.counting import SPILL_MEMORY, Gather, Spill
from deepfm.features.encoders import encoder_for
from deepfm.features.fitter import Fitter
from deepfm.features.state import FIRST_VALUE, MISSING, OOV, FieldState

__all__ = ["FIRST_VALUE", "MISSING", "OOV", "SPILL_MEMORY", "FeaturePipeline", "FieldState"]

log = logging.getLogger(__name__)


class FeaturePipeline:
    """Turns raw columns into model inputs. ``fit`` once on training rows, then ``encode``."""

    def __init__(self, schema: Schema) -> None:
        self.schema = schema
        self.states = {f.name: FieldState(spec=f) for f in schema.fields}
        # Each field's encoder, chosen once from its kind (deepfm.features.encoders).
        self.encoders = {f.name: encoder_for(f) for f in schema.fields}
        self.fitted = False

    # ------------------------------------------------------------ layout
    @property
    def single_fields(self) -> list[FieldSpec]:
        """Fields with one id per row (categorical, numeric), in schema order."""
        return [f for f in self.schema.fields if not self.encoders[f.name].multi_hot]

    @property
    def multi_hot_fields(self) -> list[FieldSpec]:
        return [f for f in self.schema.fields if self.encoders[f.name].multi_hot]

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
        fitter = Fitter(self.schema, self.encoders, spill=None)
        for chunk in chunks:
            fitter.add(chunk)
        self._finish_fit(fitter, base)
        return self

    def fit_encode(
        self,
        chunks: Iterable[Chunk],
        n_fit: int | Callable[[int], int],
        spill_dir: Path,
        base: FeaturePipeline | None = None,
        ranks: tuple[Gather, int] | None = None,
    ) -> Iterator[tuple[int, EncodedChunk]]:
        """Fit on the first ``n_fit`` rows and encode every row, parsing the input once.

        ``n_fit`` may be a function of the number of rows read, so a split by fractions needs
        no counting pass before the parse. The parse pass dictionary-encodes each column chunk
        (Arrow) and spills the small per-chunk indices to ``spill_dir``; after fitting, each
        chunk's dictionary is mapped to vocabulary ids once and the rows are encoded by NumPy
        gathers. Yields (first row, encoded chunk) in order. Same result as ``fit`` on those
        rows, then ``encode``.

        ``ranks``: (gather, this rank) when several ranks fit on their own rows together: each
        counts its ``chunks``, the counts are merged (:meth:`Fitter.merge`), and each encodes
        its own rows with the same fitted state. ``n_fit`` is then this rank's rows to fit on.

        Threads: the reader parses in its own thread; here fields are counted on two threads
        (this one and a helper), and encoding runs one chunk ahead of the caller, which writes
        the previous one.
        """
        spill = Spill(spill_dir)
        try:
            with ThreadPoolExecutor(1, thread_name_prefix="deepfm-fit") as pool:
                fitter = Fitter(self.schema, self.encoders, spill=spill, rank=ranks[1] if ranks else 0)
                for chunk in chunks:
                    fitter.add(chunk, pool)
                spill.seal()
                counters = fitter.counters  # their last merges, on both threads
                other = pool.submit(lambda: [c.finish() for c in counters[1::2]])
                [c.finish() for c in counters[0::2]]
                other.result()
                fitter.limit(n_fit(fitter.rows_counted) if callable(n_fit) else n_fit)
                if ranks is not None:
                    fitter.merge(*ranks)
                remaps = self._finish_fit(fitter, base)

                def encode(i: int) -> EncodedChunk:
                    return self._encode_spilled(fitter, i, remaps)

                # More threads only fight over the GIL: encoding is many small gathers.
                with ThreadPoolExecutor(1, thread_name_prefix="deepfm-encode") as encoder:
                    ahead: Future[EncodedChunk] | None = encoder.submit(encode, 0) if fitter.chunk_rows else None
                    for i, (row0, _) in enumerate(fitter.chunk_rows):
                        assert ahead is not None
                        done, ahead = ahead, encoder.submit(encode, i + 1) if i + 1 < len(fitter.chunk_rows) else None
                        yield row0, done.result()
        finally:
            spill.close()

    def _finish_fit(self, fitter: Fitter, base: FeaturePipeline | None = None) -> dict[str, np.ndarray]:
        """Vocabularies, statistics and offsets from what the fitter gathered. Returns, for
        each field encoded through a counter, the map from its counted values to local ids.

        With ``base`` (warm start) each field grows ``base``'s fitted state (the encoders'
        ``grow``): vocabularies keep their known values' local ids, numeric statistics and bin
        edges stay as they were."""
        if fitter.rows_counted == 0:
            raise DataError("no training rows to fit the features on")
        self._resolve(fitter.rows_counted)
        remaps: dict[str, np.ndarray] = {}
        offset = 0
        for spec in self.schema.fields:
            st, encoder, fit = self.states[spec.name], self.encoders[spec.name], fitter.fits[spec.name]
            old = base.states[spec.name] if base is not None else None
            remap = encoder.finish(st, fit) if old is None else encoder.grow(st, fit, old)
            if remap is not None:
                remaps[spec.name] = remap
            st.offset = offset
            offset += st.size
        self.fitted = True
        log.info("fitted %d fields on %d rows: %d embedding rows", len(self.states), fitter.rows_counted, offset)
        return remaps

    def _resolve(self, train_rows: int) -> None:
        """The schema's "auto" settings made concrete for ``train_rows`` (Schema.resolved):
        the fitted pipeline, and the bundle that saves it, record the numbers it used."""
        schema = self.schema.resolved(train_rows)
        if schema == self.schema:
            return
        self.schema = schema
        for f in schema.fields:
            self.states[f.name].spec = f
        # The encoders hold no fitted state (that is in the states and the fitter's fits).
        self.encoders = {f.name: encoder_for(f) for f in schema.fields}

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
            error = functools.partial(_chunk_error, chunk, spec.name)
            ids[:, j], scale = self.encoders[spec.name].encode(chunk, self.states[spec.name], error)
            if scale is not None:
                values[:, v] = scale
                v += 1
        multi = [self.encoders[f.name].encode_bags(chunk, self.states[f.name]) for f in self.multi_hot_fields]
        labels = to_label(chunk, self.schema.label) if with_labels else None
        return EncodedChunk(ids=ids, values=values, multi_hot=multi, labels=labels)

    def _encode_spilled(self, fitter: Fitter, i: int, remaps: dict[str, np.ndarray]) -> EncodedChunk:
        """Encode chunk ``i`` of ``fitter``'s spill, as :meth:`encode` would encode its rows (ids
        as ``id_dtype``: int32 halves the bytes written while every id fits)."""
        chunk = fitter.spilled(i)
        singles = self.single_fields
        # Field-major while filling (each gather writes contiguous memory), transposed once.
        ids_t: np.ndarray = np.empty((len(singles), chunk.rows), dtype=self.id_dtype)
        values = np.empty((chunk.rows, len(self.scaled_positions)), dtype=np.float32)
        v = 0
        for j, spec in enumerate(singles):
            name = spec.name
            encoder, fit, st = self.encoders[name], fitter.fits[name], self.states[name]
            scale = encoder.encode_spilled(fit, chunk, st, remaps.get(name), out=ids_t[j])
            if scale is not None:
                values[:, v] = scale
                v += 1
        multi = [
            self.encoders[f.name].encode_spilled_bags(
                fitter.fits[f.name], chunk, self.states[f.name], remaps.get(f.name)
            )
            for f in self.multi_hot_fields
        ]
        return EncodedChunk(
            ids=np.ascontiguousarray(ids_t.T), values=values, multi_hot=multi, labels=chunk.get("label")
        )

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
        names: list[np.ndarray] = []
        keys: list[pa.Array] = []
        cnts: list[np.ndarray] = []
        for f in self.schema.fields:
            st = self.states[f.name]
            if st.vocab is None or st.counts is None:
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
            raise BundleError(
                f"{folder}: pipeline.json or vocab.arrow is not what this deepfm wrote ({exc!r})"
            ) from None

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
                st.vocab = pipe.encoders[saved["name"]].load_vocab(keys)
                st.counts = rows.column("count").to_numpy()
                if len(st.vocab) != saved["vocab_size"]:
                    raise BundleError(f"{folder}: vocab.arrow does not match pipeline.json for {saved['name']!r}")
        pipe.fitted = True
        return pipe


def _chunk_error(chunk: Chunk, field: str, row: int, message: str) -> DataError:
    return chunk.error(row, message, field=field)
