"""The server's per-model state, in process: what is built once per loaded model, and what a
reload changes (the OpenAPI description, the garbage collector's frozen objects)."""

from __future__ import annotations

from helpers import simple_schema


def test_the_arrow_schema_is_built_once_per_model() -> None:
    """Every large or Arrow request reads the checked table's types: one object per checker
    (per loaded model), not one built per request."""
    from deepfm.features.records import RecordChecker

    checker = RecordChecker(simple_schema())
    assert checker.arrow_schema is checker.arrow_schema
    assert checker.arrow_schema.names == list(simple_schema().names)
