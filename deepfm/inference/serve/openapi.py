"""The OpenAPI description of ``POST /predict`` (``/docs``), built from the fields of the
model serving now: a reload may bring a model with other fields."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

from deepfm.inference.predictor import Predictor
from deepfm.inference.serve.requests import ARROW_STREAM
from deepfm.inference.serve.settings import LoadedModel, ServeSettings

# The answers' bodies, for /docs.
ERROR = {
    "type": "object",
    "properties": {
        "error": {
            "type": "object",
            "properties": {
                "type": {"type": "string"},
                "message": {"type": "string"},
                "record": {"type": "integer"},
                "field": {"type": "string"},
            },
        }
    },
}
OK = {
    "type": "object",
    "properties": {"probabilities": {"type": "array", "items": {"type": "number"}}, "model": {"type": "string"}},
}


def predict_openapi(predictor: Predictor, settings: ServeSettings) -> dict[str, Any]:
    """The /predict request and responses for /docs, from the model's fields."""
    kinds: dict[str, dict[str, Any]] = {
        "numeric": {"type": ["number", "string", "null"]},
        "categorical": {"type": ["string", "number", "null"]},
        "multi_hot": {
            "anyOf": [{"type": "array", "items": {"type": ["string", "number"]}}, {"type": ["string", "null"]}]
        },
    }
    record = {
        "type": "object",
        "properties": {f.name: {**kinds[f.kind], "description": f.kind} for f in predictor.schema.fields},
        "additionalProperties": False,
    }
    columns = {
        "type": "object",
        "properties": {f.name: {"type": "array", "maxItems": settings.max_records} for f in predictor.schema.fields},
        "additionalProperties": False,
    }
    body = {
        "type": "object",
        "properties": {
            "records": {"type": "array", "items": record, "maxItems": settings.max_records},
            "columns": columns,
        },
        "additionalProperties": False,
        "minProperties": 1,
        "maxProperties": 1,
    }

    def as_json(schema: dict[str, Any], description: str) -> dict[str, Any]:
        return {"description": description, "content": {"application/json": {"schema": schema}}}

    return {
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {"schema": body, "example": {"records": [predictor.example_record()]}},
                ARROW_STREAM: {"schema": {"type": "string", "format": "binary"}},
            },
        },
        "responses": {
            "200": as_json(OK, "one probability per record, in order, and the model's id"),
            "400": as_json(ERROR, "the body is not JSON"),
            "413": as_json(ERROR, "too many records, or the body is too large"),
            "422": as_json(ERROR, "a record is wrong: the error names its index and the field"),
        },
    }


def describe_app(model_id: str, settings: ServeSettings) -> str:
    """The app's description in /docs: which model answers."""
    return f"Click probabilities from DeepFM model `{model_id}` ({settings.model})."


def follow_current_model(app: Any, current: Callable[[], LoadedModel], settings: ServeSettings) -> None:
    """Make ``app.openapi()`` (/openapi.json, /docs) describe the model ``current()`` returns.
    FastAPI builds the description once, from the route's ``openapi_extra`` of the model
    loaded at start; here its model-dependent parts (the request body's fields and example,
    the app's description) are redone when the model id changes. One description is kept,
    the current model's: a swapped-out model is not asked about again until it is back."""
    built = app.openapi  # FastAPI's own: the routes, built once and cached by FastAPI
    cached: dict[str, dict[str, Any]] = {}

    def openapi() -> dict[str, Any]:
        model = current()
        if model.model_id not in cached:
            schema = copy.deepcopy(built())
            schema["info"]["description"] = describe_app(model.model_id, settings)
            operation = schema["paths"]["/predict"]["post"]
            operation["requestBody"] = predict_openapi(model.predictor, settings)["requestBody"]
            cached.clear()
            cached[model.model_id] = schema
        return cached[model.model_id]

    app.openapi = openapi
