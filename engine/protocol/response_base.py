"""What every response body shares: its model base, fields left out when unset, ids and timestamps.

The server builds every body it sends from models on this base, so its OpenAPI document
describes exactly what goes on the wire.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class ResponseModel(BaseModel):
    # A field with a default is still always sent: the document lists it as required.
    model_config = ConfigDict(json_schema_serialization_defaults_required=True)


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:24]}"


def now() -> int:
    return int(time.time())


def _is_none(value: Any) -> bool:
    return value is None


def never_null(schema: dict[str, Any]) -> None:
    """The document of a field that is absent when unset: its type, never null."""
    schema["anyOf"] = [s for s in schema.pop("anyOf") if s.get("type") != "null"]
    schema.pop("default", None)


def omitted_when_none(description: str = "") -> Any:
    """A field left out of the body (not sent as null) while it is None."""
    return Field(None, exclude_if=_is_none, json_schema_extra=never_null, description=description or None)
