"""Training: same seed -> identical weights on CPU; early stopping keeps the best epoch."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from deepfm.config import TrainConfig
from deepfm.data.schema import FieldSpec, Schema, criteo_schema
from deepfm.errors import ConfigError
from deepfm.training import train
from deepfm.training.job import resolved_min_count

from helpers import nan_loss_at_step, simple_records, simple_schema, small_config, write_criteo_tsv, write_records_csv


def weights(folder: Path) -> dict[str, torch.Tensor]:
    return load_file(str(folder / "model.safetensors"))


def test_same_seed_same_weights(tmp_path: Path) -> None:
    data = write_records_csv(tmp_path / "d.csv", simple_records(1500, seed=2))
    config = small_config(simple_schema(), seed=123, epochs=2)
    train(config, data, tmp_path / "a", split="0.8,0.2")
    train(config, data, tmp_path / "b", split="0.8,0.2")
    a, b = weights(tmp_path / "a"), weights(tmp_path / "b")
    assert set(a) == set(b)
    for k in a:  # the same steps on the same batches, one thread: bit for bit on any CPU
        assert torch.equal(a[k], b[k]), k
    # the check has teeth: another seed gives other weights
    train(small_config(simple_schema(), seed=124, epochs=2), data, tmp_path / "c", split="0.8,0.2")
    c = weights(tmp_path / "c")
    assert not torch.equal(a["embedding.weight"], c["embedding.weight"])


def test_same_seed_same_weights_criteo_layout(tmp_path: Path) -> None:
    data = write_criteo_tsv(tmp_path / "c.tsv", 800, seed=5)
    config = small_config(criteo_schema(), epochs=1, batch_size=32)
    train(config, data, tmp_path / "a", split="0.8,0.1,0.1")
    train(config, data, tmp_path / "b", split="0.8,0.1,0.1")
    a, b = weights(tmp_path / "a"), weights(tmp_path / "b")
    for k in a:  # the same steps on the same batches, one thread: bit for bit on any CPU
        assert torch.equal(a[k], b[k]), k
    ma = json.loads((tmp_path / "a" / "metrics.json").read_text())
    mb = json.loads((tmp_path / "b" / "metrics.json").read_text())
    assert ma["test_auc"] == mb["test_auc"] and ma["test_logloss"] == mb["test_logloss"]


def test_best_epoch_weights_are_restored(tmp_path: Path) -> None:
    """With a learning rate high enough to overfit, valid AUC peaks early; the saved model is
    that epoch's (its valid AUC recomputed after training equals the one logged then). Every
    gain counts (min_improvement 0); the vectors start small, without batch norm, and the
    steps stay large after a fall (lr_decay 1), and one table trains throughout (no fresh
    tables), so these 800 rows overfit within 6 epochs."""
    data = write_records_csv(tmp_path / "d.csv", simple_records(800, seed=4))
    config = small_config(
        simple_schema(),
        epochs=6,
        patience=10,
        lr=0.05,
        embedding_lr=0.05,
        seed=1,
        batch_size=16,
        min_improvement=0.0,
        lr_decay=1.0,
        reset_embeddings=False,
        model={"hidden": (64, 64), "init_std": 0.01, "batch_norm": False},
    )
    bundle = train(config, data, tmp_path / "m", split="0.7,0.3")
    m = bundle.metrics
    history = m["history"]
    assert len(history) == 6
    best = int(np.argmax([h["valid_auc"] for h in history])) + 1
    assert m["best_epoch"] == best
    assert best < 6, "the data should make the last epoch worse than the best one"
    assert m["valid_auc"] == pytest.approx(history[best - 1]["valid_auc"], abs=1e-9)
    assert m["valid_auc"] > history[-1]["valid_auc"]


def test_early_stopping_patience(tmp_path: Path) -> None:
    data = write_records_csv(tmp_path / "d.csv", simple_records(800, seed=4))
    config = small_config(
        simple_schema(),
        epochs=30,
        patience=1,
        lr=0.05,
        embedding_lr=0.05,
        seed=1,
        batch_size=16,
        reset_embeddings=False,  # patience alone (tests/test_reset_embeddings.py has the resets)
        model={"hidden": (64, 64)},
    )
    m = train(config, data, tmp_path / "m", split="0.7,0.3").metrics
    aucs = [h["valid_auc"] for h in m["history"]]
    assert len(aucs) < 30
    assert aucs[-1] <= max(aucs[:-1]) + 1e-6  # stopped on the first epoch without improvement
    assert all(b > a + 1e-6 for a, b in zip(aucs[:-2], aucs[1:-1]))  # improved until then
    # stopped after a worse epoch, yet the saved model is the best epoch's
    assert m["best_epoch"] == len(aucs) - 1
    assert m["valid_auc"] == pytest.approx(max(aucs), abs=1e-9)


def test_default_split_and_batch_size(tmp_path: Path) -> None:
    data = write_records_csv(tmp_path / "d.csv", simple_records(1000, seed=9))
    m = train(small_config(simple_schema(), epochs=1), data, tmp_path / "m").metrics
    assert (m["train_rows"], m["valid_rows"]) == (900, 100)
    assert "test_auc" not in m
    assert m["batch_size"] == TrainConfig().resolve_batch_size(900)
    # 'auto' stays a power of two in [64, 4096] and grows with the data; a number is kept
    sizes = [TrainConfig().resolve_batch_size(n) for n in (10, 1000, 10**5, 10**6, 10**8)]
    assert all(64 <= s <= 4096 and s & (s - 1) == 0 for s in sizes)
    assert sizes == sorted(sizes) and sizes[-1] == 4096 and sizes[0] == 64
    # about 256 steps an epoch from 8k to 500k rows, about 32 below
    assert [TrainConfig().resolve_batch_size(n) for n in (4000, 80_000, 240_000)] == [128, 256, 1024]
    assert TrainConfig(batch_size=100).resolve_batch_size(10**6) == 100


def test_bad_train_config_values() -> None:
    for bad in ({"epochs": 0}, {"lr": 0}, {"batch_size": "big"}, {"device": "tpu"}, {"patience": 0}):
        with pytest.raises(ConfigError):
            TrainConfig(**bad)


def test_training_metrics_on_every_kth_row_of_a_large_epoch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Past TRAIN_METRIC_ROWS rows an epoch, training AUC and logloss are measured on every
    k-th row of the shuffled order: exactly those rows of what the full measure sees, with no
    change to the steps or to the loss (every row); a run interrupted and resumed measures the
    same sample."""
    import importlib
    import math

    progress_module = importlib.import_module("deepfm.training.progress")  # the epoch's sample and its AUC
    from deepfm.errors import TrainingError
    from deepfm.training import Trainer, resume
    from deepfm.training.checkpoint import load_checkpoint

    real_auc = progress_module.auc
    seen: list[tuple[np.ndarray, np.ndarray]] = []

    def recording_auc(labels: np.ndarray, scores: np.ndarray) -> float:
        seen.append((np.array(labels), np.array(scores)))
        return real_auc(labels, scores)

    monkeypatch.setattr(progress_module, "auc", recording_auc)
    data = write_records_csv(tmp_path / "d.csv", simple_records(3000, seed=2))
    config = small_config(
        simple_schema(), epochs=2, batch_size=50, checkpoint_every=5
    )  # 50: not a multiple of the stride
    full = train(config, data, tmp_path / "full", split="0.8,0.2", cache=False)
    n = full.metrics["train_rows"]
    full_calls = [c for c in seen if len(c[0]) == n]
    seen.clear()
    monkeypatch.setattr(progress_module, "TRAIN_METRIC_ROWS", 300)
    stride = math.ceil(n / 300)
    sampled = train(config, data, tmp_path / "sampled", split="0.8,0.2", cache=False)
    sampled_calls = [c for c in seen if len(c[0]) == math.ceil(n / stride)]
    assert stride == 8 and len(full_calls) == len(sampled_calls) == 2  # one per epoch
    for (full_y, full_s), (y, s) in zip(full_calls, sampled_calls, strict=True):
        np.testing.assert_array_equal(y, full_y[::stride])
        np.testing.assert_array_equal(s, full_s[::stride])
    a, b = weights(tmp_path / "full"), weights(tmp_path / "sampled")
    assert all(torch.equal(a[k], b[k]) for k in a)  # sampling the metrics changes no step
    for whole, part in zip(full.metrics["history"], sampled.metrics["history"], strict=True):
        assert whole["train_metric_rows"] == n and part["train_metric_rows"] == math.ceil(n / stride)
        assert part["train_loss"] == whole["train_loss"] and part["valid_auc"] == whole["valid_auc"]
    curve = sampled.metrics["train_curve"]
    assert sum(p["rows"] for p in curve) == 2 * n and all(0.0 <= p["auc"] <= 1.0 or math.isnan(p["auc"]) for p in curve)

    # Interrupted at step 23 (NaN loss), resumed from the checkpoint of step 20: the same sample.
    real_step = nan_loss_at_step(monkeypatch, 23)
    with pytest.raises(TrainingError):
        train(config, data, tmp_path / "cut", split="0.8,0.2", cache=False)
    assert load_checkpoint(tmp_path / "cut" / "checkpoint.safetensors")[1]["progress"]["steps"] == 20
    monkeypatch.setattr(Trainer, "step", real_step)
    resumed = resume(tmp_path / "cut")
    for key in ("history", "train_curve"):
        got = [{k: v for k, v in row.items() if k not in ("seconds", "samples_per_s")} for row in resumed.metrics[key]]
        want = [{k: v for k, v in row.items() if k not in ("seconds", "samples_per_s")} for row in sampled.metrics[key]]
        assert got == want, key


def test_auto_init_gives_the_pairwise_term_its_set_spread(tmp_path: Path) -> None:
    """init_std "auto" draws the vectors so that the FM pairwise term starts with std
    INIT_PAIRWISE_STD on dense data and INIT_PAIRWISE_STD_SPARSE on sparse data (or with no
    data at hand), whatever the number of fields; the run saves the std it resolved to, with
    the batch size, in the bundle's config and metrics.json."""
    from deepfm.config import (
        DENSE_ROWS_PER_TABLE_ROW,
        INIT_PAIRWISE_STD,
        INIT_PAIRWISE_STD_SPARSE,
        ModelConfig,
        auto_init_std,
    )
    from deepfm.model.deepfm import DeepFM, InputLayout
    from deepfm.model.layers import fm_pairwise

    # Frappe's and Criteo's fields
    assert (auto_init_std(10, 16, True), auto_init_std(39, 16, True)) == (0.061, 0.0303)
    assert (auto_init_std(10, 16, False), auto_init_std(39, 16, False)) == (0.0061, 0.003)
    for fields in (6, 20, 39):
        layout = InputLayout(num_embeddings=200_000, n_single=fields)
        assert DeepFM(layout, ModelConfig(embedding_dim=16)).config.init_std == auto_init_std(fields, 16, False)
        dense_rows = int(DENSE_ROWS_PER_TABLE_ROW * 200_000 / fields) + 1
        for rows, spread in ((dense_rows, INIT_PAIRWISE_STD), (dense_rows - 2, INIT_PAIRWISE_STD_SPARSE)):
            torch.manual_seed(0)
            model = DeepFM(layout, ModelConfig(embedding_dim=16).resolved(layout, rows))
            assert model.config.init_std == auto_init_std(fields, 16, spread == INIT_PAIRWISE_STD)
            ids = torch.randint(0, 200_000, (20_000, fields))
            pairs = fm_pairwise(model.embedding.weight.detach()[ids][..., :16])
            # the std is rounded to 4 digits: at 0.003, 2% of it; the spread goes as its square
            assert float(pairs.std()) == pytest.approx(spread, rel=0.08)
    data = write_records_csv(tmp_path / "d.csv", simple_records(1500, seed=2))
    bundle = train(
        small_config(simple_schema(), model={"init_std": "auto"}, batch_size="auto"),
        data,
        tmp_path / "m",
        split="0.8,0.2",
    )
    saved = json.loads((tmp_path / "m" / "config.json").read_text())
    dense = bundle.metrics["resolved"]["rows_per_table_row"] >= DENSE_ROWS_PER_TABLE_ROW
    assert saved["model"]["init_std"] == bundle.metrics["resolved"]["init_std"] == auto_init_std(4, 4, dense)
    assert saved["train"]["batch_size"] == bundle.metrics["resolved"]["batch_size"] == bundle.metrics["batch_size"]


def test_auto_embedding_lr_grows_with_the_batch_on_sparse_data_only(tmp_path: Path) -> None:
    """embedding_lr "auto": the dense step where every value is seen often; on sparse data the
    sparse step at batches of 256 or less, times sqrt(batch / 256) above for models with an
    MLP, never past the dense step; lr and fm keep the sparse step. A number is kept as given.
    The run saves the step it resolved to, for the model it trains."""
    from deepfm.config import (
        DENSE_ROWS_PER_TABLE_ROW,
        EMBEDDING_LR_DENSE,
        EMBEDDING_LR_SPARSE,
        TrainConfig,
        rows_per_table_row,
    )

    auto, sparse, dense = TrainConfig(), DENSE_ROWS_PER_TABLE_ROW - 1, DENSE_ROWS_PER_TABLE_ROW
    assert [auto.resolve_embedding_lr(sparse, b) for b in (64, 256, 1024, 2048, 4096, 16384)] == [
        EMBEDDING_LR_SPARSE,
        EMBEDDING_LR_SPARSE,
        pytest.approx(2 * EMBEDDING_LR_SPARSE),
        pytest.approx(2.83 * EMBEDDING_LR_SPARSE),
        EMBEDDING_LR_DENSE,
        EMBEDDING_LR_DENSE,
    ]
    assert {auto.resolve_embedding_lr(dense, b) for b in (64, 256, 4096)} == {EMBEDDING_LR_DENSE}
    assert auto.resolve_embedding_lr(sparse, 4096, deep=False) == EMBEDDING_LR_SPARSE  # lr, fm
    assert auto.resolve_embedding_lr(dense, 4096, deep=False) == EMBEDDING_LR_DENSE
    assert TrainConfig(embedding_lr=0.02).resolve_embedding_lr(sparse, 4096) == 0.02
    # the step follows the global batch: 2 processes at 2048 step as 1 process at 4096
    from deepfm.model.deepfm import InputLayout
    from deepfm.training.job import resolve_train

    layout = InputLayout(num_embeddings=400_000, n_single=39)  # 500k rows: 49 lookups a table row
    one = resolve_train(TrainConfig(), 500_000, layout, deep=True, world=1)
    two = resolve_train(TrainConfig(batch_size=one.batch_size // 2), 500_000, layout, deep=True, world=2)
    assert rows_per_table_row(500_000, layout) < DENSE_ROWS_PER_TABLE_ROW and one.batch_size == 2048
    assert one.embedding_lr == two.embedding_lr == pytest.approx(2.83e-3)
    records = [r | {"user": f"u{i}"} for i, r in enumerate(simple_records(1500, seed=2))]  # sparse: a user a row
    data = write_records_csv(tmp_path / "d.csv", records)
    for kind in ("deepfm", "fm"):
        config = small_config(simple_schema(), model={"kind": kind}, embedding_lr="auto", batch_size=1024)
        resolved = train(config, data, tmp_path / kind).metrics["resolved"]
        saved = json.loads((tmp_path / kind / "config.json").read_text())["train"]["embedding_lr"]
        assert resolved["rows_per_table_row"] < DENSE_ROWS_PER_TABLE_ROW
        assert saved == resolved["embedding_lr"] == (2e-3 if kind == "deepfm" else EMBEDDING_LR_SPARSE)


def test_training_calibrates_on_the_validation_rows(tmp_path: Path) -> None:
    """Platt scaling fitted on the validation scores is part of the saved model: it lowers the
    validation log loss (or keeps it: the identity is one of its fits), leaves AUC alone, and
    is left out when asked or when the validation part is too small to fit it."""
    data = write_records_csv(tmp_path / "d.csv", simple_records(3000, seed=5))
    bundle = train(
        small_config(simple_schema(), epochs=4, lr=0.05, embedding_lr=0.05), data, tmp_path / "m", split="0.7,0.3"
    )
    fit, m = bundle.metrics["valid_calibration"], bundle.metrics
    assert (
        bundle.calibration.method == "platt" and list(bundle.calibration.platt) == fit["platt"] and fit["rows"] == 900
    )
    assert m["valid_logloss"] <= fit["valid_logloss_before"]
    assert m["valid_auc"] == pytest.approx(max(h["valid_auc"] for h in m["history"]), abs=1e-9)
    off = train(
        small_config(simple_schema(), epochs=4, lr=0.05, embedding_lr=0.05, calibrate=False),
        data,
        tmp_path / "o",
        split="0.7,0.3",
    )
    assert off.calibration.method == "none" and off.metrics["valid_calibration"] is None
    assert off.metrics["valid_logloss"] == pytest.approx(
        fit["valid_logloss_before"], rel=1e-9
    )  # same run, uncalibrated
    few = train(
        small_config(simple_schema(), epochs=1), data, tmp_path / "f", split="0.97,0.03"
    )  # 90 rows: < 50 of a class
    assert few.calibration.method == "none" and few.metrics["valid_calibration"] is None


def test_resolved_min_count_is_one_number_or_each_fields() -> None:
    scaled = FieldSpec("x", kind="numeric", mode="scaled")  # no vocabulary: not counted
    shared = Schema(label="label", fields=(FieldSpec("a", min_count=3), FieldSpec("b", min_count=3), scaled))
    assert resolved_min_count(shared) == 3
    mixed = Schema(label="label", fields=(FieldSpec("a", min_count=3), FieldSpec("b", min_count=5), scaled))
    assert resolved_min_count(mixed) == {"a": 3, "b": 5}
    assert resolved_min_count(Schema(label="label", fields=(scaled,))) is None
