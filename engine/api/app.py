"""The app factory: one FastAPI app around one Engine, with its routers, middleware and errors."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI

from engine.api.errors import install_error_handlers
from engine.api.middleware import AuthAndAccessLog, open_paths
from engine.api.openapi import build_document
from engine.api.routers import admin, health, openai
from engine.core import Engine

DESCRIPTION = ("The DeepSeek Desktop worker: an OpenAI-compatible API (chat and text completions, "
               "models), admin routes to load and tune the model, health and Prometheus metrics.")


def create_app(engine: Engine) -> FastAPI:
    server = engine.config.server
    app = FastAPI(title="DeepSeek Desktop engine", version="0.1.0", description=DESCRIPTION,
                  docs_url="/docs", redoc_url=None)
    app.state.engine = engine
    app.add_middleware(AuthAndAccessLog, server=server)
    install_error_handlers(app)
    for area in (openai, admin, health):
        app.include_router(area.router)
    app.openapi = _document_once(app, api_key=bool(server.api_key), open_to_all=open_paths(server))
    return app


def _document_once(app: FastAPI, api_key: bool, open_to_all: frozenset[str]):
    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = build_document(app, api_key, open_to_all)
        return app.openapi_schema

    return openapi
