"""Preparing the data on every rank at once (deepfm.training.parts.prepare_ranked): 2 gloo
ranks, each parsing its own files of a dataset, merging their counts and writing its rows
into the parts, give the vocabularies and encoded parts of one process preparing them all."""

from __future__ import annotations

import functools
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from deepfm.config import RunConfig
from deepfm.data.schema import FieldSpec, Schema
from deepfm.training.cache import prepare_cached
from deepfm.training.distributed import Context
from deepfm.training.parts import can_prepare_on_ranks, prepare, prepare_ranked

from helpers import simple_records, simple_schema, spawn_ranks, write_records_csv

# Fields of every kind the merge handles: a vocabulary whose min_count 2 keeps values seen once
# on each rank (only the merged counts reach 2), a hashed field, a multi-hot vocabulary, and
# the price as scaled (moments), log bins (bin counts) or quantile bins (samples).
PRICES = {
    "scaled": FieldSpec(name="price", kind="numeric", mode="scaled", transform="log1p_standardize"),
    "log": FieldSpec(name="price", kind="numeric", mode="bucketized", binning="log"),
    "quantile": FieldSpec(name="price", kind="numeric", mode="bucketized", bins=8),
}


def _schema(price: str) -> Schema:
    fields = {f.name: f for f in simple_schema(min_count=2).fields}
    fields["item"] = replace(fields["item"], hash_buckets=16)
    fields["price"] = PRICES[price]
    return replace(simple_schema(), fields=tuple(fields.values()))


def _arrays(parts: Any) -> dict[str, list[torch.Tensor]]:
    """Every part's arrays, as tensors (what spawn_ranks hands back)."""
    out: dict[str, list[torch.Tensor]] = {}
    for name in ("train", "valid", "test"):
        part = getattr(parts, name)
        b = part.batch(slice(0, len(part)))
        out[name] = [b.ids, b.values, b.labels, *[t for bag in b.multi_hot for t in bag]]
    return out


def _states(pipeline: Any) -> dict[str, Any]:
    return {
        name: (
            int(st.offset),
            int(st.size),
            None if st.vocab is None else st.vocab.to_pylist(),
            None if st.counts is None else [int(c) for c in st.counts],
            None if st.edges is None else [float(e) for e in st.edges],
        )
        for name, st in pipeline.states.items()
    }


def _as_parquet(files: list[str], path: Path) -> str:
    """The CSV files' rows as one Parquet file of row groups of 300 rows (written by rank 0)."""
    import pyarrow as pa
    import pyarrow.csv as pv
    import pyarrow.parquet as pq
    import torch.distributed as dist

    if dist.get_rank() == 0:
        pq.write_table(pa.concat_tables([pv.read_csv(f) for f in files]), path, row_group_size=300)
    dist.barrier()
    return str(path)


def _prepare_both(files: list[str], tmp: str, rank: int, world: int) -> dict[str, Any]:
    """prepare_ranked on both ranks, then prepare in one process (rank 0) on every schema."""
    out: dict[str, Any] = {}
    for price in PRICES:
        config = RunConfig(schema=_schema(price))
        pipeline, parts = prepare_ranked(
            config, files, Path(tmp) / price / "ranks", Context(rank, world), split=(0.7, 0.15, 0.15)
        )
        if rank == 0:
            one_pipeline, one_parts = prepare(config, files, Path(tmp) / price / "one", split=(0.7, 0.15, 0.15))
            out[price] = {
                "ranks": (_states(pipeline), _arrays(parts), int(parts.rows_read)),
                "one": (_states(one_pipeline), _arrays(one_parts), int(one_parts.rows_read)),
            }
    # One Parquet file of 7 row groups: rank 0 reads groups 0-2, rank 1 groups 3-6.
    config, parquet = RunConfig(schema=_schema("quantile")), _as_parquet(files, Path(tmp) / "d.parquet")
    pipeline, parts = prepare_ranked(
        config, parquet, Path(tmp) / "parquet" / "ranks", Context(rank, world), split=(0.7, 0.15, 0.15)
    )
    if rank == 0:
        one_pipeline, one_parts = prepare(config, parquet, Path(tmp) / "parquet" / "one", split=(0.7, 0.15, 0.15))
        out["parquet"] = {
            "ranks": (_states(pipeline), _arrays(parts), int(parts.rows_read)),
            "one": (_states(one_pipeline), _arrays(one_parts), int(one_parts.rows_read)),
        }
    # Through the cache: a miss fills one entry together; the next call finds it on every rank.
    config = RunConfig(schema=_schema("log"))
    ctx, cache = Context(rank, world), Path(tmp) / "cache"
    hits = [prepare_cached(config, files, cache, split=(0.7, 0.15, 0.15), ctx=ctx)[2] for _ in range(2)]
    out["cached"] = hits + [len(list(cache.iterdir()))]
    return out


def test_two_ranks_prepare_what_one_process_prepares(tmp_path: Path) -> None:
    # 3 files of unequal length: rank 0 takes 2 of them, rank 1 one; the split's valid part
    # starts inside rank 0's second file and the test part lies wholly on rank 1.
    files = [
        str(write_records_csv(tmp_path / f"d{i}.csv", simple_records(n, seed=i))) for i, n in enumerate((700, 500, 800))
    ]
    got = spawn_ranks(tmp_path, functools.partial(_prepare_both, files, str(tmp_path)))
    assert got.pop("cached") == [False, True, 1]  # one entry, no temporary folder left
    for price, runs in got.items():
        (states, arrays, rows), (one_states, one_arrays, one_rows) = runs["ranks"], runs["one"]
        assert rows == one_rows == 2000
        # The merged counts make the vocabularies, bins and offsets of one process. (Quantile
        # edges too: under RESERVOIR rows, both samples hold every training value.)
        assert states.keys() == one_states.keys()
        for name in states:
            if price == "scaled" and name == "price":  # (price: "parquet" is the quantile schema)
                continue  # mean and std: the ranks' sums add in another order
            assert states[name] == one_states[name], (price, name)
        for part, (a, b) in ((k, (arrays[k], one_arrays[k])) for k in arrays):
            assert len(a) == len(b) and a[0].shape[0] > 0, (price, part)
            for x, y in zip(a, b):
                if x.is_floating_point() and price == "scaled":  # standardized by those sums
                    assert torch.allclose(x, y, rtol=1e-6, atol=1e-6), (price, part)
                else:
                    assert torch.equal(x, y), (price, part)


def test_which_data_the_ranks_can_prepare_together(tmp_path: Path) -> None:
    import pyarrow.csv as pv
    import pyarrow.parquet as pq

    files = [str(write_records_csv(tmp_path / f"d{i}.csv", simple_records(20, seed=i))) for i in range(2)]
    pq.write_table(pv.read_csv(files[0]), tmp_path / "d.parquet", row_group_size=5)  # 4 row groups
    assert can_prepare_on_ranks(str(tmp_path / "d.parquet"), 4, None, base=False)
    assert not can_prepare_on_ranks(str(tmp_path / "d.parquet"), 5, None, base=False)
    assert can_prepare_on_ranks(files, 2, None, base=False)
    assert not can_prepare_on_ranks(files, 3, None, base=False)  # a rank without a file
    assert not can_prepare_on_ranks(files[0], 2, None, base=False)  # one file: read by one rank
    assert not can_prepare_on_ranks(files, 2, None, base=True)  # a warm start grows its base
    assert not can_prepare_on_ranks(files, 1, None, base=False)


def test_train_nproc_2_prepares_a_dataset_on_both_ranks(tmp_path: Path) -> None:
    """deepfm train --nproc 2 on a folder of 2 files: the ranks fill one cache entry together,
    and the bundle's fitted pipeline is that of a 1-process run on the same files."""
    import json
    import os
    import subprocess
    import sys

    import yaml

    from deepfm.bundle import Bundle
    from deepfm.training import train

    from helpers import REPO, small_config

    folder = tmp_path / "data"
    folder.mkdir()
    for i, n in enumerate((900, 700)):
        write_records_csv(folder / f"d{i}.csv", simple_records(n, seed=10 + i))
    config = small_config(_schema("quantile"), epochs=1)
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump(config.to_dict()))
    command = [sys.executable, "-m", "deepfm", "train", "--config", str(cfg), "--data", str(folder)]
    command += ["--split", "0.8,0.2", "--out", str(tmp_path / "two"), "--cache-dir", str(tmp_path / "cache")]
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    done = subprocess.run([*command, "--nproc", "2", "--quiet"], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    entries = [json.loads(p.read_text()) for p in (tmp_path / "cache").glob("*/complete.json")]
    # an entry of 2 ranks preparing together (rank 0 alone would have made the 1-process key)
    assert len(entries) == 1 and entries[0]["identity"]["ranks"] == 2 and entries[0]["rows_read"] == 1600
    assert not list((tmp_path / "cache").glob(".*"))  # no shared temporary folder left behind
    metrics = json.loads((tmp_path / "two" / "metrics.json").read_text())
    assert metrics["preprocess_cache"] == "miss" and metrics["train_rows"] == 1280
    one = train(config, str(folder), tmp_path / "one", split="0.8,0.2", cache=False)
    two = Bundle.load(tmp_path / "two")
    assert _states(two.pipeline) == _states(one.pipeline)


def test_the_ranks_share_out_the_files_listed_once(tmp_path: Path, monkeypatch: Any) -> None:
    """The dataset's files counted to decide whether the ranks prepare together are the ones
    shared out among them: listed once, not again by each step."""
    from deepfm.data.storage import list_files
    from deepfm.training import parts

    from helpers import small_config

    data = [str(write_records_csv(tmp_path / f"d{i}.csv", simple_records(10, seed=i))) for i in range(3)]
    listed = list_files(data)

    def listed_again(spec: Any) -> Any:
        raise AssertionError(f"the files of {spec} were listed again")

    monkeypatch.setattr(parts, "list_files", listed_again)
    assert parts.can_prepare_on_ranks(data, 2, None, base=False, files=listed)
    assert not parts.can_prepare_on_ranks(data, 4, None, base=False, files=listed)
    shares = [parts._rank_reader(small_config(simple_schema()), data, Context(rank, 2), listed) for rank in (0, 1)]
    assert [r.name for s in shares for r in s.readers] == [f.name for f in listed]
    # The cache key names the listed files too, not a listing of its own.
    from deepfm.data import storage

    monkeypatch.setattr(storage, "list_files", listed_again)
    prepare_cached(small_config(simple_schema()), data, tmp_path / "cache", split=(0.6, 0.2, 0.2), data_files=listed)
