"""The Predictor, the one scoring path: records are checked strictly with errors that name
the record and field, tables are read like files, and small lookups (dicts) give the same
ids as large ones (pc.index_in)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from deepfm.data.readers import open_reader
from deepfm.data.schema import CRITEO_COLUMNS, criteo_schema
from deepfm.data.source import ReadOptions
from deepfm.data.tables import TableSource
from deepfm.errors import DataError
from deepfm.features.pipeline import FeaturePipeline
from deepfm.inference.predictor import Predictor
from deepfm.training import train

from helpers import (
    SIMPLE_FIELDS,
    assert_identical_scores,
    assert_scores_close,
    assert_scores_differ,
    criteo_rows,
    encoded_rows,
    simple_records,
    simple_schema,
    small_config,
    write_records_csv,
)


@pytest.fixture(scope="module")
def predictor(tmp_path_factory: pytest.TempPathFactory) -> Predictor:
    tmp = tmp_path_factory.mktemp("predictor")
    data = write_records_csv(tmp / "train.csv", simple_records(2000, seed=2))
    train(small_config(simple_schema()), data, tmp / "model", split="0.8,0.1,0.1")
    return Predictor.load(tmp / "model")


def test_bundle_predict_goes_through_the_predictor(predictor: Predictor) -> None:
    rows = [{k: r[k] for k in SIMPLE_FIELDS} for r in simple_records(300, seed=3)]
    p = predictor.predict(rows)
    assert_identical_scores(p, predictor.bundle.predict(rows), "Bundle.predict runs the Predictor on the same batch")
    # one table for many requests scores each row as the one request of all the rows would:
    # checked in parts, joined, then scored in the same single batch of 300
    parts = [predictor.check_records(rows[i : i + 7]) for i in range(0, 300, 7)]
    assert_identical_scores(predictor.predict_table(predictor.table(parts)), p, "parts joined into the same table")


@pytest.mark.parametrize(
    "records,words",
    [
        ([{"user": "u1"}, {"usr": "u1"}], ["record 1", "field 'usr'", "did you mean 'user'"]),
        ([{"colour": "red"}], ["record 0", "field 'colour'", "the model's fields are user, item, price, tags"]),
        ([{"price": "12,5"}], ["record 0", "field 'price'", "expected a number, got '12,5'"]),
        ([{"price": float("inf")}], ["record 0", "field 'price'", "expected a finite number"]),
        ([{"price": np.float32("-inf")}], ["record 0", "field 'price'", "expected a finite number"]),
        ([{}, {}, {"tags": [None]}], ["record 2", "field 'tags'", "list of strings or numbers"]),
        ([{"item": {"a": 1}}], ["record 0", "field 'item'", "expected a string or number"]),
        ([["user", "u1"]], ["record 0", "expected an object"]),
        ({"user": "u1"}, []),  # one dict is one record: no error
    ],
)
def test_record_errors_name_record_and_field(predictor: Predictor, records: object, words: list[str]) -> None:
    if not words:
        assert predictor.predict(records).shape == (1,)
        return
    with pytest.raises(DataError) as info:
        predictor.predict(records)
    for word in words:
        assert word in str(info.value)


def test_values_as_a_file_would_hold_them(predictor: Predictor) -> None:
    base = {"user": "u3", "item": "item2", "price": 4.0, "tags": ["red", "small"]}
    same = [
        base,
        {**base, "price": "4"},  # a number written as text
        {**base, "price": " 4.0 "},
        {**base, "price": np.float64(4.0)},
        {**base, "tags": "red|small"},
        {**base, "label": 0},  # the label is dropped
    ]
    # Every way of writing it encodes to the same model input, exactly ...
    assert encoded_rows(predictor, same) == [encoded_rows(predictor, [base])[0]] * len(same)
    # ... so the scores agree, at float32 tolerance: rows 1-5 sit at other batch positions
    p = predictor.predict(same)
    assert_scores_close(p, np.full(len(same), p[0]), "one record written six ways")
    gaps = [{**base, "price": None}, {**base, "price": float("nan")}, {**base, "price": ""}]
    assert (
        len(set(encoded_rows(predictor, gaps))) == 1
        and encoded_rows(predictor, gaps)[0] != encoded_rows(predictor, [base])[0]
    )
    missing = predictor.predict(gaps)
    assert_scores_close(missing, np.full(3, missing[0]), "None, NaN and '' are one missing value")
    assert_scores_differ(missing[0], p[0], "a missing price against price 4")
    table = predictor.records_table([base, {"item": 7.0}])
    assert table.column_names == list(SIMPLE_FIELDS)
    assert table.column("item").to_pylist() == ["item2", "7"]  # 7.0 and 7 are one category
    assert table.column("price").type == pa.float64() and table.column("price").null_count == 1


def test_dataframe_columns_outside_the_schema_are_ignored(predictor: Predictor) -> None:
    import pandas as pd

    rows = [{k: r[k] for k in SIMPLE_FIELDS} for r in simple_records(20, seed=4)]
    frame = pd.DataFrame(rows).assign(request_id=range(20))
    assert_identical_scores(
        predictor.predict(frame), predictor.predict(rows), "the same 20 rows in one batch either way"
    )


def test_example_record_is_typical(predictor: Predictor) -> None:
    example = predictor.example_record()
    assert set(example) == set(SIMPLE_FIELDS)
    states = predictor.pipeline.states
    assert example["item"] == states["item"].vocab[0].as_py()  # the most frequent value
    assert isinstance(example["tags"], list) and isinstance(example["price"], float)
    assert predictor.predict(example).shape == (1,)


def test_small_lookups_give_the_ids_of_large_ones(tmp_path: Path) -> None:
    """Chunks of up to 1024 keys look values up in a dict, larger ones with pc.index_in."""
    path = tmp_path / "c.tsv"
    path.write_text("\n".join("\t".join(r) for r in criteo_rows(3000, seed=5)) + "\n")
    schema = criteo_schema(min_count=60)  # rare values go to OOV rows
    reader = open_reader(path, ReadOptions(), column_names=CRITEO_COLUMNS)
    pipeline = FeaturePipeline(schema).fit(reader.chunks([schema.label, *schema.names], schema.numeric_columns))
    table = pa.concat_tables([c.table for c in reader.chunks(schema.names, schema.numeric_columns)])
    big = pipeline.encode(next(TableSource(table).chunks(schema.names, 3000)), with_labels=False)
    small = [pipeline.encode(c, with_labels=False) for c in TableSource(table).chunks(schema.names, 100)]
    assert np.array_equal(np.concatenate([s.ids for s in small]), big.ids)
    local = big.ids - np.array([pipeline.states[n].offset for n in schema.names])
    assert {0, 1, 2} <= set(np.unique(local))  # OOV, missing and vocabulary rows all compared
