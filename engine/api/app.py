"""The app factory: one FastAPI app around one Engine, with its routers, middleware and errors."""

from __future__ import annotations

from typing import Any, Optional

from fastapi import FastAPI

from engine.api.errors import install_error_handlers
from engine.api.middleware import AuthAndAccessLog, open_paths
from engine.api.openapi import build_document
from engine.api.routers import admin, health, openai, search
from engine.core import Engine
from engine.service import Service

DESCRIPTION = ("The DeepSeek Desktop worker: an OpenAI-compatible API (chat and text completions, "
               "models), admin routes to load and tune the model, health and Prometheus metrics.")


def create_app(engine: Engine, service: Optional[Service] = None) -> FastAPI:
    """The REST face of ``engine``; ``service`` (keys, rate limits, circuit breaker) is shared
    with the gRPC face when one runs, and made from ``[server]`` otherwise.

    Raises:
        engine.config.ConfigError: a key's ``key_env`` variable is not set.
    """
    service = service or Service(engine.config.server, engine.metrics, engine.events)
    app = FastAPI(title="DeepSeek Desktop engine", version="0.1.0", description=DESCRIPTION,
                  docs_url="/docs", redoc_url=None)
    app.state.engine = engine
    app.state.service = service
    app.add_middleware(AuthAndAccessLog, service=service)
    install_error_handlers(app)
    for area in (openai, admin, health, search):
        app.include_router(area.router)
    app.openapi = _document_once(app, service)
    return app


def _document_once(app: FastAPI, service: Service):
    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = build_document(app, service.keys.enabled, open_paths(service.server),
                                                roles=frozenset(service.keys.roles))
        return app.openapi_schema

    return openapi
