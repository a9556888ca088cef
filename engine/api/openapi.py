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

from engine.api.errors import RATE_LIMIT_HEADERS, RETRY_AFTER, documented
from engine.api.middleware import UNLIMITED_PATHS
from engine.service.keys import may_use_route
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


def build_document(app: FastAPI, api_key: bool, open_paths: frozenset[str],
                   roles: frozenset[str] = frozenset()) -> dict[str, Any]:
    """Args:
        api_key: keys are configured (401 on every route but the open ones).
        roles: the roles of those keys: a route some role may not use lists 403.

    Rate limits can be set at run time (``PUT /admin/config``), so every route but /health
    lists 429 and the ``x-ratelimit-*`` headers, whatever the limits are now.
    """
    doc = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
    schemas = doc.setdefault("components", {}).setdefault("schemas", {})
    _, extra = models_json_schema(list(_referenced.values()), ref_template=REF)
    for name, schema in extra.get("$defs", {}).items():
        schemas.setdefault(name, schema)
    for path, operations in doc["paths"].items():
        for method, operation in operations.items():
            operation["responses"].pop("422", None)  # validation failures are 400s (errors.py)
            _one_schema_per_stream(operation["responses"])
            if api_key and path not in open_paths:
                operation["responses"].setdefault("401", _error_response(401))
                if any(not may_use_route(role, method.upper(), _concrete(path)) for role in roles):
                    operation["responses"].setdefault("403", _error_response(403))
            elif api_key:
                operation["security"] = []  # open: readable without the key
            if path not in UNLIMITED_PATHS:
                _rate_limit_headers(operation["responses"])
    for unused in ("HTTPValidationError", "ValidationError"):
        schemas.pop(unused, None)
    if api_key:
        doc["components"]["securitySchemes"] = {BEARER: {"type": "http", "scheme": "bearer"}}
        doc["security"] = [{BEARER: []}]
    return doc


def _concrete(path: str) -> str:
    """A path as requested: ``/v1/models/{model_id}`` → ``/v1/models/x``."""
    return path.replace("{model_id}", "x")


def _rate_limit_headers(responses: dict[str, Any]) -> None:
    responses.setdefault("429", _error_response(429))
    responses["429"].setdefault("headers", {}).update(RETRY_AFTER)
    for response in responses.values():
        response.setdefault("headers", {}).update(RATE_LIMIT_HEADERS)


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
