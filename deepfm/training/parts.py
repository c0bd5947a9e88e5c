"""Data preparation: fit the FeaturePipeline on the training rows and encode every part.

One parse of the data file fits the pipeline on the training part of the split and encodes
every row into its part (:meth:`FeaturePipeline.fit_encode`); separate valid and test files
are encoded after. Each part is an EncodedDataset folder: memory-mapped arrays, so the size
of the data is bounded by the disk, not the memory. :mod:`deepfm.training.cache` keeps the
parts between runs.
"""

from __future__ import annotations

import functools
import logging
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from deepfm.config import RunConfig
from deepfm.data.column_split import ColumnSplit
from deepfm.data.dataset import DatasetReader
from deepfm.data.encoded import DatasetWriter, EncodedDataset
from deepfm.data.parquet import ParquetReader
from deepfm.data.readers import guess_format, open_reader
from deepfm.data.source import Chunk, Reader, ReadOptions
from deepfm.data.storage import DataSpec, FileRef, is_dataset, list_files
from deepfm.errors import ConfigError, DataError
from deepfm.features.counting import Gather
from deepfm.features.pipeline import FeaturePipeline
from deepfm.training.distributed import Context
from deepfm.training.ranks import join_shares

log = logging.getLogger(__name__)


@dataclass
class Parts:
    """Encoded data parts. valid/test may be absent."""

    train: EncodedDataset
    valid: EncodedDataset | None = None
    test: EncodedDataset | None = None
    skipped_rows: int = 0
    rows_read: int = 0  # rows of every input file, fitted and encoded


class _Split:
    """The row ranges of the parts of one file, decided once the parse has counted its rows:
    no counting pass first. Without fractions every row is a training row."""

    def __init__(self, split: tuple[float, float, float] | None, data: DataSpec) -> None:
        self.split, self.data = split, data
        self.bounds: dict[str, tuple[int, int]] = {}

    def __call__(self, n: int) -> int:
        """The rows to fit on, of the ``n`` rows read; sets the bounds of every part."""
        split = self.split
        if split is None:
            self.bounds["train"] = (0, n)
            return n
        n_train, n_valid = int(round(split[0] * n)), int(round(split[1] * n))
        if n_train == 0:
            raise DataError(f"the training part of --split is empty ({n} rows)", path=str(self.data))
        self.bounds["train"] = (0, n_train)
        self.bounds["valid"] = (n_train, n_train + n_valid if split[2] > 0 else n)
        if split[2] > 0:
            self.bounds["test"] = (n_train + n_valid, n)
        log.info(
            "split %s by row order: train %d, valid %d, test %d rows",
            self.data,
            n_train,
            n_valid,
            n - n_train - n_valid,
        )
        return n_train


class _RankSplit:
    """A :class:`_Split` of all ranks' rows, seen from one rank: this rank's rows are rows
    [row0, row0 + n) of the whole (the ranks hold consecutive files, in rank order)."""

    def __init__(self, split: _Split, gather: Gather, rank: int) -> None:
        self.split, self.gather, self.rank = split, gather, rank
        self.bounds: dict[str, tuple[int, int]] = {}  # in this rank's rows
        self.parts: list[str] = []  # the parts that hold rows (on any rank)

    def __call__(self, n: int) -> int:
        """This rank's rows to fit on, of its ``n`` (collective: the ranks' counts are exchanged)."""
        counts = [int(k[0]) for k in self.gather(np.array([n], dtype=np.int64))]
        row0, n_fit = sum(counts[: self.rank]), self.split(sum(counts))
        self.parts = [name for name, (lo, hi) in self.split.bounds.items() if hi > lo]
        self.bounds = {
            k: (min(max(lo - row0, 0), n), min(max(hi - row0, 0), n)) for k, (lo, hi) in self.split.bounds.items()
        }
        return min(max(n_fit - row0, 0), n)


def can_prepare_on_ranks(
    data: DataSpec,
    world: int,
    split_by: ColumnSplit | None,
    base: bool,
    options: ReadOptions = ReadOptions(),
    files: list[FileRef] | None = None,
) -> bool:
    """Whether ``world`` ranks can prepare ``data`` together (:func:`prepare_ranked`): a
    dataset of at least one file per rank, or a Parquet file of at least one row group per
    rank; split by row order or not at all; no warm start. ``files``: the dataset's files,
    when the caller listed them (see :func:`prepare_ranked`)."""
    if world <= 1 or split_by is not None or base:
        return False
    if is_dataset(data):
        return len(list_files(data) if files is None else files) >= world
    reader = _parquet(data, options)
    return reader is not None and reader.num_row_groups >= world


def _parquet(data: DataSpec, options: ReadOptions) -> ParquetReader | None:
    """``data``'s reader when it is one Parquet file (told by the format or its first bytes)."""
    ref = FileRef(str(data), str(data))
    if options.format not in ("auto", "parquet") or (options.format == "auto" and guess_format(ref) != "parquet"):
        return None
    reader = open_reader(ref, options)
    return reader if isinstance(reader, ParquetReader) else None


def _rank_reader(config: RunConfig, data: DataSpec, ctx: Context, files: list[FileRef] | None = None) -> Reader:
    """What this rank reads of ``data``: its consecutive share of the files (``files``, when
    listed already), or of the row groups of one Parquet file."""
    if not is_dataset(data):
        reader = open_reader(data, config.data, column_names=config.schema.columns)
        if not isinstance(reader, ParquetReader):
            raise DataError("ranks prepare together a dataset of files, or a Parquet file", path=str(data))
        return reader.share_of_row_groups(ctx.rank, ctx.world)
    files = list_files(data) if files is None else files
    opener = functools.partial(open_reader, options=config.data, column_names=config.schema.columns)
    return DatasetReader(files[ctx.share(len(files))], opener, f"{data} (rank {ctx.rank} of {ctx.world})")


def prepare_ranked(
    config: RunConfig,
    data: DataSpec,
    workdir: Path,
    ctx: Context,
    valid: DataSpec | None = None,
    test: DataSpec | None = None,
    split: tuple[float, float, float] | None = None,
    files: list[FileRef] | None = None,
) -> tuple[FeaturePipeline, Parts]:
    """:func:`prepare` by every rank of ``ctx`` at once (collective), into the shared ``workdir``.
    Each rank parses its own consecutive share of the dataset's files (or of the row groups
    of one Parquet file) and counts their training rows; the counts are merged (vocabularies, bins, numeric moments and samples);
    each rank encodes its rows and writes them into the parts at their place. The parts and
    vocabularies are those of :func:`prepare` (quantile bin edges: from another uniform
    sample of the same rows). Separate valid and test files are each encoded by one rank.
    ``files``: the dataset's files as :func:`can_prepare_on_ranks` counted them, so the shares
    are of that list (a listing again could differ, and costs a walk of a bucket)."""
    schema, columns = config.schema, [config.schema.label, *config.schema.names]
    _check_split(split, None, valid, test)
    reader = _rank_reader(config, data, ctx, files)
    reader.check_columns(columns)
    pipeline = FeaturePipeline(schema)
    rank_split = _RankSplit(_Split(split, data), ctx.gather_arrays, ctx.rank)
    local = workdir / f"rank-{ctx.rank}"
    shares = _fit_encode(pipeline, reader, columns, rank_split, local, None, ranks=(ctx.gather_arrays, ctx.rank))
    parts: dict[str, EncodedDataset | None] = {"train": None, "valid": None, "test": None}
    for name in rank_split.parts:
        if shares[name] is None:  # no rows of this part here: an empty share keeps the exchanges in step
            _writer(pipeline, local / name).close()
        parts[name] = join_shares(local / name, workdir / name, ctx)
    skipped = reader.skipped
    for k, (name, path) in enumerate((n, p) for n, p in (("valid", valid), ("test", test)) if p is not None):
        if k % ctx.world == ctx.rank:
            skipped += _encode_file(pipeline, config, path, columns, workdir / name)[1]
        ctx.wait_for_main()
        parts[name] = EncodedDataset(workdir / name)
    skipped = int(np.sum(ctx.gather_arrays(np.array([skipped], dtype=np.int64))))
    train_part = parts["train"]
    assert train_part is not None
    rows_read = sum(len(p) for p in parts.values() if p is not None) + skipped
    return pipeline, Parts(train_part, parts["valid"], parts["test"], skipped, rows_read)


def prepare(
    config: RunConfig,
    data: DataSpec,
    workdir: Path,
    valid: DataSpec | None = None,
    test: DataSpec | None = None,
    split: tuple[float, float, float] | None = None,
    base: FeaturePipeline | None = None,
    split_by: ColumnSplit | None = None,
) -> tuple[FeaturePipeline, Parts]:
    """Fit the pipeline on the training rows and encode every part into ``workdir``.
    ``base``: grow that fitted pipeline instead of fitting afresh (warm start). ``split_by``:
    split ``data`` by a column's value (time) instead of by row order."""
    schema = config.schema
    columns = [schema.label, *schema.names]
    reader = open_reader(data, config.data, column_names=schema.columns)
    reader.check_columns(columns)
    _check_split(split, split_by, valid, test)
    pipeline = FeaturePipeline(schema)
    if split_by is not None:
        parts = split_encode(pipeline, reader, columns, split_by, workdir, base)
    else:
        parts = _fit_encode(pipeline, reader, columns, _Split(split, data), workdir, base)
    skipped = reader.skipped
    for name, path in (("valid", valid), ("test", test)):
        if path is not None:
            parts[name], skipped_here = _encode_file(pipeline, config, path, columns, workdir / name)
            skipped += skipped_here
    if skipped:
        log.warning("skipped %d bad rows (on_bad_row=skip)", skipped)
    train_part = parts["train"]
    assert train_part is not None
    rows_read = sum(len(p) for p in parts.values() if p is not None) + skipped
    return pipeline, Parts(train_part, parts["valid"], parts["test"], skipped, rows_read)


def _check_split(
    split: tuple[float, float, float] | None,
    split_by: ColumnSplit | None,
    valid: DataSpec | None,
    test: DataSpec | None,
) -> None:
    if split is not None and split_by is not None:
        raise ConfigError("give either --split or --split-by, not both")
    if (split is not None or split_by is not None) and valid is not None:
        raise ConfigError(f"give either {'--split' if split_by is None else '--split-by'} or a --valid file, not both")
    if split is not None and split[2] > 0 and test is not None:
        raise ConfigError("--split already makes a test part; leave out --test or give two fractions")
    if split_by is not None and split_by.test_from is not None and test is not None:
        raise ConfigError("--test-from already makes a test part; leave out --test or --test-from")


def _writer(pipeline: FeaturePipeline, folder: Path) -> DatasetWriter:
    n_single, n_values, n_multi = (
        len(pipeline.single_fields),
        len(pipeline.scaled_positions),
        len(pipeline.multi_hot_fields),
    )
    return DatasetWriter(folder, n_single, n_values, n_multi, id_dtype=pipeline.id_dtype)


def _fit_encode(
    pipeline: FeaturePipeline,
    reader: Reader,
    columns: list[str],
    split: _Split | _RankSplit,
    workdir: Path,
    base: FeaturePipeline | None,
    ranks: tuple[Gather, int] | None = None,
) -> dict[str, EncodedDataset | None]:
    """One parse of the file: fit on the training rows, encode every row into its part.
    ``ranks``: fit together with the other ranks (see :func:`prepare_ranked`)."""
    writers: dict[str, DatasetWriter] = {}
    chunks = reader.chunks(columns, pipeline.schema.numeric_columns)
    for row0, enc in pipeline.fit_encode(chunks, split, workdir / "spill", base=base, ranks=ranks):
        if not writers:  # the pipeline is fitted: its size is known
            writers = {k: _writer(pipeline, workdir / k) for k, (lo, hi) in split.bounds.items() if hi > lo}
        for name, (lo, hi) in split.bounds.items():
            a, b = max(lo, row0), min(hi, row0 + len(enc))
            if b > a and name in writers:
                writers[name].append(enc, slice(a - row0, b - row0))
    shutil.rmtree(workdir / "spill", ignore_errors=True)
    parts: dict[str, EncodedDataset | None] = {"train": None, "valid": None, "test": None}
    parts.update({k: w.close() for k, w in writers.items()})
    return parts


def _encode_file(
    pipeline: FeaturePipeline, config: RunConfig, path: DataSpec, columns: list[str], folder: Path
) -> tuple[EncodedDataset, int]:
    """A whole file encoded by the fitted pipeline into ``folder``: (the part, rows skipped)."""
    reader = open_reader(path, config.data, column_names=config.schema.columns)
    reader.check_columns(columns)
    writer = _writer(pipeline, folder)
    for chunk in reader.chunks(columns, config.schema.numeric_columns):
        writer.append(pipeline.encode(chunk))
    return writer.close(), reader.skipped


def split_encode(
    pipeline: FeaturePipeline,
    reader: Reader,
    columns: list[str],
    split_by: ColumnSplit,
    workdir: Path,
    base: FeaturePipeline | None,
) -> dict[str, EncodedDataset | None]:
    """A split by a column's value: fit on the training rows (one pass), then encode every
    row into its part (a second pass). Each part keeps the input's row order."""
    read = columns if split_by.column in columns else [*columns, split_by.column]
    reader.check_columns([split_by.column], what="--split-by")
    numeric = pipeline.schema.numeric_columns

    def part_of(code: int) -> Iterator[Chunk]:
        for chunk in reader.chunks(read, numeric):
            rows = np.flatnonzero(split_by.assign(chunk) == code)
            if rows.size:
                yield split_by.subset(chunk, rows)

    pipeline.fit(part_of(0), base=base)
    writers: dict[str, DatasetWriter] = {}
    for chunk in reader.chunks(read, numeric):
        part = split_by.assign(chunk)
        for code, name in enumerate(split_by.parts):
            rows = np.flatnonzero(part == code)
            if rows.size:
                if name not in writers:  # opening a writer truncates its files: once a part
                    writers[name] = _writer(pipeline, workdir / name)
                writers[name].append(pipeline.encode(split_by.subset(chunk, rows)))
    empty = [name for name in split_by.parts if name not in writers]
    if empty:
        raise DataError(
            f"--split-by {split_by.column} leaves the {' and '.join(empty)} part(s) empty "
            f"(--valid-from {split_by.valid_from}, --test-from {split_by.test_from})",
            path=reader.name,
        )
    parts: dict[str, EncodedDataset | None] = {"train": None, "valid": None, "test": None}
    parts.update({k: w.close() for k, w in writers.items()})
    return parts
