"""The server's per-model state, in process: what is built once per loaded model, and what a
reload changes (the OpenAPI description, the garbage collector's frozen objects)."""

from __future__ import annotations

import asyncio
import gc
import weakref
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from deepfm.bundle import Bundle
from deepfm.data.schema import Schema
from deepfm.training import train

from helpers import SIMPLE_FIELDS, simple_records, simple_schema, small_config, write_records_csv
from serving import point

pytest.importorskip("fastapi")


def test_the_arrow_schema_is_built_once_per_model() -> None:
    """Every large or Arrow request reads the checked table's types: one object per checker
    (per loaded model), not one built per request."""
    from deepfm.features.records import RecordChecker

    checker = RecordChecker(simple_schema())
    assert checker.arrow_schema is checker.arrow_schema
    assert checker.arrow_schema.names == list(simple_schema().names)


def test_a_list_of_numbers_is_joined_alike_from_json_arrow_and_a_dataframe() -> None:
    """A multi-hot list [1.0, 2.5, 3] holds the tokens "1", "2.5", "3" whether it comes as
    JSON records or columns, an Arrow list column, or a DataFrame's list column (the
    estimator's join_lists): integral numbers read as a categorical's do ("1", not "1.0")."""
    import pyarrow as pa

    from deepfm.estimator.tables import join_lists
    from deepfm.features.records import RecordChecker

    checker = RecordChecker(simple_schema())
    tags = [1.0, 2.5, 3]
    records = checker.records_table([{"tags": tags}])
    assert records.column("tags").to_pylist() == ["1|2.5|3"]
    assert checker.columns_table({"tags": [tags]}, 1).equals(records)
    assert checker.table([checker.check([{"tags": tags}])]).equals(records)
    as_arrow = pa.table({"tags": pa.array([[1.0, 2.5, 3.0]], pa.list_(pa.float64()))})
    assert checker.arrow_table(as_arrow).equals(records)
    assert join_lists(as_arrow, simple_schema()).column("tags").to_pylist() == ["1|2.5|3"]
    float32 = pa.table({"tags": pa.array([[0.1, 2.0]], pa.list_(pa.float32()))})  # float32's own text, as Arrow bodies
    assert join_lists(float32, simple_schema()).column("tags").to_pylist() == ["0.1|2"]
    assert checker.arrow_table(float32).column("tags").to_pylist() == ["0.1|2"]


def test_large_and_signed_numbers_in_a_list_are_the_same_tokens_from_json_and_arrow() -> None:
    """Past float text's exponent, and at -0.0: a JSON list and an Arrow list<double> give the
    same tokens (a plain Arrow cast writes 12345678901.0 as "1.2345678901e+10"), and so does
    the estimator's join_lists; past int64 a number keeps its float text in all of them, as a
    file's numeric categorical does."""
    import pyarrow as pa

    from deepfm.estimator.tables import join_lists
    from deepfm.features.records import RecordChecker

    checker = RecordChecker(simple_schema())
    tags = [12345678901.0, -0.0, 2.5, 1e20]
    records = checker.records_table([{"tags": tags}, {"tags": [float(2**53)]}])
    assert records.column("tags").to_pylist() == ["12345678901|0|2.5|1e+20", "9007199254740992"]
    as_arrow = pa.table({"tags": pa.array([tags, [float(2**53)]], pa.list_(pa.float64()))})
    assert checker.arrow_table(as_arrow).equals(records)
    chunked = pa.Table.from_batches(as_arrow.slice(0, 1).to_batches() + as_arrow.slice(1).to_batches())
    assert checker.arrow_table(chunked).column("tags").to_pylist() == records.column("tags").to_pylist()
    assert join_lists(as_arrow, simple_schema()).column("tags").to_pylist() == records.column("tags").to_pylist()


@pytest.fixture(scope="module")
def two_models(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A model of the four simple fields, and one without 'tags' (another schema)."""
    tmp = tmp_path_factory.mktemp("serve-models")
    data = write_records_csv(tmp / "train.csv", simple_records(1000, seed=21))
    train(small_config(simple_schema()), data, tmp / "four", split="0.8,0.1,0.1")
    three = Schema(label="label", fields=tuple(f for f in simple_schema().fields if f.name != "tags"))
    train(small_config(three), data, tmp / "three", split="0.8,0.1,0.1")
    return tmp / "four", tmp / "three"


@pytest.fixture
def settled() -> Iterator[None]:
    """Undo what loading and reloading a model do to this test process: torch's thread count
    (load_model sets it) and the garbage collector's frozen objects (a reload freezes)."""
    import torch

    threads = torch.get_num_threads()
    try:
        yield
    finally:
        gc.enable()
        gc.unfreeze()
        torch.set_num_threads(threads)


def test_openapi_follows_the_model_a_reload_serves(
    two_models: tuple[Path, Path], tmp_path: Path, settled: None
) -> None:
    """/openapi.json (and /docs) describe the fields of the model serving now, not those of
    the model loaded at start."""
    from deepfm.inference.serve.app import create_app
    from deepfm.inference.serve.settings import ServeSettings, load_model

    four, three = two_models
    link = tmp_path / "current"
    point(link, four)
    settings = ServeSettings(model=str(link))
    served = create_app(load_model(settings), settings)
    app, state = served.app, served.state

    def described(model: Path) -> tuple[set[str], set[str], bool]:
        spec = app.openapi()
        body = spec["paths"]["/predict"]["post"]["requestBody"]["content"]["application/json"]
        fields = set(body["schema"]["properties"]["records"]["items"]["properties"])
        names_it = f"`{Bundle.load(model).model_id}`" in spec["info"]["description"]
        return fields, set(body["example"]["records"][0]), names_it

    assert described(four) == (set(SIMPLE_FIELDS), set(SIMPLE_FIELDS), True)
    point(link, three)
    assert asyncio.run(state.models.reload())["swapped"]
    assert described(three) == ({"user", "item", "price"}, {"user", "item", "price"}, True)
    assert app.openapi() is app.openapi()  # built once per model, not per request


def test_a_reload_collects_before_it_freezes(
    two_models: tuple[Path, Path], tmp_path: Path, settled: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Cyclic garbage present when a reload freezes the new model's objects is collected
    first: frozen, it would never be freed."""
    from deepfm.inference.serve import reload
    from deepfm.inference.serve.metrics import Metrics
    from deepfm.inference.serve.settings import LoadedModel, ServeSettings, load_model

    class Cycle:
        me: object = None

    garbage: list[weakref.ref[Cycle]] = []

    def load_leaving_a_cycle(settings: ServeSettings) -> LoadedModel:
        loaded = load_model(settings)
        cycle = Cycle()
        cycle.me = cycle  # unreachable once this returns, freed by a collection only
        garbage.append(weakref.ref(cycle))
        return loaded

    four, three = two_models
    link = tmp_path / "current"
    point(link, four)
    settings = ServeSettings(model=str(link))
    models = reload.Models(settings, load_model(settings), Metrics())
    monkeypatch.setattr(reload, "load_model", load_leaving_a_cycle)
    point(link, three)
    gc.disable()  # no automatic collection between the load and the freeze: only the reload's
    assert asyncio.run(models.reload())["swapped"]
    gc.collect()  # frozen objects are beyond any collection, this one's too
    assert garbage and garbage[0]() is None, "the reload froze cyclic garbage"


def test_a_body_still_arriving_at_a_swap_is_scored_by_the_new_model(
    two_models: tuple[Path, Path], tmp_path: Path, settled: None
) -> None:
    """The model that checks and scores a request is the one serving once its body is in: a
    reload while the body arrives answers it with the new model (and does not hold the old)."""
    import orjson

    from deepfm.inference.serve.app import create_app
    from deepfm.inference.serve.routes import answer_predict
    from deepfm.inference.serve.settings import ServeSettings, load_model

    four, three = two_models
    link = tmp_path / "current"
    point(link, four)
    settings = ServeSettings(model=str(link))
    state = create_app(load_model(settings), settings).state
    body = orjson.dumps({"records": [{"user": "u1", "item": "item1", "price": 3.5}]})

    async def arriving() -> AsyncIterator[bytes]:
        yield body[:10]
        point(link, three)
        assert (await state.models.reload())["swapped"]  # the swap, mid-body
        yield body[10:]

    async def run() -> tuple[bytes, str]:
        state.batcher.start()
        try:
            return await answer_predict(state, None, arriving(), "application/json")
        finally:
            await state.batcher.stop()

    answer, model_id = asyncio.run(run())
    assert model_id == Bundle.load(three).model_id == orjson.loads(answer)["model"]
