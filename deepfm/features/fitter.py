"""The fitting pass: every chunk counted by its fields' encoders, once.

With a :class:`~deepfm.features.counting.Spill`, the pass also keeps each chunk's per-row
indices and values, so :meth:`Fitter.limit` can take back what rows past the training part
counted (a split by fractions needs no counting pass first), and the pipeline can encode every
row afterwards without parsing the file again.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np

from deepfm.data.columns import to_label
from deepfm.data.schema import Schema
from deepfm.data.source import Chunk, Source
from deepfm.errors import DataError
from deepfm.features.counting import BinCounts, Dictionary, Gather, Spill
from deepfm.features.encoders import FieldEncoder, Spilled


class Fitter:
    """Gathers what fitting needs in one pass (see the module docstring): a :class:`FieldFit`
    per field, filled by that field's encoder."""

    def __init__(self, schema: Schema, encoders: dict[str, FieldEncoder], spill: Spill | None, rank: int = 0) -> None:
        self.schema, self.encoders, self.spill = schema, encoders, spill
        # Several ranks: each draws its own sample keys (Reservoir.merge needs them independent);
        # rank 0 keeps the seeds of a one-process fit.
        self.fits = {
            f.name: encoders[f.name].new_fit(
                np.random.default_rng([0, i] if rank == 0 else [0, i, rank]), keep_maps=spill is not None
            )
            for i, f in enumerate(schema.fields)
        }
        self.rows_counted = 0
        self.chunk_rows: list[tuple[int, int]] = []  # (first row, rows) of every chunk counted
        self.readers: list[Source] = []  # where each chunk came from (files of a dataset differ)

    @property
    def counters(self) -> list[Dictionary | BinCounts]:
        """The fields' value counters (the caller may finish them on several threads)."""
        return [fit.counter for fit in self.fits.values() if fit.counter is not None]

    def add(self, chunk: Chunk, pool: ThreadPoolExecutor | None = None) -> None:
        """Count every row of ``chunk`` (and spill what encoding it needs). With a ``pool``,
        half the fields are done there meanwhile: Arrow and NumPy release the GIL for the
        heavy parts."""
        n = chunk.table.num_rows
        self.rows_counted += n
        self.chunk_rows.append((chunk.row0, n))
        self.readers.append(chunk.reader)
        fields = list(enumerate(self.schema.fields))

        def run(part: list[tuple[int, str]]) -> tuple[int, Exception] | None:
            """The first failure (field index, error), if any."""
            for k, name in part:
                try:
                    self.encoders[name].count(self.fits[name], chunk, self.spill)
                except Exception as exc:
                    return k, exc
            return None

        names = [(k, spec.name) for k, spec in fields]
        if pool is None:
            failures = [run(names)]
        else:  # one task per half: fewer hand-overs than one per field
            other = pool.submit(run, names[1::2])
            failures = [run(names[0::2]), other.result()]
        failed = [f for f in failures if f is not None]
        if failed:
            raise min(failed, key=lambda f: f[0])[1]  # the error of the first field, as in order
        if self.spill is not None:
            self.spill.put("label", to_label(chunk, self.schema.label))

    def limit(self, n_fit: int) -> None:
        """Fit on the first ``n_fit`` rows only: take back what later rows counted, reading
        their indices and values back from the spill."""
        assert self.spill is not None
        cut = [(i, min(max(n_fit - row0, 0), n)) for i, (row0, n) in enumerate(self.chunk_rows) if n_fit < row0 + n]
        for name, encoder in self.encoders.items():
            encoder.uncount(self.fits[name], self.spill, cut, n_fit)
        self.rows_counted = min(n_fit, self.rows_counted)

    def merge(self, gather: Gather, rank: int) -> None:
        """Merge what every rank counted on its rows (collective; after :meth:`limit` and the
        counters' finish): vocabulary counts, bin counts, numeric moments and samples, and the
        rows counted. Afterwards every rank fits the same state from the fits."""
        for fit in self.fits.values():  # schema order: the same collectives on every rank
            if isinstance(fit.counter, Dictionary):
                fit.counter.merge(gather, rank)
            elif isinstance(fit.counter, BinCounts):
                fit.counter.merge(gather)
            mine = np.sum(fit.moments, axis=0) if fit.moments else np.zeros(3)
            fit.moments = [np.sum(gather(np.asarray(mine, dtype=np.float64)), axis=0)]
            fit.sample.merge(gather)
        self.rows_counted = int(np.sum(gather(np.array([self.rows_counted], dtype=np.int64))))

    def spilled(self, i: int) -> Spilled:
        """Spilled chunk ``i``, to encode."""
        assert self.spill is not None
        return Spilled(
            self.spill, i, self.chunk_rows[i][1], error=lambda field, row, msg: self._error(i, field, row, msg)
        )

    def _error(self, i: int, field: str, row: int, message: str) -> DataError:
        """An error at ``row`` of spilled chunk ``i``, located in the file it came from."""
        reader = self.readers[i]
        return DataError(message, path=reader.name, line=reader.locate(self.chunk_rows[i][0] + row), field=field)
