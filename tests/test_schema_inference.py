"""Schema inference: kinds decided from the values (ids, counts, measures, lists), names as
hints, the YAML `deepfm schema` prints, and configs that hold only model/train/data."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
import yaml

from deepfm.cli import main
from deepfm.data.schema import Schema
from deepfm.data.schema_inference import guess_field, infer_fields

from helpers import write_rows


def movie_like(n: int = 20_000, seed: int = 0) -> dict[str, np.ndarray | list[str]]:
    """Columns as rating logs have them: integer user and item ids of uneven popularity, a
    user's age, zip codes, genre lists, timestamps, counts."""
    rng = np.random.default_rng(seed)
    users, items = rng.lognormal(0, 1.2, 500), rng.lognormal(0, 1.5, 900)
    user = rng.choice(np.arange(1, 501), n, p=users / users.sum())
    item = rng.choice(np.arange(1, 901), n, p=items / items.sum())
    genres = ["Action", "Comedy", "Drama", "Horror", "Romance", "SciFi", "War"]
    item_genres = ["|".join(rng.choice(genres, rng.integers(1, 4), replace=False)) for _ in range(901)]
    return {
        "a": user,  # ids without a telling name
        "b": item,
        "zip": rng.integers(1000, 99999, 501)[user],
        "genres": [item_genres[i] for i in item],
        "t": 874_724_710 + np.sort(rng.integers(0, 20_000_000, n)),  # a time: nearly every value distinct
        "v": np.floor(rng.lognormal(1, 1.5, n)).astype(np.int64),  # a count from 0, heavy tailed
        "h": np.round(rng.normal(170, 10, n)).astype(np.int64),  # a measure: a smooth histogram
        "hour": rng.integers(0, 24, n),  # a small code set
        "price": np.round(rng.lognormal(3, 0.5, n), 2),  # fractions
    }


def test_kinds_follow_the_values() -> None:
    guesses = {g.spec.name: g for g in infer_fields(pa.table(movie_like()))}
    kinds = {name: (g.spec.kind, g.spec.binning if g.spec.kind == "numeric" else None) for name, g in guesses.items()}
    assert kinds == {
        "a": ("categorical", None),
        "b": ("categorical", None),
        "zip": ("categorical", None),
        "genres": ("multi_hot", None),
        "t": ("numeric", "quantile"),
        "v": ("numeric", "log"),
        "h": ("numeric", "quantile"),
        "hour": ("categorical", None),
        "price": ("numeric", "quantile"),
    }
    assert guesses["genres"].spec.separator == "|"
    assert "identifier" in guesses["a"].reason and "counts" in guesses["v"].reason and "smooth" in guesses["h"].reason


def test_names_are_hints_and_text_numbers_are_numbers() -> None:
    rng = np.random.default_rng(1)
    ages = np.round(rng.normal(35, 9, 5000)).astype(np.int64)
    # The same smooth values: a measure unless the name says it names things.
    assert guess_field("score", pa.array(ages)).spec.kind == "numeric"
    assert guess_field("user_id", pa.array(ages)).spec.kind == "categorical"
    assert guess_field("UserId", pa.array(ages)).spec.kind == "categorical"
    # Text holding numbers (a CSV read as text) is judged as the numbers; blanks are missing.
    text = pa.array([str(v) if i % 7 else " " for i, v in enumerate(np.floor(rng.lognormal(1, 1.5, 5000)).astype(int))])
    assert (guess_field("c", text).spec.kind, guess_field("c", text).spec.binning) == ("numeric", "log")
    # Hashes that look like numbers in places ('8e123456' overflows to inf) stay text.
    assert guess_field("h", pa.array(["8e123456", "00ab12cd", "1234"] * 20)).spec.kind == "categorical"


def test_text_lists_need_repeating_items() -> None:
    repeating = pa.array([f"a{i % 4}|b{i % 5}" for i in range(100)])  # 20 pairs of 9 items
    assert guess_field("x", repeating).spec.kind == "multi_hot"
    # A separator inside unrelated unique text is no list: splitting would not reduce the values.
    unique = pa.array([f"street {i}; flat {i + 1000}" for i in range(100)])
    assert guess_field("address", unique).spec.kind == "categorical"


def test_schema_command_prints_a_config_that_trains(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cols = movie_like(3000, seed=2)
    rng = np.random.default_rng(3)
    label = (rng.random(3000) < 0.3).astype(int)
    names = ["label", *cols]
    data = write_rows(
        tmp_path / "d.csv", [[str(label[i]), *(str(cols[c][i]) for c in cols)] for i in range(3000)], names
    )
    assert main(["schema", "--data", str(data)]) == 0
    text = capsys.readouterr().out
    assert text.startswith("# The schema deepfm infers for") and "# " in text.splitlines()[4]  # a reason per field
    config = yaml.safe_load(text)
    schema = Schema.from_dict(config)
    assert schema.label == "label" and [f.name for f in schema.fields] == list(cols)
    assert schema.field("genres").kind == "multi_hot" and schema.field("a").kind == "categorical"
    # The printed file trains as a config, with model and train sections added to it.
    (tmp_path / "s.yaml").write_text(text + "model: {embedding_dim: 4, hidden: [8]}\ntrain: {epochs: 1, threads: 1}\n")
    out = tmp_path / "m"
    assert (
        main(
            [
                "train",
                "--data",
                str(data),
                "--config",
                str(tmp_path / "s.yaml"),
                "--split",
                "0.8,0.2",
                "--out",
                str(out),
                "--quiet",
            ]
        )
        == 0
    )
    saved = json.loads((out / "config.json").read_text())
    assert [f["kind"] for f in saved["fields"]] == [f.kind for f in schema.fields]


def test_a_config_of_model_and_train_takes_its_fields_from_inference_or_a_preset(tmp_path: Path) -> None:
    cols = movie_like(2000, seed=4)
    label = (np.random.default_rng(5).random(2000) < 0.3).astype(int)
    data = write_rows(
        tmp_path / "d.csv", [[str(label[i]), *(str(cols[c][i]) for c in cols)] for i in range(2000)], ["label", *cols]
    )
    cfg = tmp_path / "c.yaml"
    cfg.write_text("model: {embedding_dim: 4, hidden: [8]}\ntrain: {epochs: 1, threads: 1, lr: 0.002}\n")
    assert (
        main(
            [
                "train",
                "--data",
                str(data),
                "--config",
                str(cfg),
                "--split",
                "0.8,0.2",
                "--out",
                str(tmp_path / "m"),
                "--quiet",
            ]
        )
        == 0
    )
    saved = json.loads((tmp_path / "m" / "config.json").read_text())
    assert saved["model"]["embedding_dim"] == 4 and saved["train"]["lr"] == 0.002
    assert {f["name"]: f["kind"] for f in saved["fields"]}["genres"] == "multi_hot"
