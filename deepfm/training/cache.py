"""The encoded-data cache: the parts a run encoded, kept for later runs on the same data.

An entry is a folder named by a digest of everything encoding depends on: the files (path,
size, modification time; every file of a dataset), their roles, the schema, the reading options, the split, a warm
start's base model, the cache format and the code of :mod:`deepfm.data` and
:mod:`deepfm.features`. It holds the fitted pipeline and the encoded parts; ``complete.json``
is written last and the folder renamed into place, so a reader sees a whole entry or none.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

import deepfm.data
import deepfm.features
from deepfm.config import RunConfig
from deepfm.data.column_split import ColumnSplit
from deepfm.data.encoded import EncodedDataset
from deepfm.data.storage import DataSpec, FileRef, data_identity
from deepfm.errors import DataError
from deepfm.features.pipeline import FeaturePipeline
from deepfm.training.distributed import Context
from deepfm.training.parts import Parts, prepare, prepare_ranked

log = logging.getLogger(__name__)
CACHE_FORMAT = 2  # bump when the encoded layout changes (CHANGELOG.md: cache formats)


def default_cache_dir() -> Path:
    """Where encoded data is kept between runs: $DEEPFM_CACHE_DIR or ~/.cache/deepfm/encoded."""
    env = os.environ.get("DEEPFM_CACHE_DIR")
    return Path(env) if env else Path.home() / ".cache" / "deepfm" / "encoded"


def prepare_cached(
    config: RunConfig,
    data: DataSpec,
    cache_dir: Path,
    valid: DataSpec | None = None,
    test: DataSpec | None = None,
    split: tuple[float, float, float] | None = None,
    base: FeaturePipeline | None = None,
    base_key: str | None = None,
    split_by: ColumnSplit | None = None,
    ctx: Context | None = None,
    data_files: list[FileRef] | None = None,
) -> tuple[FeaturePipeline, Parts, bool]:
    """:func:`~deepfm.training.parts.prepare`, reusing the encoded data of an earlier run on
    the same files (path, size, modification time), schema, reading options, split and
    ``base`` (named by ``base_key``, a digest of the bundle it came from). Returns
    (pipeline, parts, hit).

    ``ctx``: every rank of it calls this, and they prepare the data together
    (:func:`~deepfm.training.parts.prepare_ranked`); ``cache_dir`` must be one they all see.
    ``data_files``: ``data``'s files when listed already, for prepare_ranked to share out."""
    if base is not None and base_key is None:
        raise ValueError("prepare_cached with a base pipeline needs its base_key")
    files = [p for p in (data, valid, test) if p is not None]
    # A dataset: every one of its files; those listed already are the ones the key names (a
    # second listing could differ from the files shared out, and costs a walk of a bucket).
    first = data_identity(data, data_files)
    identities = [first, *(data_identity(p) for p in files[1:])]
    for p, found in zip(files, identities):
        if found is None:
            raise DataError("file not found", path=str(p))
    identity = {
        "format": CACHE_FORMAT,
        "code": _encoder_version(),
        "files": identities,
        "roles": [valid is not None, test is not None],
        "schema": config.schema.to_dict(),
        "data": dataclasses.asdict(config.data),
        "split": split,
        "split_by": dataclasses.asdict(split_by) if split_by is not None else None,
        "base": base_key,
    }
    if ctx is not None:  # quantile edges come from another sample: an entry of its own
        identity["ranks"] = ctx.world
    key = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:24]
    folder = cache_dir / key
    if ctx is not None:
        return _prepare_together(
            folder, identity, ctx, lambda tmp: prepare_ranked(config, data, tmp, ctx, valid, test, split, data_files)
        )
    if (folder / "complete.json").is_file():
        try:
            return (*_load_prepared(folder), True)
        except Exception as exc:  # a damaged cache entry is rebuilt, never trusted
            log.warning("cache entry %s is unreadable (%s): encoding again", folder, exc)
            shutil.rmtree(folder, ignore_errors=True)
    _fill(folder, identity, lambda tmp: prepare(config, data, tmp, valid, test, split, base, split_by))
    log.info("encoded data cached in %s", folder)
    return (*_load_prepared(folder), False)


def _fill(folder: Path, identity: dict[str, Any], encode: Any) -> None:
    """Encode into a temporary folder beside ``folder`` and rename it into place."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}-", dir=folder.parent))
    try:
        pipeline, parts = encode(tmp)
        pipeline.save(tmp)
        done = {"skipped_rows": parts.skipped_rows, "rows_read": parts.rows_read, "identity": identity}
        (tmp / "complete.json").write_text(json.dumps(done))
        del parts
        try:
            os.replace(tmp, folder)  # atomic: a reader sees a whole entry or none
        except OSError:  # another run finished the same entry first
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _prepare_together(
    folder: Path, identity: dict[str, Any], ctx: Context, encode: Any
) -> tuple[FeaturePipeline, Parts, bool]:
    """The entry in ``folder``, found by rank 0 or filled by every rank together in a shared
    temporary folder beside it, which rank 0 renames into place. -> (pipeline, parts, hit)"""
    hit = (folder / "complete.json").is_file() if ctx.main else False
    hit = bool(ctx.gather_arrays(np.array([hit]))[0][0])  # rank 0's word: every rank takes the same path
    if not hit:
        tmp = folder.parent / f".{folder.name}-ranks"
        if ctx.main:
            shutil.rmtree(tmp, ignore_errors=True)  # a run killed while filling it
            tmp.mkdir(parents=True)
        ctx.wait_for_main()
        pipeline, parts = encode(tmp)
        if ctx.main:
            pipeline.save(tmp)
            done = {"skipped_rows": parts.skipped_rows, "rows_read": parts.rows_read, "identity": identity}
            (tmp / "complete.json").write_text(json.dumps(done))
            del parts
            os.replace(tmp, folder)
            log.info("encoded data cached in %s (by %d ranks)", folder, ctx.world)
        ctx.wait_for_main()
    return (*_load_prepared(folder), hit)


@functools.lru_cache(maxsize=1)
def _encoder_version() -> str:
    """A digest of the code that reads, fits and encodes (every module of deepfm.data and
    deepfm.features): a cache entry never outlives a change to it."""
    h = hashlib.sha256()
    for package in (deepfm.data, deepfm.features):
        for path in sorted(Path(package.__file__ or "").parent.glob("*.py")):
            h.update(path.name.encode() + b"\0" + path.read_bytes())
    return h.hexdigest()[:16]


def _load_prepared(folder: Path) -> tuple[FeaturePipeline, Parts]:
    done = json.loads((folder / "complete.json").read_text())
    parts = {
        k: EncodedDataset(folder / k) if (folder / k / "meta.json").is_file() else None
        for k in ("train", "valid", "test")
    }
    train_part = parts["train"]
    if train_part is None:
        raise DataError(f"cache entry {folder} has no training part")
    return FeaturePipeline.load(folder), Parts(
        train_part, parts["valid"], parts["test"], done["skipped_rows"], done["rows_read"]
    )
