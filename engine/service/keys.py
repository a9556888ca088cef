"""Named API keys with roles (torch-free).

A key is checked in constant time against every configured one; what comes out is a
``Principal``: the key's name (logs and metrics show it, never the key) and its role.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from dataclasses import dataclass
from typing import Optional

from engine.config import ConfigError, RateLimit, ServerConfig

# ``--api-key`` / DEEPSEEK_ENGINE_API_KEY / ``[server] api_key``: one admin key of this name.
DEFAULT_KEY_NAME = "default"

# What each role may call, as the messages say it.
ROLE_SCOPES = {
    "admin": "every route",
    "inference": "/v1/*, /metrics and gRPC inference",
    "monitor": "/metrics, GET /v1/models and gRPC ListModels",
}

INFERENCE_RPCS = frozenset({"Generate", "Chat", "ListModels"})
MONITOR_RPCS = frozenset({"ListModels"})


@dataclass(frozen=True)
class Principal:
    """Who sent a request: a named key, or (no key configured) an anonymous client."""

    name: Optional[str]  # None: no key configured; limits then apply per client address
    role: str
    rate_limit: Optional[RateLimit] = None  # this key's own limit, if it has one

    @property
    def label(self) -> str:
        return self.name or "anonymous"


ANONYMOUS = Principal(name=None, role="admin")


@dataclass(frozen=True)
class _Key:
    name: str
    role: str
    digest: bytes  # SHA-256 of the key: every comparison is of equal-length digests
    rate_limit: Optional[RateLimit]


class KeyRing:
    """The keys a server accepts.

    Raises:
        ConfigError: a ``key_env`` names a variable that is not set (or is empty).
    """

    def __init__(self, server: ServerConfig, environ: Optional[dict[str, str]] = None):
        environ = os.environ if environ is None else environ
        self._keys: list[_Key] = []
        if server.api_key:
            self._keys.append(_Key(DEFAULT_KEY_NAME, "admin", _sha256(server.api_key), None))
        for entry in server.keys:
            if entry.key is not None:
                digest = _sha256(entry.key)
            elif entry.key_env is not None:
                value = environ.get(entry.key_env)
                if not value:
                    raise ConfigError(f"server.keys: key {entry.name!r} reads the environment variable "
                                      f"{entry.key_env}, which is not set")
                digest = _sha256(value)
            else:
                digest = bytes.fromhex(entry.key_sha256)
            self._keys.append(_Key(entry.name, entry.role, digest, entry.rate_limit))

    @property
    def enabled(self) -> bool:
        """False when no key is configured: every client may use every route."""
        return bool(self._keys)

    @property
    def roles(self) -> set[str]:
        return {key.role for key in self._keys}

    def set_rate_limit(self, name: str, limit: Optional[RateLimit]) -> None:
        self._keys = [_Key(k.name, k.role, k.digest, limit) if k.name == name else k for k in self._keys]

    def identify(self, token: Optional[bytes]) -> Optional[Principal]:
        """The principal holding ``token``, None for a wrong or missing key (ANONYMOUS when no key
        is configured). Every key is compared, so the time taken does not tell which matched."""
        if not self._keys:
            return ANONYMOUS
        if not token:
            return None
        digest = hashlib.sha256(token).digest()
        found = None
        for key in self._keys:
            if hmac.compare_digest(digest, key.digest) and found is None:
                found = key
        return Principal(found.name, found.role, found.rate_limit) if found else None


def may_use_route(role: str, method: str, path: str) -> bool:
    if role == "admin":
        return True
    if role == "inference":
        return path.startswith("/v1/") or path == "/metrics"
    if role == "monitor":
        return path == "/metrics" or (method in ("GET", "HEAD") and (path == "/v1/models" or path.startswith("/v1/models/")))
    return False


def may_call(role: str, rpc: str) -> bool:
    """gRPC methods of deepseek.v1.Inference, by name."""
    if role in ("admin", "inference"):
        return rpc in INFERENCE_RPCS
    return role == "monitor" and rpc in MONITOR_RPCS


def refusal(principal: Principal, what: str) -> str:
    return (f"the key {principal.label!r} has role {principal.role!r}, which may not use {what} "
            f"(role {principal.role!r} may use {ROLE_SCOPES.get(principal.role, 'nothing')})")


def bearer_token(value: Optional[bytes]) -> Optional[bytes]:
    """The token of an ``Authorization: Bearer TOKEN`` value; None for another scheme."""
    if not value:
        return None
    scheme, _, token = value.strip().partition(b" ")
    return token.strip() if scheme.lower() == b"bearer" else None


def _sha256(text: str) -> bytes:
    return hashlib.sha256(text.encode()).digest()
