"""The OpenAPI document, made to describe what the server really does.

FastAPI's default lists a 422 the server never sends (validation errors are 400s here), knows
nothing of the API key, and cannot describe Server-Sent Events. ``build_document`` fixes those;
``event_stream`` and ``json_body`` describe what a route's decorator cannot say by itself.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from engine.api.errors import documented
from engine.protocol import ErrorResponse

REF = "#/components/schemas/{model}"
BEARER = "bearer"

# Models a document refers to that no route returns as JSON (stream events, a body read raw),
# with the mode of their schema: "serialization" for what is sent, "validation" for what is read.
_referenced: dict[str, tuple[type[BaseModel], str]] = {"ErrorResponse": (ErrorResponse, "serialization")}


def _ref(model: type[BaseModel], mode: str = "serialization") -> dict[str, str]:
    _referenced[model.__name__] = (model, mode)
    return {"$ref": REF.format(model=model.__name__)}


def event_stream(description: str, *models: type[BaseModel], done: bool = False) -> dict[str, Any]:
    """A 200 of Server-Sent Events, each ``data:`` one of ``models`` as JSON (or, when ``done``,
    the ``[DONE]`` that ends the stream). ``itemSchema`` describes one event, as OpenAPI 3.2 and
    FastAPI's own streaming routes put it."""
    json_data = {"type": "string", "contentMediaType": "application/json",
                 "contentSchema": {"anyOf": [_ref(model) for model in models]}}
    data = {"anyOf": [{"const": "[DONE]"}, json_data]} if done else json_data
    event = {"type": "object", "required": ["data"], "properties": {"data": data}}
    return {"description": description, "content": {"text/event-stream": {"itemSchema": event}}}


def json_body(model: type[BaseModel]) -> dict[str, Any]:
    """``openapi_extra`` for a route that reads its JSON body itself."""
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": _ref(model, "validation")}}}}


def build_document(app: FastAPI, api_key: bool, open_paths: frozenset[str]) -> dict[str, Any]:
    doc = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
    schemas = doc.setdefault("components", {}).setdefault("schemas", {})
    _, extra = models_json_schema(list(_referenced.values()), ref_template=REF)
    for name, schema in extra.get("$defs", {}).items():
        schemas.setdefault(name, schema)
    for path, operations in doc["paths"].items():
        for operation in operations.values():
            operation["responses"].pop("422", None)  # validation failures are 400s (errors.py)
            _one_schema_per_stream(operation["responses"])
            if api_key and path not in open_paths:
                operation["responses"].setdefault("401", _error_response(401))
            elif api_key:
                operation["security"] = []  # open: readable without the key
    for unused in ("HTTPValidationError", "ValidationError"):
        schemas.pop(unused, None)
    if api_key:
        doc["components"]["securitySchemes"] = {BEARER: {"type": "http", "scheme": "bearer"}}
        doc["security"] = [{BEARER: []}]
    return doc


def _error_response(status: int) -> dict[str, Any]:
    entry = documented(status)[status]
    return {"description": entry["description"],
            "content": {"application/json": {"schema": {"$ref": REF.format(model="ErrorResponse")}}}}


def _one_schema_per_stream(responses: dict[str, Any]) -> None:
    """FastAPI gives a stream route's 200 ``schema: string`` beside our ``itemSchema``; in
    OpenAPI 3.2 that would claim the events as one string, so the stream keeps its item schema only."""
    for response in responses.values():
        stream = response.get("content", {}).get("text/event-stream")
        if stream and "itemSchema" in stream:
            stream.pop("schema", None)
