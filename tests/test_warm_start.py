"""Warm start with a growing vocabulary: a day's model trained on from the day before, its
known values' vectors kept and new values added. Data: the generator's simulated days
(tests/retrain_days.py)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from deepfm.bundle import Bundle
from deepfm.cli import main
from deepfm.data.schema import criteo_schema
from deepfm.inference.predictor import evaluate, predict_file
from deepfm.training import train

from helpers import small_config
from retrain_days import TEST, retrain_config


def test_grow_vocabulary_keeps_ids_adds_and_evicts() -> None:
    import pyarrow as pa

    from deepfm.features.vocab import grow_vocabulary

    old, old_counts = pa.array(["a", "b", "c", "d"]), np.array([10, 8, 6, 4])
    new, new_counts = pa.array(["x", "c", "a", "y", "z", "q"]), np.array([5, 3, 1, 9, 1, 2])
    vocab, counts, pos = grow_vocabulary(old, old_counts, new, new_counts, min_count=2, max_vocab=0)
    # Known values keep their places; newcomers passing min_count (x, y, q; not z) are appended
    # most counted first; counts are 0.5 * old + new.
    assert vocab.to_pylist() == ["a", "b", "c", "d", "y", "x", "q"]
    assert counts.tolist() == [6, 4, 6, 2, 9, 5, 2]
    assert pos.tolist() == [5, 2, 0, 4, -1, 6]
    # Cap 5: d (weighted count 2) is evicted; y takes its id, x goes past the end; q (2, a
    # newcomer, loses the tie) stays out.
    vocab, _, pos = grow_vocabulary(old, old_counts, new, new_counts, min_count=2, max_vocab=5)
    assert vocab.to_pylist() == ["a", "b", "c", "y", "x"]
    assert pos.tolist() == [4, 2, 0, 3, -1, -1]
    # Cap 3 (smaller than before): b and d go, y takes b's id, the tail is trimmed.
    vocab, _, _ = grow_vocabulary(old, old_counts, new, new_counts, min_count=2, max_vocab=3)
    assert vocab.to_pylist() == ["a", "y", "c"]


@pytest.fixture(scope="module")
def warm(
    full_and_sampled: tuple[Bundle, Bundle], days: dict[int, dict[str, Path]], tmp_path_factory: pytest.TempPathFactory
) -> Bundle:
    full, _ = full_and_sampled
    out = tmp_path_factory.mktemp("warm") / "day2"
    return train(
        retrain_config(epochs=1),
        days[2]["train"],
        out,
        valid=days[2]["valid"],
        test=days[2]["test"],
        cache=False,
        warm_start=full.path,
    )


def _reader_chunks(path: Path, schema):  # type: ignore[no-untyped-def]
    from deepfm.data.readers import open_reader

    reader = open_reader(path, column_names=schema.columns)
    return reader.chunks([schema.label, *schema.names], schema.numeric_columns)


def test_warm_start_keeps_known_vectors_and_adds_new_rows(
    full_and_sampled: tuple[Bundle, Bundle], days: dict[int, dict[str, Path]]
) -> None:
    import torch

    from deepfm.features.pipeline import OOV, FeaturePipeline
    from deepfm.model.deepfm import DeepFM, InputLayout
    from deepfm.training.warm import warm_start_weights

    old, _ = full_and_sampled
    schema = old.config.schema
    grown = FeaturePipeline(schema).fit(_reader_chunks(days[2]["train"], schema), base=old.pipeline)
    layout = InputLayout(
        num_embeddings=grown.num_embeddings,
        n_single=len(grown.single_fields),
        scaled_positions=tuple(grown.scaled_positions),
        poolings=(),
    )
    torch.manual_seed(0)
    model = DeepFM(layout, old.config.model)
    fresh = model.embedding.weight.detach().clone()
    counts = warm_start_weights(model, grown, old)
    table, old_table = model.embedding.weight.detach(), old.model.embedding.weight.detach()
    assert counts["new_values"] > 1000 and counts["known_values_kept"] > 1000 and counts["evicted_values"] == 0
    for name in ("C3", "C10", "I5"):
        o, n = old.pipeline.states[name], grown.states[name]
        assert n.vocab.slice(0, len(o.vocab)).equals(o.vocab)  # known values keep their local ids
        k = len(o.vocab)
        # ...and their vectors (and first-order weights), at the field's new offset
        assert torch.equal(table[n.offset : n.offset + 2 + k], old_table[o.offset : o.offset + 2 + k])
        # new values get their own rows, initialised like a fresh model's
        assert torch.equal(table[n.offset + 2 + k : n.offset + n.size], fresh[n.offset + 2 + k : n.offset + n.size])
    assert grown.states["C3"].size > old.pipeline.states["C3"].size
    # Dense weights are the old model's.
    for key, value in old.model.state_dict().items():
        if key != "embedding.weight":
            assert torch.equal(model.state_dict()[key], value), key
    # A day-2 value the old model never saw is OOV there and has its own id in the grown pipeline.
    chunk = next(iter(_reader_chunks(days[2]["test"], schema)))
    j = [f.name for f in grown.single_fields].index("C3")
    ids_old = old.pipeline.encode(chunk).ids[:, j] - old.pipeline.states["C3"].offset
    ids_new = grown.encode(chunk).ids[:, j] - grown.states["C3"].offset
    newly_known = (ids_old == OOV) & (ids_new >= len(old.pipeline.states["C3"].vocab) + 2)
    assert newly_known.sum() > 50
    # Numeric statistics are kept, not refitted: the bins of a numeric field did not move.
    assert (
        grown.states["I5"].vocab.slice(0, len(old.pipeline.states["I5"].vocab)).equals(old.pipeline.states["I5"].vocab)
    )


def test_warm_pipeline_encodes_like_a_loaded_one(
    warm: Bundle, days: dict[int, dict[str, Path]], tmp_path: Path
) -> None:
    """The single-parse encoding during training, the grown pipeline and the same pipeline
    loaded from the bundle give identical ids."""
    from deepfm.features.pipeline import FeaturePipeline
    from deepfm.training import prepare

    schema = warm.config.schema
    loaded = Bundle.load(warm.path).pipeline
    for chunk in _reader_chunks(days[2]["test"], schema):
        a, b = warm.pipeline.encode(chunk), loaded.encode(chunk)
        assert np.array_equal(a.ids, b.ids) and np.array_equal(a.values, b.values)
    base = Bundle.load(warm.metrics["warm_start"]["from"]).pipeline
    grown, parts = prepare(warm.config, days[2]["train"], tmp_path / "enc", split=(1.0, 0.0, 0.0), base=base)
    assert grown.num_embeddings == warm.pipeline.num_embeddings
    direct = np.concatenate([loaded.encode(c).ids for c in _reader_chunks(days[2]["train"], schema)])
    assert np.array_equal(np.asarray(parts.train.ids, dtype=np.int64), direct)
    assert isinstance(loaded, FeaturePipeline)


def test_day_by_day_bundle_loads_and_predicts(
    warm: Bundle, full_and_sampled: tuple[Bundle, Bundle], days: dict[int, dict[str, Path]], tmp_path: Path
) -> None:
    full, _ = full_and_sampled
    loaded = Bundle.load(warm.path)
    m = loaded.metrics
    assert m["warm_start"]["from"] == str(full.path) and m["warm_start"]["new_values"] > 0
    test = days[2]["test"]
    ev = evaluate(loaded, test)
    assert abs(ev["auc"] - m["test_auc"]) < 1e-9  # the saved model is the one measured
    # It learned day 2 on top of day 1: at least as good as the day-1 model on day-2 rows.
    assert ev["auc"] > evaluate(full, test)["auc"] - 0.002
    # And it can be warm-started again (day 3 = day 2's rows here: the vocabulary is stable).
    again = train(
        retrain_config(epochs=1),
        days[2]["valid"],
        tmp_path / "day3",
        split="0.8,0.2",
        cache=False,
        warm_start=loaded.path,
    )
    assert again.pipeline.num_embeddings >= loaded.pipeline.num_embeddings
    assert predict_file(Bundle.load(again.path), test, tmp_path / "p.csv") == TEST


def test_warm_start_refuses_another_shape(
    full_and_sampled: tuple[Bundle, Bundle], days: dict[int, dict[str, Path]], tmp_path: Path
) -> None:
    from deepfm.errors import ConfigError

    full, _ = full_and_sampled
    wider = small_config(criteo_schema(), model={"embedding_dim": 8})
    with pytest.raises(ConfigError, match="model settings"):
        train(wider, days[2]["train"], tmp_path / "x", cache=False, warm_start=full.path)
    assert (
        main(
            [
                "train",
                "--warm-start",
                str(full.path),
                "--data",
                str(days[2]["train"]),
                "--preset",
                "criteo",
                "--out",
                str(tmp_path / "y"),
            ]
        )
        == 2
    )


def test_warm_start_refuses_other_hash_buckets(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Hashed ids mean other values under another bucket count, and a vocabulary has no rows
    in common with buckets: either change is refused, naming the field and both counts."""
    from dataclasses import replace

    from deepfm.errors import ConfigError

    from helpers import simple_records, simple_schema, write_records_csv

    data = write_records_csv(tmp_path / "d.csv", simple_records(600, seed=1))

    def buckets(n: int):  # type: ignore[no-untyped-def]
        fields = tuple(replace(f, hash_buckets=n) if f.name == "user" else f for f in simple_schema().fields)
        return small_config(replace(simple_schema(), fields=fields), epochs=1)

    old = train(buckets(8), data, tmp_path / "old", split="0.8,0.2", cache=False)
    with pytest.raises(ConfigError, match=r"'user' changed hash_buckets 8 -> 16"):
        train(buckets(16), data, tmp_path / "x", split="0.8,0.2", cache=False, warm_start=old.path)
    # back to a vocabulary, from the command line: a usage error, not a traceback
    args = [
        "train",
        "--warm-start",
        str(old.path),
        "--hash-buckets",
        "0",
        "--data",
        str(data),
        "--split",
        "0.8,0.2",
        "--out",
        str(tmp_path / "y"),
    ]
    assert main(args) == 2
    assert "'user' changed hash_buckets 8 -> 0" in capsys.readouterr().err


def test_resume_of_a_warm_started_downsampled_run_is_the_same_run(tmp_path: Path) -> None:
    import torch
    from safetensors.torch import load_file

    from deepfm.training import resume

    from helpers import simple_records, simple_schema, write_records_csv

    day1 = write_records_csv(tmp_path / "d1.csv", simple_records(1500, seed=3))
    day2 = write_records_csv(tmp_path / "d2.csv", simple_records(3000, seed=4))
    config = small_config(simple_schema(), epochs=3, patience=3, batch_size=64, checkpoint_every=5)
    base = train(config, day1, tmp_path / "base", split="0.8,0.2", cache=False)
    kw = dict(split="0.8,0.2", cache=False, warm_start=base.path, neg_sample_rate=0.5)
    train(config, day2, tmp_path / "ref", **kw)

    def stop(row: dict) -> None:
        if row["epoch"] == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(config, day2, tmp_path / "cut", on_epoch=stop, **kw)
    assert json.loads((tmp_path / "cut" / "run.json").read_text())["warm_start"] == str(base.path)
    resumed = resume(tmp_path / "cut")
    a, b = (
        load_file(str(tmp_path / "ref" / "model.safetensors")),
        load_file(str(tmp_path / "cut" / "model.safetensors")),
    )
    assert all(torch.equal(a[k], b[k]) for k in a)  # the same steps, batches and threads: bit for bit
    assert resumed.calibration.neg_sample_rate == 0.5 and resumed.metrics["warm_start"]["from"] == str(base.path)
