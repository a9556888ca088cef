"""The service layer in front of the engine (torch-free): named keys with roles, token-bucket
rate limits and a circuit breaker, shared by the REST and the gRPC faces of one worker.

``Service`` is built once per server from ``[server]``; both faces ask it who a caller is
(``identify``), whether the caller may do this (``authorize_route`` / ``authorize_rpc``) and
may do it now (``admit_rate``); ``engine.service.gateway`` submits generations through it, so the
breaker sees every outcome.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, Optional

from engine.config import ConfigError, EngineConfig, RateLimit, ServerConfig
from engine.events import EventBus
from engine.metrics import EngineMetrics
from engine.service.circuit import CircuitBreaker
from engine.service.errors import ServiceError
from engine.service.keys import KeyRing, Principal, may_call, may_use_route, refusal
from engine.service.ratelimit import Decision, RateLimiter

if TYPE_CHECKING:
    from engine.core import Engine

log = logging.getLogger("engine.service")

UNAUTHORIZED = "Incorrect or missing API key: send it as 'Authorization: Bearer <key>'."

__all__ = ["Service", "ServiceError", "Principal", "UNAUTHORIZED"]


class Service:
    """Raises:
        ConfigError: a key's ``key_env`` variable is not set.
    """

    def __init__(self, server: ServerConfig, metrics: EngineMetrics, events: EventBus):
        self.server = server
        self.metrics = metrics
        self.events = events
        self.keys = KeyRing(server)
        self.limiter = RateLimiter(server.rate_limit, on_refused=self._count_refusal)
        self.circuit = CircuitBreaker(server.circuit, on_change=self._circuit_changed)
        metrics.set_circuit_state("closed")

    # ------------------------------------------------------------------ who, what, when
    def identify(self, token: Optional[bytes]) -> Principal:
        """Raises:
            ServiceError: 401, a wrong or missing key.
        """
        principal = self.keys.identify(token)
        if principal is None:
            raise ServiceError(401, UNAUTHORIZED, code="invalid_api_key", headers={"WWW-Authenticate": "Bearer"})
        return principal

    def authorize_route(self, principal: Principal, method: str, path: str) -> None:
        if not may_use_route(principal.role, method, path):
            shown = "/admin/*" if path.startswith("/admin/") else path
            raise ServiceError(403, refusal(principal, shown), "permission_error", code="insufficient_role")

    def authorize_rpc(self, principal: Principal, rpc: str) -> None:
        if not may_call(principal.role, rpc):
            raise ServiceError(403, refusal(principal, f"gRPC {rpc}"), "permission_error", code="insufficient_role")

    def admit_rate(self, principal: Principal, address: Optional[str]) -> Decision:
        """Take one request from the caller's bucket: by key name, or by address without keys."""
        subject = principal.name if principal.name is not None else f"address:{address}"
        return self.limiter.admit(subject, principal.label, principal.rate_limit)

    def charge_tokens(self, principal: Principal, address: Optional[str], tokens: int) -> None:
        subject = principal.name if principal.name is not None else f"address:{address}"
        self.limiter.charge(subject, principal.rate_limit, tokens)

    # ------------------------------------------------------------------ run-time changes
    def update_config(self, engine: "Engine", changes: dict[str, Any]) -> EngineConfig:
        """Change settings at run time: batching and cache (the engine's), and of the server
        section the rate limits and the circuit (this service's). Everything is validated before
        anything changes, and the change is made under the engine's lifecycle lock.

        Raises:
            ConfigError: a section or field that needs a reload or a restart, an unknown key
                name, a refused value.
        """
        if "server" in changes:
            changes = {**changes, "server": self._server_section(changes["server"])}
        return engine.update_config(changes, on_server=self.apply_server)

    def _server_section(self, changes: Any) -> dict[str, Any]:
        """The server fields ``changes`` touches, in full values for ``EngineConfig.merged``. Only
        the rate limits change at run time: ``rate_limit`` and each named key's ``rate_limit``.

        Raises:
            ConfigError: another field, an unknown key name, an entry of the wrong shape.
        """
        if not isinstance(changes, dict):
            raise ConfigError("server: expected a table of settings")
        allowed = {"rate_limit", "keys", "circuit"}
        for field in changes:
            if field not in allowed:
                raise ConfigError(f"server.{field}: changing it needs a restart of the engine "
                                  f"(at run time: server.rate_limit, server.keys[].rate_limit, server.circuit)")
        data = self.server.model_dump()
        section = {}
        if "rate_limit" in changes:
            section["rate_limit"] = changes["rate_limit"]
        if "circuit" in changes:
            if not isinstance(changes["circuit"], dict):
                raise ConfigError("server.circuit: expected a table of settings")
            section["circuit"] = {**data["circuit"], **changes["circuit"]}
        if "keys" in changes:
            entries = changes["keys"]
            if not isinstance(entries, list):
                raise ConfigError('server.keys: expected a list of {"name": …, "rate_limit": …}')
            by_name = {k["name"]: k for k in data["keys"]}
            for entry in entries:
                if (not isinstance(entry, dict) or set(entry) - {"name", "rate_limit"}
                        or not isinstance(entry.get("name"), str)):
                    raise ConfigError("server.keys: each entry names a key and sets its rate_limit only "
                                      '({"name": "app", "rate_limit": {…} or null})')
                if entry["name"] not in by_name:
                    raise ConfigError(f"server.keys: no key named {entry['name']!r} "
                                      f"(keys: {', '.join(by_name) or 'none'})")
                by_name[entry["name"]]["rate_limit"] = entry.get("rate_limit")
            section["keys"] = data["keys"]
        return section

    def apply_server(self, server: ServerConfig) -> None:
        for key in server.keys:
            self.keys.set_rate_limit(key.name, key.rate_limit)
        self.server = server
        self.limiter.configure(server.rate_limit)
        self.circuit.configure(server.circuit)
        log.info("rate limits changed", extra={"event": "config", "rate_limit": _dump(server.rate_limit),
                                               "keys": {k.name: _dump(k.rate_limit) for k in server.keys}})

    # ------------------------------------------------------------------ observers
    def _count_refusal(self, label: str) -> None:
        self.metrics.rate_limited.labels(key=label).inc()

    def _circuit_changed(self, state: str, reason: str) -> None:
        self.metrics.set_circuit_state(state)
        level = logging.WARNING if state != "closed" else logging.INFO
        log.log(level, "circuit %s: %s", state, reason, extra={"event": "circuit", "state": state, "reason": reason})
        self.events.publish({"type": "circuit", "state": state, "reason": reason,
                             "retry_after": self.server.circuit.cooldown_s if state == "open" else None})


def _dump(limit: Optional[RateLimit]) -> Optional[dict]:
    return limit.model_dump() if limit else None
