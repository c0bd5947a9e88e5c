"""Test helpers: tiny generated data with a planted signal, small fast configs, score checks.

Everything here is generated with NumPy from a seed, so tests never depend on files on disk
(except the optional real Criteo sample, which its test skips when absent). Tests import them
with ``from helpers import ...`` (pytest puts tests/ on the path); conftest.py holds the fixtures.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from deepfm.config import ModelConfig, RunConfig, TrainConfig
from deepfm.data.schema import CRITEO_COLUMNS, FieldSpec, Schema
from deepfm.data.source import ReadOptions
from deepfm.data.tables import TableSource
from deepfm.training.distributed import Context

REPO = Path(__file__).resolve().parents[1]
CRITEO_SAMPLE = Path(__file__).resolve().parents[2] / "shared" / "data" / "criteo" / "criteo_sampled_data_10k.csv"


# ---------------------------------------------------------------- comparing scores
# How far apart two float32 forward passes of the same input may land. A record scored at
# another batch position, or in a batch of another size, goes through another BLAS kernel
# path (MKL's AVX-512 GEMM handles the rows past its block size in a remainder loop that sums
# in another order), so each layer may round a few float32 ulps (2^-23 ~ 1.2e-7 relative)
# differently. 1e-5 relative is ~100 ulps: it absorbs that on any x86 CPU and is still far
# below what a different input moves a score by.
FLOAT32_RTOL, FLOAT32_ATOL = 1e-5, 1e-7


def assert_scores_close(got: Any, want: Any, what: str) -> None:
    """Scores of the same inputs computed at other batch positions or in other batch sizes:
    equal at float32 tolerance (FLOAT32_RTOL), not bit for bit."""
    np.testing.assert_allclose(
        got,
        want,
        rtol=FLOAT32_RTOL,
        atol=FLOAT32_ATOL,
        err_msg=f"{what}: same inputs, other batch positions or sizes, compared at float32 tolerance",
    )


def assert_scores_differ(a: float, b: float, what: str) -> None:
    """Scores of different inputs: further apart than float32 rounding can move them."""
    assert not np.isclose(a, b, rtol=FLOAT32_RTOL, atol=FLOAT32_ATOL), f"{what}: {a} and {b} should differ"


def assert_identical_scores(got: Any, want: Any, why: str) -> None:
    """Scores of an identical computation (same rows, same batch shapes, same thread count):
    equal bit for bit on any CPU, since the same kernels then run in the same order."""
    np.testing.assert_array_equal(got, want, err_msg=f"identical computation expected: {why}")


def encoded_rows(predictor: Any, records: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
    """Each record as the model sees it, through ``predictor``'s checks and fitted pipeline:
    (ids, values, every multi-hot bag's ids) as plain tuples, for exact comparison of inputs."""
    table = predictor.records_table(records)
    chunk = predictor.pipeline.encode(
        next(TableSource(table).chunks(predictor.schema.names, len(records))), with_labels=False
    )
    rows = []
    for r in range(len(chunk)):
        bags = tuple(tuple(ids[offsets[r] : offsets[r + 1]].tolist()) for offsets, ids in chunk.multi_hot)
        rows.append((tuple(chunk.ids[r].tolist()), tuple(chunk.values[r].tolist()), bags))
    return rows


# ---------------------------------------------------------------- configs
def small_model(kind: str = "deepfm", **kw: Any) -> ModelConfig:
    """A model that trains in well under a second on a few thousand rows."""
    base: dict[str, Any] = dict(kind=kind, embedding_dim=4, hidden=(16,), dropout=0.0)
    base.update(kw)
    return ModelConfig(**base)


def small_train(**kw: Any) -> TrainConfig:
    base: dict[str, Any] = dict(progress=False, epochs=2, threads=1, device="cpu", lr=0.01, embedding_lr=0.01, seed=7)
    base.update(kw)
    return TrainConfig(**base)


def small_config(
    schema: Schema, model: dict[str, Any] | None = None, data: ReadOptions | None = None, **train: Any
) -> RunConfig:
    return RunConfig(
        schema=schema,
        model=small_model(**(model or {})),
        train=small_train(**train),
        data=data or ReadOptions(),
    )


def nan_loss_at_step(monkeypatch: pytest.MonkeyPatch, step: int) -> Any:
    """Make the Trainer's ``step``-th step (counted from this call) return a NaN loss, as a
    diverging run would; training then stops and keeps its last good checkpoint. Returns the
    real step, to put back before resuming."""
    from deepfm.training import Trainer

    real_step = Trainer.step
    calls = {"n": 0}

    def nan_step(self: Trainer, batch: Any, global_rows: int) -> Any:
        logit, loss = real_step(self, batch, global_rows)
        calls["n"] += 1
        return logit, loss * float("nan") if calls["n"] == step else loss

    monkeypatch.setattr(Trainer, "step", nan_step)
    return real_step


# ---------------------------------------------------------------- Criteo-like data
def _hex(rng: np.random.Generator, n: int) -> list[str]:
    return [f"{int(v):08x}" for v in rng.integers(0, 2**32, size=n, dtype=np.uint64)]


def criteo_rows(n: int, seed: int = 0, missing: float = 0.1) -> list[list[str]]:
    """Rows in Criteo's layout (label, I1..I13, C1..C26) as strings; empty string = missing.

    Planted signal: C1 and C2 come from small vocabularies with a per-value effect, I1 adds
    a monotone effect; the other columns are noise. A model that learns gets AUC well above 0.5.
    """
    rng = np.random.default_rng(seed)
    vocab_rng = np.random.default_rng(12345)  # the same vocabularies for every seed
    c1_vocab, c2_vocab = _hex(vocab_rng, 12), _hex(vocab_rng, 8)
    c1_eff = np.linspace(-2.0, 2.0, 12)
    c2_eff = np.linspace(-1.5, 1.5, 8)
    noise_vocabs = [_hex(vocab_rng, 30) for _ in range(24)]

    c1 = rng.integers(0, 12, n)
    c2 = rng.integers(0, 8, n)
    ints = rng.geometric(0.15, size=(n, 13)) - 1  # non-negative counts, heavy-ish tail
    logit = -1.0 + c1_eff[c1] + c2_eff[c2] + 0.15 * np.minimum(ints[:, 0], 10) - 0.5
    y = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(int)
    noise = [rng.integers(0, 30, n) for _ in range(24)]
    miss_i = rng.random((n, 13)) < missing
    miss_c = rng.random((n, 24)) < missing
    rows = []
    for r in range(n):
        row = [str(y[r])]
        row += ["" if miss_i[r, k] else str(int(ints[r, k])) for k in range(13)]
        row += [c1_vocab[c1[r]], c2_vocab[c2[r]]]
        row += ["" if miss_c[r, k] else noise_vocabs[k][noise[k][r]] for k in range(24)]
        rows.append(row)
    return rows


def write_rows(
    path: Path, rows: list[list[str]], header: list[str] | tuple[str, ...] | None = None, delimiter: str = ","
) -> Path:
    with open(path, "w", newline="") as f:
        w = csv.writer(f, delimiter=delimiter, lineterminator="\n")
        if header is not None:
            w.writerow(header)
        w.writerows(rows)
    return path


def write_criteo_tsv(path: Path, n: int, seed: int = 0, header: bool = False) -> Path:
    return write_rows(path, criteo_rows(n, seed), list(CRITEO_COLUMNS) if header else None, "\t")


# ---------------------------------------------------------------- a small table with every field kind
SIMPLE_FIELDS = ("user", "item", "price", "tags")


def simple_records(n: int, seed: int = 0) -> list[dict[str, Any]]:
    """Records with a categorical 'user' and 'item', a numeric 'price' and a multi-hot 'tags',
    with a planted signal in item and tags. ``None`` marks a missing value."""
    rng = np.random.default_rng(seed)
    items = [f"item{i}" for i in range(10)]
    tags = ["red", "green", "blue", "big", "small"]
    tag_eff = {"red": 1.5, "green": -1.5, "blue": 0.0, "big": 0.8, "small": -0.8}
    item_eff = np.linspace(-2, 2, 10)
    out = []
    for _ in range(n):
        it = int(rng.integers(0, 10))
        k = int(rng.integers(0, 3))
        tg = list(rng.choice(tags, size=k, replace=False)) if k else []
        price = float(np.round(rng.lognormal(2.0, 1.0), 3))
        logit = item_eff[it] + sum(tag_eff[t] for t in tg) + 0.2 * math.log1p(price) - 0.5
        label = int(rng.random() < 1 / (1 + math.exp(-logit)))
        out.append(
            {
                "label": label,
                "user": f"u{int(rng.integers(0, 40))}" if rng.random() > 0.05 else None,
                "item": items[it],
                "price": price if rng.random() > 0.05 else None,
                "tags": "|".join(tg) if tg else None,
            }
        )
    return out


def write_records_csv(
    path: Path, records: list[dict[str, Any]], columns: tuple[str, ...] = ("label", *SIMPLE_FIELDS)
) -> Path:
    rows = [
        ["" if r.get(c) is None else (repr(r[c]) if isinstance(r[c], float) else str(r[c])) for c in columns]
        for r in records
    ]
    return write_rows(path, rows, list(columns), ",")


def simple_schema(price_mode: str = "scaled", pooling: str = "mean", min_count: int = 1) -> Schema:
    return Schema(
        label="label",
        fields=(
            FieldSpec(name="user", kind="categorical", min_count=min_count),
            FieldSpec(name="item", kind="categorical", min_count=min_count),
            FieldSpec(name="price", kind="numeric", mode=price_mode, transform="log1p_standardize"),
            FieldSpec(name="tags", kind="multi_hot", separator="|", pooling=pooling, min_count=min_count),
        ),
    )


# ---------------------------------------------------------------- one planted interaction (explain, report)
SIZES = {"app_category": 8, "hour": 6, "gender": 2, "age": 5, "device": 4, "site": 10}
PLANTED = ("app_category", "hour")
PNG = b"\x89PNG\r\n\x1a\n"


def planted_teacher() -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Weak independent first-order effects per field, and one strong order-2 effect:
    +-2 on the logit for app_category x hour, by the signs of the two values."""
    rng = np.random.default_rng(99)
    first = {f: rng.normal(0.0, 0.15, k) for f, k in SIZES.items()}
    app_sign = rng.permutation(np.repeat([1.0, -1.0], SIZES["app_category"] // 2))
    hour_sign = rng.permutation(np.repeat([1.0, -1.0], SIZES["hour"] // 2))
    return first, 2.0 * np.outer(app_sign, hour_sign)


def planted_rows(n: int, seed: int) -> list[list[str]]:
    """Rows ``label, app_category, hour, ...`` with values like ``app_category3``."""
    first, pair = planted_teacher()
    rng = np.random.default_rng(seed)
    cols = {f: rng.integers(0, k, n) for f, k in SIZES.items()}
    logit = -0.3 + sum(first[f][cols[f]] for f in SIZES) + pair[cols["app_category"], cols["hour"]]
    y = rng.random(n) < 1.0 / (1.0 + np.exp(-logit))
    return [[str(int(y[r])), *(f"{f}{cols[f][r]}" for f in SIZES)] for r in range(n)]


def planted_sign(app: str, hour: str) -> float:
    return float(planted_teacher()[1][int(app.removeprefix("app_category")), int(hour.removeprefix("hour"))])


def planted_schema() -> Schema:
    return Schema(label="label", fields=tuple(FieldSpec(name=f, min_count=1) for f in SIZES))


def write_planted(path: Path, n: int, seed: int) -> Path:
    return write_rows(path, planted_rows(n, seed), ["label", *SIZES], "\t")


# ---------------------------------------------------------------- maths by hand
def brute_pairwise(v: np.ndarray) -> np.ndarray:
    """sum_{i<j} <v_i, v_j> by a double loop over fields. (B, F, D) -> (B,)"""
    b, f, _ = v.shape
    out = np.zeros(b)
    for i in range(f):
        for j in range(i + 1, f):
            out += np.sum(v[:, i, :] * v[:, j, :], axis=1)
    return out


def hand_field_vectors(weight: np.ndarray, ids, values, bags, scaled, poolings) -> np.ndarray:
    """(B, F, D+1): rows looked up, scaled ones times x, multi-hot bags pooled by hand."""
    b, s = ids.shape
    out = np.zeros((b, s + len(bags), weight.shape[1]))
    for r in range(b):
        for j in range(s):
            x = values[r, scaled.index(j)] if j in scaled else 1.0
            out[r, j] = x * weight[ids[r, j]]
        for k, ((offsets, flat, lens), mode) in enumerate(zip(bags, poolings)):
            rows = weight[flat[offsets[r] : offsets[r] + lens[r]]]
            out[r, s + k] = rows.mean(axis=0) if mode == "mean" else rows.sum(axis=0)
    return out


def random_inputs(rng: np.random.Generator, b: int, n_rows: int, s: int, scaled: list[int], n_mh: int):
    """Random ids (B,S), values (B,V) and CSR bags [(offsets, flat, lens)] for a model."""
    ids = rng.integers(0, n_rows, size=(b, s)).astype(np.int64)
    values = rng.normal(size=(b, len(scaled)))
    bags = []
    for _ in range(n_mh):
        lens = rng.integers(1, 5, size=b)  # the pipeline never makes an empty bag
        offsets = np.concatenate([[0], np.cumsum(lens)[:-1]]).astype(np.int64)
        flat = rng.integers(0, n_rows, size=int(lens.sum())).astype(np.int64)
        bags.append((offsets, flat, lens))
    return ids, values, bags


def descendants(pid: int) -> list[int]:
    """Every process below ``pid``, from /proc (Linux)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # ended meanwhile
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    out, todo = [], [pid]
    while todo:
        kids = children.get(todo.pop(), [])
        out += kids
        todo += kids
    return out


def kill_in_epoch(proc: Any, out: Path, epoch: int, inside: bool = False) -> None:
    """SIGKILL a ``deepfm train`` process and everything below it (torchrun's ranks) once its
    checkpoint in ``out`` has reached ``epoch`` (``inside``: a checkpoint taken inside that
    epoch, not at its start); fails when the run ends first."""
    import os
    import signal
    import time

    from deepfm.training.checkpoint import CHECKPOINT, read_checkpoint_state

    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and proc.poll() is None:
        if (out / CHECKPOINT).exists():
            progress = read_checkpoint_state(out / CHECKPOINT)["progress"]
            if progress["epoch"] == epoch and (progress["batch"] > 0 or not inside):
                break
        time.sleep(0.01)
    assert proc.poll() is None, "the run ended before the kill: too short for this test"
    # The launcher and both ranks (torchrun starts each rank in a session of its own).
    for pid in [proc.pid, *descendants(proc.pid)]:
        os.kill(pid, signal.SIGKILL)
    proc.wait()
    assert not (out / "manifest.json").exists()


def rank_process(
    rank: int, world: int, store_file: str, out_file: str, body: Callable[[int, int], dict[str, Any]]
) -> None:
    """One spawned gloo rank: joins the group, runs ``body(rank, world)`` and rank 0 saves what
    it returns to ``out_file``; leaves through Context.close, as training does (DDP gone first)."""
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{store_file}", rank=rank, world_size=world)
    try:
        result = body(rank, world)
        if rank == 0:
            torch.save(result, out_file)
    finally:
        Context(rank=rank, world=world, owns_group=True).close()


def spawn_ranks(tmp_path: Path, body: Callable[[int, int], dict[str, Any]]) -> dict[str, Any]:
    """Run ``body`` on 2 spawned gloo ranks; rank 0's result."""
    import torch.multiprocessing as mp

    out = tmp_path / "rank0.pt"
    mp.spawn(rank_process, args=(2, str(tmp_path / "store"), str(out), body), nprocs=2, join=True)
    return torch.load(out)
