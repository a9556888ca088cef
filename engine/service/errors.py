"""One refusal, two faces: ``ServiceError`` carries an HTTP status and a message; REST sends it
as OpenAI's error body, gRPC as the matching status code with the same message text."""

from __future__ import annotations

import math
from typing import Any, Iterable, Optional

# The gRPC status code (by name: this module stays free of grpc) for each HTTP status.
GRPC_CODES = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    409: "FAILED_PRECONDITION",
    429: "RESOURCE_EXHAUSTED",
    500: "INTERNAL",
    503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}


class ServiceError(Exception):
    """A request refused or failed, with what both protocols need to say so.

    Attributes:
        status: the HTTP status (``GRPC_CODES`` gives the gRPC code).
        retry_after: seconds before a retry may succeed (429, 503), sent as ``Retry-After``
            on REST and as ``retry-after`` trailing metadata on gRPC.
        headers: extra HTTP headers (REST only).
    """

    def __init__(self, status: int, message: str, error_type: str = "invalid_request_error",
                 param: Optional[str] = None, code: Optional[str] = None,
                 retry_after: Optional[float] = None, headers: Optional[dict[str, str]] = None):
        super().__init__(message)
        self.status, self.message, self.error_type = status, message, error_type
        self.param, self.code = param, code
        self.retry_after = retry_after
        self.headers = dict(headers or {})
        if retry_after is not None:
            self.headers.setdefault("Retry-After", str(retry_after_seconds(retry_after)))

    @property
    def grpc_code(self) -> str:
        return GRPC_CODES.get(self.status, "INTERNAL" if self.status >= 500 else "INVALID_ARGUMENT")


def retry_after_seconds(delay: float) -> int:
    """Whole seconds, never 0: ``Retry-After: 0`` invites a retry storm."""
    return max(1, math.ceil(delay))


def describe_validation_errors(errors: Iterable[dict[str, Any]], drop_loc: tuple[str, ...] = ("body",)) -> tuple[str, Optional[str]]:
    """``invalid request: field: problem (got value)`` for pydantic's errors, and the first field.

    REST and gRPC both validate with the ``engine.protocol`` models, so both say the same.
    """
    parts, param = [], None
    for err in errors:
        loc = [str(p) for p in err.get("loc", ()) if p not in drop_loc]
        field = ".".join(loc) or "body"
        param = param or field
        msg = err.get("msg", "").removeprefix("Value error, ")
        shown = "" if err.get("type") == "missing" else f" (got {err.get('input')!r:.80})"
        parts.append(f"{field}: {msg}{shown}")
    return "invalid request: " + "; ".join(parts), param
