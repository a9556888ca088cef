"""What a request's reply must match: ``response_format`` and ``guided_json`` into a grammar
constraint the runtime compiles (torch-free).

The schema is kept as the client wrote it (its property order is the order the reply's keys
come in); equal schema texts share one compiled grammar.
"""

from __future__ import annotations

import json
from typing import Optional

from engine.requests import Constraint


def json_schema_constraint(schema: dict) -> Constraint:
    """A reply that validates against ``schema``.

    Raises:
        ValueError: the schema is not an object (the message says so).
    """
    if not isinstance(schema, dict):
        raise ValueError("a JSON schema must be an object")
    if not schema:  # {} admits any JSON value; clients that send it mean "some JSON"
        return Constraint("json_object")
    return Constraint("json_schema", json.dumps(schema, ensure_ascii=False))


def chat_constraint(response_format) -> Optional[Constraint]:
    """``response_format`` of a chat request (``engine.protocol.openai_requests.ResponseFormat``)."""
    if response_format is None or response_format.type == "text":
        return None
    if response_format.type == "json_object":
        return Constraint("json_object")
    return json_schema_constraint(response_format.json_schema.schema_)


def completion_constraint(guided_json: Optional[dict]) -> Optional[Constraint]:
    """The ``guided_json`` extension of a text completion request."""
    return None if guided_json is None else json_schema_constraint(guided_json)
