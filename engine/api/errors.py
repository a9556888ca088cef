"""Every error the server sends is OpenAI-shaped: ``{"error": {"message", "type", "param", "code"}}``.

``APIError`` carries one from a route; the handlers here turn validation failures, unknown routes,
wrong methods and bugs into the same shape. ``documented`` lists a route's errors for OpenAPI.
"""

from __future__ import annotations

import logging
from typing import Any, Optional

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from engine.protocol import ErrorDetail, ErrorResponse
from engine.search.service import AlreadyIndexing
from engine.search.store import CollectionExists, StoreError, UnknownCollection
from engine.service.errors import ServiceError, describe_validation_errors

log = logging.getLogger("engine.server")

# What each status means on this server, for the OpenAPI document.
MEANINGS = {
    400: "The request is malformed or asks for what the engine cannot do (the message names the field)",
    401: "Missing or wrong API key (send it as 'Authorization: Bearer <key>')",
    403: "The key's role may not use this route (the message names the role)",
    404: "No such model (or model folder)",
    409: "Conflicts with a load in progress, or with none",
    429: "Over the key's rate limit, or too many requests waiting; retry after the Retry-After seconds",
    500: "Generation failed inside the engine",
    503: "No model is ready (none loaded, loading, or failed to load), or the circuit breaker is open"
         " (then with Retry-After)",
    504: "The request ran past batching.request_timeout_s",
}


class APIError(ServiceError):
    """A route's refusal; ``engine.service.errors.ServiceError`` from the shared layer is answered
    the same way."""


def error_body(message: str, error_type: str, param: Optional[str] = None, code: Any = None) -> dict:
    return ErrorResponse(error=ErrorDetail(message=message, type=error_type, param=param, code=code)).model_dump()


def error_response(status: int, message: str, error_type: str = "invalid_request_error",
                   param: Optional[str] = None, code: Any = None,
                   headers: Optional[dict[str, str]] = None) -> JSONResponse:
    return JSONResponse(error_body(message, error_type, param, code), status_code=status, headers=headers)


RETRY_AFTER = {"Retry-After": {"description": "seconds to wait before retrying", "schema": {"type": "integer"}}}
# OpenAI's rate-limit headers: on every answer to a caller that has a limit (the -tokens trio
# when it has a token limit).
RATE_LIMIT_HEADERS = {
    f"x-ratelimit-{kind}-{unit}": {"description": description.format(unit=unit), "schema": schema}
    for unit in ("requests", "tokens")
    for kind, description, schema in (
        ("limit", "{unit} allowed at once (the bucket's size; tokens: per minute)", {"type": "string", "pattern": "^[0-9]+$"}),
        ("remaining", "{unit} left now", {"type": "string", "pattern": "^[0-9]+$"}),
        ("reset", "time until the bucket of {unit} is full again, e.g. 20ms, 1.5s, 6m0s", {"type": "string"}),
    )
}
RETRY_STATUSES = (429, 503)


def documented(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """The ``responses`` of a route that may answer ``statuses`` with an OpenAI error."""
    return {status: {"model": ErrorResponse, "description": MEANINGS[status],
                     **({"headers": RETRY_AFTER} if status in RETRY_STATUSES else {})} for status in statuses}


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(ServiceError, _api_error)
    app.add_exception_handler(StoreError, _store_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(Exception, _unexpected)


async def _api_error(request: Request, exc: ServiceError) -> JSONResponse:
    return error_response(exc.status, exc.message, exc.error_type, exc.param, exc.code, exc.headers or None)


def store_refusal(exc: StoreError) -> ServiceError:
    """A document-index refusal as the API answers it: unknown collection 404, a name taken or a
    run already going 409, anything else (a bad name, a folder) 400."""
    if isinstance(exc, UnknownCollection):
        return ServiceError(404, str(exc), param="collection", code="unknown_collection")
    if isinstance(exc, (CollectionExists, AlreadyIndexing)):
        return ServiceError(409, str(exc), code="conflict")
    return ServiceError(400, str(exc), code="invalid_collection")


async def _store_error(request: Request, exc: StoreError) -> JSONResponse:
    return await _api_error(request, store_refusal(exc))


async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
    """A 400 naming every refused field and value (FastAPI's own answer is a 422 of another shape)."""
    errors = exc.errors()
    first = errors[0] if errors else {}
    if first.get("type") == "json_invalid":
        return error_response(400, f"the request body is not valid JSON: {first.get('msg')}")
    message, param = describe_validation_errors(errors)
    return error_response(400, message, param=param)


async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
    status = exc.status_code
    message = {404: f"no route {request.method} {request.url.path}",
               405: f"method {request.method} is not allowed on {request.url.path}"}.get(status, str(exc.detail))
    headers = dict(exc.headers or {})
    if status == 405:
        headers["Allow"] = _allowed_methods(request)
    return error_response(status, message, "invalid_request_error" if status < 500 else "server_error",
                          headers=headers or None)


HTTP_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")


def _allowed_methods(request: Request) -> str:
    """Every method some route takes on this path: Starlette names only the first route's
    (``/admin/config`` has a GET route and a PUT route), and routers nest."""
    routes = request.app.router.routes
    return ", ".join(method for method in HTTP_METHODS
                     if any(route.matches({**request.scope, "method": method})[0] == Match.FULL for route in routes))


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    log.exception("unhandled error on %s", request.url.path)
    return error_response(500, f"internal error: {type(exc).__name__}: {exc}", "server_error")
