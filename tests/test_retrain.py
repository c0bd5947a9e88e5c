"""Daily retraining: negative downsampling with corrected probabilities, calibration, warm
start with a growing vocabulary, drift checks. Data: the generator's simulated days."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pyarrow.csv as pacsv
import pytest

from deepfm.bundle import Bundle
from deepfm.cli import main
from deepfm.data.sampling import BLOCK, keep_mask
from deepfm.data.schema import criteo_schema
from deepfm.data.synth import write_synth
from deepfm.errors import BundleError
from deepfm.inference.predictor import calibrate, evaluate, predict_file
from deepfm.model.calibration import Calibration, fit, postprocess
from deepfm.training import train
from deepfm.util.metrics import logloss

from helpers import small_config

TRAIN, VALID, TEST = 40_000, 10_000, 10_000


def _split(src: Path, folder: Path, day: int) -> dict[str, Path]:
    """Cut one generated day into train / valid / test files by row order."""
    lines = src.read_bytes().splitlines(keepends=True)
    out, start = {}, 0
    for name, n in (("train", TRAIN), ("valid", VALID), ("test", TEST)):
        out[name] = folder / f"day{day}.{name}.tsv"
        out[name].write_bytes(b"".join(lines[start : start + n]))
        start += n
    return out


@pytest.fixture(scope="module")
def days(tmp_path_factory: pytest.TempPathFactory) -> dict[int, dict[str, Path]]:
    folder = tmp_path_factory.mktemp("days")
    return {
        d: _split(write_synth(TRAIN + VALID + TEST, folder / f"day{d}.tsv", seed=3, day=d).path, folder, d)
        for d in (1, 2)
    }


def _config(**train_kw: object):  # type: ignore[no-untyped-def]
    # batch_norm fixed: "auto" would give the model trained on every row batch norm and the
    # downsampled one (fewer rows per table row) none, and these tests compare the two.
    settings: dict[str, object] = {"seed": 11, "epochs": 2, "batch_size": 1024, **train_kw}
    return small_config(criteo_schema(min_count=3), model={"batch_norm": False}, **settings)


@pytest.fixture(scope="module")
def full_and_sampled(
    days: dict[int, dict[str, Path]], tmp_path_factory: pytest.TempPathFactory
) -> tuple[Bundle, Bundle]:
    out = tmp_path_factory.mktemp("runs")
    d = days[1]
    # No calibration fitted in training: these tests look at the downsampling correction and at
    # `deepfm calibrate`, which a Platt fit on the same validation rows would leave nothing to do.
    full = train(_config(calibrate=False), d["train"], out / "full", valid=d["valid"], cache=False)
    sampled = train(
        _config(calibrate=False), d["train"], out / "sampled", valid=d["valid"], cache=False, neg_sample_rate=0.25
    )
    return full, sampled


# ---------------------------------------------------------------- downsampling
def test_keep_mask_is_seeded_and_independent_of_chunking() -> None:
    labels = (np.random.default_rng(0).random(3 * BLOCK + 123) < 0.2).astype(np.float32)
    whole = keep_mask(labels, 0, 0.3, seed=5)
    # The same rows cut at other places (within blocks) give the same coins.
    pieces = np.concatenate([keep_mask(labels[a : a + 1000], a, 0.3, seed=5) for a in range(0, labels.size, 1000)])
    assert np.array_equal(whole, pieces)
    assert whole[labels > 0.5].all()  # every positive is kept
    kept_neg = whole[labels < 0.5].mean()
    assert abs(kept_neg - 0.3) < 0.01
    assert not np.array_equal(whole, keep_mask(labels, 0, 0.3, seed=6))


def test_correction_formula() -> None:
    p = np.array([0.0, 0.2, 0.5, 0.9, 1.0])
    w = 0.1
    got = postprocess(p, Calibration(neg_sample_rate=w))
    assert np.allclose(got, p / (p + (1 - p) / w))
    assert np.array_equal(postprocess(p, Calibration()), p)  # the default changes nothing


def test_downsampled_model_predicts_the_real_click_rate(
    full_and_sampled: tuple[Bundle, Bundle], days: dict[int, dict[str, Path]]
) -> None:
    full, sampled = full_and_sampled
    m = sampled.metrics
    assert m["neg_sample_rate"] == 0.25 and m["train_rows_before_downsampling"] == TRAIN
    # about 0.25 of the ~77% negatives plus every positive
    assert 0.35 * TRAIN < m["train_rows"] < 0.45 * TRAIN
    test = days[1]["test"]
    ev_full, ev = evaluate(full, test), evaluate(sampled, test)
    # Corrected: the mean prediction is the observed CTR (0.22) within 0.02, no further off than
    # the model trained on every row (0.011 off here, 40k rows) by more than 0.01; the log loss
    # within 0.01 of that model's (measured: 0.0046 above).
    gap, gap_full = abs(ev["mean_prediction"] - ev["ctr"]), abs(ev_full["mean_prediction"] - ev_full["ctr"])
    assert gap < 0.02 and gap < gap_full + 0.01, (ev, ev_full)
    assert ev["logloss"] < ev_full["logloss"] + 0.01, (ev, ev_full)
    # The Python path on raw records gives the same corrected figures; uncorrected, the model
    # would be far off: it saw 4x the negatives' share of positives.
    table = pacsv.read_csv(
        test,
        parse_options=pacsv.ParseOptions(delimiter="\t"),
        read_options=pacsv.ReadOptions(column_names=list(sampled.config.schema.columns)),
    )
    p = sampled.predict(table)
    assert abs(float(p.mean()) - ev["mean_prediction"]) < 1e-9
    raw = np.concatenate([sampled.predict_encoded(c, calibrated=False) for c in _chunks(sampled, test)])
    assert float(raw.mean()) > ev["ctr"] + 0.15
    assert Bundle.load(sampled.path).calibration.neg_sample_rate == 0.25  # recorded in the bundle


def test_every_path_returns_corrected_probabilities(
    full_and_sampled: tuple[Bundle, Bundle], days: dict[int, dict[str, Path]], tmp_path: Path
) -> None:
    _, sampled = full_and_sampled
    loaded = Bundle.load(sampled.path)
    test = days[1]["test"]
    out = tmp_path / "p.csv"
    predict_file(loaded, test, out)
    from_file = pacsv.read_csv(out).column("probability").to_numpy()
    assert main(["predict", str(sampled.path), "--data", str(test), "--out", str(tmp_path / "cli.csv"), "--quiet"]) == 0
    from_cli = pacsv.read_csv(tmp_path / "cli.csv").column("probability").to_numpy()
    assert np.allclose(from_file, from_cli)
    assert abs(from_file.mean() - evaluate(loaded, test)["mean_prediction"]) < 1e-9
    enc_chunk = next(iter(_chunks(loaded, test)))
    raw = loaded.predict_encoded(enc_chunk, calibrated=False)
    assert np.allclose(loaded.predict_encoded(enc_chunk), postprocess(raw, Calibration(neg_sample_rate=0.25)))
    assert np.allclose(from_file[: len(raw)], postprocess(raw, Calibration(neg_sample_rate=0.25)))
    # The report's reliability diagram and ROC come from explain's probabilities: the same ones.
    from deepfm.analysis.explain import explain

    assert np.allclose(explain(loaded, test, rows=2000).probabilities, from_file[:2000], atol=1e-6)


def _chunks(bundle: Bundle, path: Path):  # type: ignore[no-untyped-def]
    from deepfm.inference.predictor import open_input

    schema = bundle.config.schema
    reader = open_input(bundle, path)
    for chunk in reader.chunks(schema.names, schema.numeric_columns):
        yield bundle.pipeline.encode(chunk, with_labels=False)


# ---------------------------------------------------------------- calibration
def test_fits_recover_a_known_distortion() -> None:
    """Labels drawn from q, predictions a monotone distortion of q: both fits undo it."""
    rng = np.random.default_rng(0)
    q = rng.beta(2, 6, 50_000)
    y = (rng.random(q.size) < q).astype(float)
    p = q**0.5  # over-confident towards 1
    for method in ("platt", "isotonic"):
        state = fit(p, y, method)
        back = Calibration.from_json(state.to_json())
        assert back == state
        fixed = postprocess(p, back)
        assert logloss(y, fixed) < logloss(y, p) - 0.05
        assert abs(fixed.mean() - y.mean()) < 0.005
    # Platt's sigmoid(a * logit(p) + b) reproduces a logit-linear distortion almost exactly.
    z = np.log(q / (1 - q))
    p2 = 1 / (1 + np.exp(-(0.5 * z + 0.3)))
    a, b = fit(p2, y, "platt").platt
    assert abs(a - 2.0) < 0.1 and abs(b + 0.6) < 0.1


def test_calibrate_command_stores_and_applies(
    full_and_sampled: tuple[Bundle, Bundle],
    days: dict[int, dict[str, Path]],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    _, sampled = full_and_sampled
    folder = tmp_path / "m"
    shutil.copytree(sampled.path, folder)
    before = evaluate(Bundle.load(folder), days[1]["test"])
    assert main(["calibrate", str(folder), "--data", str(days[1]["valid"]), "--method", "isotonic", "--quiet"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["ece_after"] < printed["ece_before"]
    bundle = Bundle.load(folder)
    assert bundle.calibration.method == "isotonic" and bundle.calibration.neg_sample_rate == 0.25
    assert bundle.metrics["calibration_fit"]["after"]["calibration"]["bins"]
    # On the valid rows it was fitted on, the mean prediction is their CTR (isotonic keeps it).
    fit_after = bundle.metrics["calibration_fit"]["after"]
    assert abs(fit_after["mean_prediction"] - fit_after["ctr"]) < 1e-6
    after = evaluate(bundle, days[1]["test"])  # held-out rows: better calibrated, no worse log loss
    assert after["ece"] < before["ece"]
    assert after["logloss"] < before["logloss"] + 0.002
    # The report shows the reliability diagram before and after, and the ECE row.
    from deepfm.analysis.report import build_report

    page = build_report(bundle)
    assert "data-figure='reliability_before'" in page and "data-figure='reliability_after'" in page and ">ECE<" in page
    # Platt (the default) replaces the isotonic fit (not stacked on it).
    calibrate(bundle, days[1]["valid"])
    platt = Bundle.load(folder)
    assert platt.calibration.method == "platt" and platt.calibration.neg_sample_rate == 0.25
    assert evaluate(platt, days[1]["test"])["ece"] < before["ece"]
    # calibration.json is signed like the other files
    (folder / "calibration.json").write_text(Calibration().to_json())
    with pytest.raises(BundleError, match="calibration.json"):
        Bundle.load(folder)


# ---------------------------------------------------------------- warm start
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
        _config(epochs=1),
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
        _config(epochs=1), days[2]["valid"], tmp_path / "day3", split="0.8,0.2", cache=False, warm_start=loaded.path
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


# ---------------------------------------------------------------- drift
def test_psi_formula() -> None:
    from deepfm.analysis.drift import psi

    e, a = np.array([50, 30, 20]), np.array([20, 30, 50])
    pe, pa_ = e / e.sum(), a / a.sum()
    assert psi(e, a) == pytest.approx(float(np.sum((pa_ - pe) * np.log(pa_ / pe))))
    assert psi(e, e * 3) == pytest.approx(0.0)
    assert np.isfinite(psi(np.array([10, 0]), np.array([0, 10])))  # empty buckets are floored


def test_drift_check_sees_the_simulated_days(
    full_and_sampled: tuple[Bundle, Bundle],
    days: dict[int, dict[str, Path]],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    full, _ = full_and_sampled
    model = tmp_path / "m"
    shutil.copytree(full.path, model)
    # Same day, held-out rows: stable, exit 0.
    assert main(["drift", str(model), "--data", str(days[1]["test"]), "--fail-on", "psi>0.25", "--quiet"]) == 0
    same = json.loads((model / "drift.json").read_text())
    assert same["max_psi"] < 0.1 and same["failed"] == []
    assert same["reference_part"] == "valid"  # held-out rows of day 1: OOV rates agree
    assert abs(same["fields"]["C3"]["oov"] - same["fields"]["C3"]["oov_train"]) < 0.02
    capsys.readouterr()
    # Day 2: new ids in the large fields, none in the small ones; the base CTR fell.
    out = tmp_path / "d2.json"
    thresholds = ["--fail-on", "psi>0.25", "--fail-on", "oov_change>0.05"]
    code = main(
        ["drift", str(model), "--data", str(days[2]["test"]), "--out", str(out), *thresholds, "--report", "--quiet"]
    )
    assert code == 1
    assert "threshold crossed: psi>0.25" in capsys.readouterr().err
    d2 = json.loads(out.read_text())
    from deepfm.data.synth_world import CATEGORICAL_SPECS, CHURN_MIN_CARD

    churned = [d2["fields"][c.name] for c in CATEGORICAL_SPECS if c.cardinality >= CHURN_MIN_CARD]
    kept = [d2["fields"][c.name] for c in CATEGORICAL_SPECS if c.cardinality < CHURN_MIN_CARD]
    assert np.median([f["psi"] for f in churned]) > 0.25 and np.median([f["oov_change"] for f in churned]) > 0.04
    assert max(f["psi"] for f in kept) < 0.05 and max(f["oov"] for f in kept) == 0.0
    assert d2["fields"]["I1"]["missing_change"] < 0.02 and d2["fields"]["I1"]["psi"] < 0.05
    assert d2["labels"]["ctr"] < same["labels"]["ctr"]
    lab = d2["labels"]
    assert lab["ctr_gap"] == pytest.approx(abs(d2["mean_prediction"] - lab["ctr"]) / lab["ctr"])
    assert lab["auc"] == pytest.approx(evaluate(full, days[2]["test"])["auc"])
    assert any(f.startswith("psi>0.25") for f in d2["failed"]) and any(
        f.startswith("oov_change>0.05") for f in d2["failed"]
    )
    # The report shows the last check written into the model folder (with --report above:
    # drift.json there is the day-1 check; the day-2 one went to --out).
    assert "<h2>Drift</h2>" in (model / "report.html").read_text()


def test_drift_check_of_rows_without_labels(
    full_and_sampled: tuple[Bundle, Bundle], days: dict[int, dict[str, Path]], tmp_path: Path
) -> None:
    """No CTR comparison; a label threshold says why it cannot pass; a malformed one is a usage error."""
    model = tmp_path / "m"
    shutil.copytree(full_and_sampled[0].path, model)
    unlabelled = tmp_path / "nolabel.tsv"
    unlabelled.write_text(
        "".join(line.split("\t", 1)[1] for line in days[2]["test"].read_text().splitlines(keepends=True)[:500])
    )
    assert main(["drift", str(model), "--data", str(unlabelled), "--fail-on", "ctr_gap>0.1", "--quiet"]) == 1
    nl = json.loads((model / "drift.json").read_text())
    assert "labels" not in nl and "no labels" in nl["failed"][0]
    assert main(["drift", str(model), "--data", str(unlabelled), "--fail-on", "psi>>1", "--quiet"]) == 2
