"""ASGI middleware: the API key on every route but the open ones, and one JSON log line per request."""

from __future__ import annotations

import hmac
import logging
import time

from engine.api.errors import error_response
from engine.config import ServerConfig

access_log = logging.getLogger("engine.access")

# Readable without the key: liveness for supervisors, and the API's own description.
OPEN_PATHS = frozenset({"/health", "/openapi.json", "/docs", "/docs/oauth2-redirect"})
UNAUTHORIZED = "Incorrect or missing API key: send it as 'Authorization: Bearer <key>'."


def open_paths(server: ServerConfig) -> frozenset[str]:
    return OPEN_PATHS | ({"/metrics"} if server.metrics_public else set())


class AuthAndAccessLog:
    """Checks the API key on every route but the open ones, and writes one JSON log line per
    request (generation routes write their own richer line when the stream ends)."""

    def __init__(self, app, server: ServerConfig):
        self.app = app
        self.key = server.api_key.encode() if server.api_key else None
        self.open_paths = open_paths(server)

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started = time.monotonic()
        status_holder = {"status": 0}
        scope.setdefault("state", {})

        async def send_wrapper(message):
            if message["type"] == "http.response.start":
                status_holder["status"] = message["status"]
            await send(message)

        if scope["method"] == "POST":
            scope = assume_json_body(scope)
        if self.key is not None and scope["path"] not in self.open_paths and not self._authorized(scope):
            response = error_response(401, UNAUTHORIZED, code="invalid_api_key",
                                      headers={"WWW-Authenticate": "Bearer"})
            await response(scope, receive, send_wrapper)
        else:
            await self.app(scope, receive, send_wrapper)
        if not scope["state"].get("logged_by_handler"):
            _log_request(scope, status_holder["status"], started)

    def _authorized(self, scope) -> bool:
        for name, value in scope["headers"]:
            if name == b"authorization":
                scheme, _, token = value.partition(b" ")
                return scheme.lower() == b"bearer" and hmac.compare_digest(token.strip(), self.key)
        return False


def _log_request(scope, status: int, started: float) -> None:
    access_log.info("%s %s %s", scope["method"], scope["path"], status, extra={
        "event": "request", "method": scope["method"], "path": scope["path"],
        "status": status, "duration_ms": round((time.monotonic() - started) * 1000, 1),
    })


def assume_json_body(scope):
    """Treat a POST without a JSON content type as JSON: ``curl -d`` sends form encoding by
    default, and every body this API takes is JSON."""
    headers = [(k, v) for k, v in scope["headers"] if k != b"content-type"]
    content_type = dict(scope["headers"]).get(b"content-type", b"")
    if content_type.startswith(b"application/json"):
        return scope
    return {**scope, "headers": headers + [(b"content-type", b"application/json")]}
