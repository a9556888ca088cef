"""ASGI middleware: who calls (named keys), whether the key's role may use the route, whether
the caller is within its rate limit; then one JSON log line per request, naming the key."""

from __future__ import annotations

import logging
import time

from engine.api.errors import error_response
from engine.config import ServerConfig
from engine.service import Service, ServiceError
from engine.service.keys import Principal, bearer_token

access_log = logging.getLogger("engine.access")

# Readable without the key: liveness for supervisors, and the API's own description.
OPEN_PATHS = frozenset({"/health", "/openapi.json", "/docs", "/docs/oauth2-redirect"})
# Not counted by the rate limits: supervisors poll it, and it must answer while a client is refused.
UNLIMITED_PATHS = frozenset({"/health"})


def open_paths(server: ServerConfig) -> frozenset[str]:
    return OPEN_PATHS | ({"/metrics"} if server.metrics_public else set())


class AuthAndAccessLog:
    """Checks the key and its role on every route but the open ones, takes one request from the
    caller's rate limit (every route but ``/health``), adds the ``x-ratelimit-*`` headers to the
    answer, and writes one JSON log line per request (generation routes write their own richer
    line when the stream ends)."""

    def __init__(self, app, service: Service):
        self.app = app
        self.service = service
        self.open_paths = open_paths(service.server)

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started = time.monotonic()
        status_holder = {"status": 0}
        scope.setdefault("state", {})
        extra_headers: list[tuple[bytes, bytes]] = []

        async def send_wrapper(message):
            if message["type"] == "http.response.start":
                status_holder["status"] = message["status"]
                if extra_headers:
                    message = {**message, "headers": [*message.get("headers", []), *extra_headers]}
            await send(message)

        if scope["method"] == "POST":
            scope = assume_json_body(scope)
        try:
            principal = self._admit(scope, extra_headers)
        except ServiceError as exc:
            response = error_response(exc.status, exc.message, exc.error_type, exc.param, exc.code,
                                      headers=exc.headers or None)
            await response(scope, receive, send_wrapper)
        else:
            scope["state"]["principal"] = principal
            await self.app(scope, receive, send_wrapper)
        if not scope["state"].get("logged_by_handler"):
            _log_request(scope, status_holder["status"], started)

    def _admit(self, scope, extra_headers: list) -> Principal:
        """The caller, once allowed in; the rate-limit headers go into ``extra_headers``.

        Raises:
            ServiceError: 401 wrong key, 403 role, 429 over the limit.
        """
        path, method = scope["path"], scope["method"]
        token = bearer_token(_header(scope, b"authorization"))
        if path in self.open_paths:
            principal = self.service.keys.identify(token) or Principal(None, "anonymous")
        else:
            principal = self.service.identify(token)
            self.service.authorize_route(principal, method, path)
        scope["state"]["key"] = principal.name
        if path in UNLIMITED_PATHS:
            return principal
        client = scope.get("client")
        decision = self.service.admit_rate(principal, client[0] if client else None)
        extra_headers.extend((name.encode(), value.encode()) for name, value in decision.headers.items())
        if not decision.allowed:
            raise ServiceError(429, decision.reason, "rate_limit_error", code="rate_limit_exceeded",
                               retry_after=decision.retry_after)
        return principal


def _header(scope, name: bytes):
    for key, value in scope["headers"]:
        if key == name:
            return value
    return None


def _log_request(scope, status: int, started: float) -> None:
    access_log.info("%s %s %s", scope["method"], scope["path"], status, extra={
        "event": "request", "method": scope["method"], "path": scope["path"],
        "status": status, "duration_ms": round((time.monotonic() - started) * 1000, 1),
        "key": scope["state"].get("key"),
    })


def assume_json_body(scope):
    """Treat a POST without a JSON content type as JSON: ``curl -d`` sends form encoding by
    default, and every body this API takes is JSON."""
    content_type = b""
    for key, value in scope["headers"]:  # the last one counts, as it always did
        if key == b"content-type":
            content_type = value
    if content_type.startswith(b"application/json"):
        return scope
    headers = [(k, v) for k, v in scope["headers"] if k != b"content-type"]
    return {**scope, "headers": headers + [(b"content-type", b"application/json")]}
