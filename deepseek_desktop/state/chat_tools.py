"""A conversation's structured replies and tools, without widgets: the JSON schema and tool
definitions a user pastes, checked before anything is sent; the built-in ``search_documents``
tool; tool calls and results as the chat API wants them back in the history.

A conversation keeps them in its settings (the chat store's ``settings`` JSON):
``json_schema`` ({"name", "schema"} or None), ``tools`` (OpenAI tool objects the user defined),
``search_tool`` (offer ``search_documents`` over the conversation's documents) and
``tool_choice`` ("auto" or "required").
"""

from __future__ import annotations

import json
import re
from typing import Optional

SEARCH_TOOL_NAME = "search_documents"
SEARCH_TOOL_TOP_K = 5
SEARCH_QUERY_MAX_CHARS = 200  # a query is a few words; the cap also ends a call a small model would ramble in
SEARCH_RESULT_CHARS = 600  # each passage's text in a tool result: enough to answer, short for a small context
TOOL_CHOICES = ("auto", "required")
_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")  # OpenAI's rule for function and schema names


class SettingsProblem(ValueError):
    """What is wrong with a pasted schema or tool list, in words for the user."""


def _json(text: str, what: str):
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise SettingsProblem(f"{what} is not valid JSON: {exc.msg} at line {exc.lineno}, column {exc.colno}") from None


def _check_schema(schema, what: str) -> None:
    """``what``: how the message names the schema ("The JSON schema", "Tool 1 (f)'s parameters")."""
    import jsonschema  # imported when a schema is first checked, not at start-up

    if not isinstance(schema, dict):
        raise SettingsProblem(f"{what} must be a JSON object (a JSON schema), not {type(schema).__name__}")
    try:
        jsonschema.validators.validator_for(schema, default=jsonschema.Draft202012Validator).check_schema(schema)
    except jsonschema.SchemaError as exc:
        where = "/".join(str(p) for p in exc.path)
        raise SettingsProblem(f"{what} does not follow JSON Schema: {exc.message}"
                              + (f" (at {where})" if where else "")) from None


def parse_json_schema(text: str) -> Optional[dict]:
    """The reply format for ``text`` as pasted: None when empty; a schema alone or OpenAI's
    ``{"name", "schema"}`` wrapper (``response_format.json_schema``) both work.

    Raises:
        SettingsProblem: not JSON, or not a valid schema (the message says where).
    """
    if not text.strip():
        return None
    value = _json(text, "The JSON schema")
    if isinstance(value, dict) and isinstance(value.get("schema"), dict) and "name" in value:
        name, schema = value["name"], value["schema"]
    else:
        name, schema = "reply", value
    if not isinstance(name, str) or not _NAME.match(name):
        raise SettingsProblem("The schema's name may use letters, digits, _ and - (at most 64)")
    _check_schema(schema, "The JSON schema")
    return {"name": name, "schema": schema}


def parse_tools(text: str) -> list[dict]:
    """Tool definitions as pasted: a JSON list of OpenAI tool objects (``{"type": "function",
    "function": {"name", "description", "parameters"}}``; a bare function object is accepted too).

    Raises:
        SettingsProblem: not JSON, not a list, a function without a valid name, a ``parameters``
            that is not a valid schema, or a name used twice or taken by the built-in tool.
    """
    if not text.strip():
        return []
    value = _json(text, "The tools")
    if isinstance(value, dict):
        value = [value]
    if not isinstance(value, list):
        raise SettingsProblem("The tools must be a JSON list of tool objects")
    tools, names = [], set()
    for place, item in enumerate(value, 1):
        function = item.get("function", item) if isinstance(item, dict) else None
        if not isinstance(function, dict) or not isinstance(function.get("name"), str):
            raise SettingsProblem(f"Tool {place} needs a function with a name: "
                                  '{"type": "function", "function": {"name": ..., "parameters": {...}}}')
        name = function["name"]
        if not _NAME.match(name):
            raise SettingsProblem(f"Tool {place}: the name {name!r} may use letters, digits, _ and - (at most 64)")
        if name in names or name == SEARCH_TOOL_NAME:
            raise SettingsProblem(f"Tool {place}: the name {name!r} is used twice"
                                  + (" (it is the built-in tool's)" if name == SEARCH_TOOL_NAME else ""))
        names.add(name)
        if "parameters" in function:
            _check_schema(function["parameters"], f"Tool {place} ({name})'s parameters")
        tools.append({"type": "function", "function": function})
    return tools


def search_tool(collection: str) -> dict:
    """The built-in tool: the model asks for passages of the conversation's documents."""
    return {"type": "function", "function": {
        "name": SEARCH_TOOL_NAME,
        "description": f"Search the user's documents (collection {collection!r}) and return the best passages "
                       "with their file and place",
        "parameters": {"type": "object", "properties": {"query": {"type": "string", "description": "what to look for",
                                                             "maxLength": SEARCH_QUERY_MAX_CHARS}},
                       "required": ["query"], "additionalProperties": False}}}


def offered_tools(settings: dict) -> list[dict]:
    """The tools a request of this conversation offers."""
    tools = list(settings.get("tools") or [])
    if settings.get("search_tool") and settings.get("documents"):
        tools.append(search_tool(settings["documents"]))
    return tools


def search_query(arguments: str) -> str:
    """The query of a ``search_documents`` call (its arguments as the model wrote them).

    Raises:
        SettingsProblem: the arguments are not JSON with a ``query`` string.
    """
    try:
        query = json.loads(arguments or "{}").get("query")
    except (ValueError, AttributeError):
        query = None
    if not isinstance(query, str) or not query.strip():
        raise SettingsProblem(f"the model called {SEARCH_TOOL_NAME} without a query: {arguments!r}")
    return query


def search_result_text(body: dict) -> str:
    """``POST /v1/search``'s answer as the tool's result: numbered passages, each with its place."""
    hits = body.get("hits") or []
    if not hits:
        return "No passage matches."
    lines = []
    for n, hit in enumerate(hits, 1):
        place = f"page {hit['page']}" if hit.get("page") else (
            f"lines {hit['lines'][0]}-{hit['lines'][1]}" if hit.get("lines") else "")
        snippet = re.sub(r"</?mark>", "", hit.get("snippet") or "")[:SEARCH_RESULT_CHARS]
        lines.append(f"[{n}] {hit['path']}{', ' + place if place else ''}\n{snippet}")
    return "\n\n".join(lines)


def joined_tool_calls(pieces: dict) -> list[dict]:
    """Calls streamed in ``delta.tool_calls`` pieces (``{index: {"id", "name", "arguments"}}`` as
    the client joined them), in order, as a message keeps them."""
    return [{"id": call.get("id") or f"call_{index}", "name": call.get("name") or "",
             "arguments": call.get("arguments") or ""} for index, call in sorted(pieces.items())]


def history_entry(message: dict) -> dict:
    """One message as the chat API takes it back: an assistant's calls, a tool's result."""
    if message["role"] == "tool":
        return {"role": "tool", "tool_call_id": message.get("tool_call_id") or "", "content": message["content"]}
    entry = {"role": message["role"], "content": message["content"]}
    if message.get("tool_calls"):
        entry["content"] = message["content"] or None
        entry["tool_calls"] = [{"id": call["id"], "type": "function",
                                "function": {"name": call["name"], "arguments": call["arguments"]}}
                               for call in message["tool_calls"]]
    return entry


def pretty_json(text: str) -> Optional[str]:
    """``text`` indented, when it is JSON (a structured reply); None otherwise."""
    try:
        return json.dumps(json.loads(text), indent=2, ensure_ascii=False)
    except (ValueError, TypeError):
        return None
