"""Tool calls in the formats the supported model families write, chosen from the chat template
(torch-free): how the tools reach the prompt, how a reply's calls are found, and the grammar that
makes ``tool_choice: required`` or a named function certain.

- Hermes (Qwen2.5 and every template that writes ``<tool_call>``): ``<tool_call>\\n{"name": ..,
  "arguments": {..}}\\n</tool_call>``, one block per call.
- Llama 3.1: a JSON object ``{"name": .., "parameters": {..}}`` as the whole reply (after an
  optional ``<|python_tag|>``), several separated by ``;``.
- DeepSeek-V3/R1: ``<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>function<｜tool▁sep｜>NAME\\n```json\\n{..}\\n```
  <｜tool▁call▁end｜>…<｜tool▁calls▁end｜>`` (the R1-0528/V3.1 form without ``function`` and the
  code fence is read too).

A template that knows no tools gets them described in a Hermes-style system message (as
Qwen2.5's template writes it) and its replies are read as Hermes. Reading calls out of a reply
as it streams is ``engine.tool_call_stream``.
"""

from __future__ import annotations

import json
import re
import uuid
from dataclasses import dataclass
from typing import Optional

import regex  # partial matches: does the end of a streamed text begin a call's closing?

from engine.requests import Constraint


@dataclass
class ToolCall:
    name: str
    arguments: str  # JSON text, as OpenAI sends it
    id: str = ""

    def __post_init__(self):
        self.id = self.id or f"call_{uuid.uuid4().hex[:24]}"


def _arguments_text(value) -> str:
    return value if isinstance(value, str) else json.dumps(value if value is not None else {}, ensure_ascii=False)


def _call_from_object(obj, arguments_key: str) -> Optional[ToolCall]:
    if not isinstance(obj, dict) or not isinstance(obj.get("name"), str):
        return None
    return ToolCall(obj["name"], _arguments_text(obj.get(arguments_key, obj.get("arguments"))))


class ToolFormat:
    """One family's way of writing calls. ``start``: the text that opens a call (streaming holds
    text back from there on). For streaming a call in pieces: ``call_head`` matches a call up to
    where its arguments begin (group ``name``), ``call_end`` what follows its arguments."""

    name = "hermes"
    start = "<tool_call>"
    native = True  # False: the template knows no tools; they go in a system message
    call_head = regex.compile(r'<tool_call>\s*\{\s*"name"\s*:\s*"(?P<name>(?:[^"\\]|\\.)*)"\s*,\s*'
                              r'"arguments"\s*:\s*(?=\S)')
    call_end = regex.compile(r"\s*\}\s*</tool_call>")

    def parse(self, text: str) -> tuple[str, list[ToolCall]]:
        """The reply's own text (calls removed) and its calls, in order."""
        raise NotImplementedError

    def constraint(self, functions: list[dict]) -> Constraint:
        """One call of one of ``functions`` (OpenAI ``function`` objects), in this format."""
        raise NotImplementedError

    def call_name(self, head) -> str:
        """The function's name in a ``call_head`` match (a JSON string's inside)."""
        try:
            return json.loads(f'"{head["name"]}"')
        except ValueError:
            return head["name"]


class HermesFormat(ToolFormat):
    _BLOCK = re.compile(r"<tool_call>\s*(.*?)\s*(?:</tool_call>|$)", re.DOTALL)

    def parse(self, text: str) -> tuple[str, list[ToolCall]]:
        calls = []
        for body in self._BLOCK.findall(text):
            try:
                call = _call_from_object(json.loads(body), "arguments")
            except ValueError:
                call = None
            if call is None:  # not a call after all: leave the text as it was
                return text, []
            calls.append(call)
        if not calls:
            return text, []
        return text[:text.index(self.start)].strip(), calls

    def constraint(self, functions: list[dict]) -> Constraint:
        schema = {"anyOf": [_named_object(f, "arguments") for f in functions]}
        return Constraint("tagged_json", json.dumps(schema, ensure_ascii=False), "<tool_call>\n", "\n</tool_call>")


class HermesSystemMessage(HermesFormat):
    name = "hermes-system-message"
    native = False


class Llama3JsonFormat(ToolFormat):
    name = "llama3-json"
    start = "{"
    call_head = regex.compile(r'(?:<\|python_tag\|>)?\s*\{\s*"name"\s*:\s*"(?P<name>(?:[^"\\]|\\.)*)"\s*,\s*'
                              r'"(?:parameters|arguments)"\s*:\s*(?=\S)')
    call_end = regex.compile(r"\s*\}\s*;")  # the reply's end closes the last call

    def parse(self, text: str) -> tuple[str, list[ToolCall]]:
        body = text.strip().removeprefix("<|python_tag|>").strip()
        if not body.startswith("{"):
            return text, []
        calls = []
        for part in _split_objects(body):
            try:
                call = _call_from_object(json.loads(part), "parameters")
            except ValueError:
                return text, []
            if call is None:
                return text, []
            calls.append(call)
        return "", calls

    def constraint(self, functions: list[dict]) -> Constraint:
        schema = {"anyOf": [_named_object(f, "parameters") for f in functions]}
        return Constraint("json_schema", json.dumps(schema, ensure_ascii=False))


class DeepSeekFormat(ToolFormat):
    name = "deepseek"
    start = "<｜tool▁calls▁begin｜>"
    _FENCED = re.compile(r"<｜tool▁call▁begin｜>function<｜tool▁sep｜>([^\n<]+?)\s*\n```(?:json)?\n(.*?)\n```\s*"
                         r"<｜tool▁call▁end｜>", re.DOTALL)  # V3, R1
    _BARE = re.compile(r"<｜tool▁call▁begin｜>([^<]+?)<｜tool▁sep｜>(.*?)<｜tool▁call▁end｜>", re.DOTALL)  # R1-0528, V3.1
    call_head = regex.compile(r"<｜tool▁call▁begin｜>(?:function<｜tool▁sep｜>(?P<name>[^\n<]+?)[ \t]*\n```(?:json)?\n"
                              r"|(?P<name>(?!function<)[^<]+?)<｜tool▁sep｜>)")
    call_end = regex.compile(r"(?:\n```)?\s*<｜tool▁call▁end｜>")

    def call_name(self, head) -> str:
        return head["name"].strip()

    def parse(self, text: str) -> tuple[str, list[ToolCall]]:
        if self.start not in text:
            return text, []
        found = self._FENCED.findall(text) or self._BARE.findall(text)
        calls = [ToolCall(name.strip(), arguments.strip() or "{}") for name, arguments in found]
        if not calls:
            return text, []
        return text[:text.index(self.start)].strip(), calls

    def constraint(self, functions: list[dict]) -> Constraint:
        parts = tuple(Constraint(
            "tagged_json", json.dumps(_parameters(f), ensure_ascii=False),
            f"{self.start}<｜tool▁call▁begin｜>function<｜tool▁sep｜>{f['name']}\n```json\n",
            "\n```<｜tool▁call▁end｜><｜tool▁calls▁end｜>") for f in functions)
        return parts[0] if len(parts) == 1 else Constraint("any_of", parts=parts)


def _parameters(function: dict) -> dict:
    return function.get("parameters") or {"type": "object", "properties": {}}


def _named_object(function: dict, arguments_key: str) -> dict:
    return {"type": "object", "properties": {"name": {"const": function["name"]}, arguments_key: _parameters(function)},
            "required": ["name", arguments_key], "additionalProperties": False}


def _split_objects(text: str) -> list[str]:
    """``{..}; {..}`` into its objects (Llama 3.1's parallel calls)."""
    parts, depth, start, in_string, escaped = [], 0, 0, False, False
    for place, char in enumerate(text):
        if in_string:
            escaped, in_string = (not escaped and char == "\\"), in_string and (escaped or char != '"')
            continue
        if char == '"':
            in_string = True
        elif char == "{":
            depth += 1
        elif char == "}":
            depth -= 1
            if depth == 0:
                parts.append(text[start:place + 1])
                start = place + 1
        elif depth == 0 and char in "; \n":
            start = place + 1
    return parts or [text]


def tool_format(chat_template: Optional[str]) -> ToolFormat:
    """The format a model writes, told from its chat template."""
    template = chat_template or ""
    if "tool▁calls▁begin" in template:
        return DeepSeekFormat()
    if "<tool_call>" in template:
        return HermesFormat()
    if "<|python_tag|>" in template or "ipython" in template:
        return Llama3JsonFormat()
    if "tools" in template:  # renders tools, in no format known here: ask for Hermes blocks
        return HermesFormat()
    return HermesSystemMessage()


def system_message(tools: list[dict]) -> str:
    """Tools described for a model whose template knows none (Qwen2.5's own wording)."""
    lines = "\n".join(json.dumps(tool, ensure_ascii=False) for tool in tools)
    return ("# Tools\n\nYou may call one or more functions to assist with the user query.\n\n"
            "You are provided with function signatures within <tools></tools> XML tags:\n"
            f"<tools>\n{lines}\n</tools>\n\n"
            "For each function call, return a json object with function name and arguments within "
            "<tool_call></tool_call> XML tags:\n<tool_call>\n"
            '{"name": <function-name>, "arguments": <args-json-object>}\n</tool_call>')


def messages_for_template(messages: list[dict], tools: Optional[list[dict]], fmt: ToolFormat) -> list[dict]:
    """Chat messages ready for ``apply_chat_template``: assistant ``tool_calls`` with their
    arguments as objects (templates write them with ``tojson``). For a template that knows no
    tools: the tools in a system message, earlier calls as Hermes blocks, tool results as
    ``<tool_response>`` user turns (strict templates allow no ``tool`` role)."""
    out = []
    for message in messages:
        calls = message.get("tool_calls")
        if calls:
            message = {**message, "tool_calls": [_template_call(call) for call in calls]}
        if not fmt.native:
            message = _as_plain_turn(message)
        out.append(message)
    if tools and not fmt.native:
        described = system_message(tools)
        if out and out[0]["role"] == "system":
            out[0] = {**out[0], "content": f"{out[0]['content']}\n\n{described}"}
        else:
            out.insert(0, {"role": "system", "content": described})
    return out


def _template_call(call: dict) -> dict:
    function = dict(call.get("function") or {})
    try:
        function["arguments"] = json.loads(function.get("arguments") or "{}")
    except (TypeError, ValueError):
        pass  # not JSON: the template gets the text as sent
    return {**call, "function": function}


def _as_plain_turn(message: dict) -> dict:
    if message["role"] == "tool":
        return {"role": "user", "content": f"<tool_response>\n{message.get('content') or ''}\n</tool_response>"}
    calls = message.get("tool_calls")
    if not calls:
        return {"role": message["role"], "content": message.get("content") or ""}
    blocks = "\n".join("<tool_call>\n" + json.dumps({"name": c["function"]["name"],
                                                     "arguments": c["function"].get("arguments", {})},
                                                    ensure_ascii=False) + "\n</tool_call>" for c in calls)
    text = message.get("content") or ""
    return {"role": "assistant", "content": f"{text}\n{blocks}".strip()}


@dataclass
class ToolPlan:
    """How one chat request's tools reach the prompt and come back out of the reply."""

    messages: list[dict]                 # for apply_chat_template
    template_tools: Optional[list[dict]]  # tools= for a template that renders them
    constraint: Optional[Constraint]     # the forced call's grammar (required / named)
    reader: Optional[ToolFormat]         # parses the reply's calls (None: tool_choice none, no tools)


def plan_tools(chat_template: Optional[str], messages: list[dict], tools: Optional[list[dict]],
               forced: Optional[list[dict]], wanted: bool) -> ToolPlan:
    """``tools``: OpenAI tool objects; ``forced``: the functions one of which must be called
    (tool_choice required or named); ``wanted``: tools given and tool_choice not none."""
    involved = wanted or any(m.get("tool_calls") or m["role"] == "tool" for m in messages)
    if not involved:
        return ToolPlan(messages, None, None, None)
    fmt = tool_format(chat_template)
    offered = tools if wanted else None
    return ToolPlan(messages_for_template(messages, offered, fmt), offered if fmt.native else None,
                    fmt.constraint(forced) if forced else None, fmt if wanted else None)
