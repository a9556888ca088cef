"""The bodies clients send to ``/v1/chat/completions`` and ``/v1/completions`` (and gRPC's twins).

Requests ignore fields they do not know (clients send newer OpenAI fields freely) but refuse
values out of range with a message naming the field.
"""

from __future__ import annotations

import json
from typing import Annotated, Literal, Optional, Union

from pydantic import BaseModel, ConfigDict, Field, WithJsonSchema, field_validator, model_validator

from engine.protocol.search import SearchOptions
from engine.requests import MAX_TOP_LOGPROBS, SAMPLING_BOUNDS

MAX_STOP_SEQUENCES = 4
MAX_CHOICES = 8


class _Request(BaseModel):
    model_config = ConfigDict(extra="ignore")


# The validators below keep their own messages (they name the field and the limit); these
# schemas state the same limits in the OpenAPI document, where a validator cannot reach.
_NON_EMPTY_TEXT = {"type": "string", "minLength": 1}
_STOP_SCHEMA = WithJsonSchema({"anyOf": [
    _NON_EMPTY_TEXT,
    {"type": "array", "items": _NON_EMPTY_TEXT, "maxItems": MAX_STOP_SEQUENCES},
    {"type": "null"},
], "description": f"up to {MAX_STOP_SEQUENCES} non-empty strings; the reply ends before the first one"})
_PROMPT_SCHEMA = WithJsonSchema({"anyOf": [
    _NON_EMPTY_TEXT,
    {"type": "array", "items": _NON_EMPTY_TEXT, "minItems": 1, "maxItems": 1},
], "description": "one prompt: a string, or a list holding exactly one string"})


class SamplingFields(_Request):
    """Sampling settings shared by chat and text completions."""

    model: str = Field(..., min_length=1)
    max_tokens: Optional[int] = Field(None, **SAMPLING_BOUNDS["max_tokens"])
    max_completion_tokens: Optional[int] = Field(None, **SAMPLING_BOUNDS["max_tokens"])
    temperature: float = Field(1.0, **SAMPLING_BOUNDS["temperature"])
    top_p: float = Field(1.0, **SAMPLING_BOUNDS["top_p"])
    top_k: int = Field(0, **SAMPLING_BOUNDS["top_k"], description="0 or -1: off")
    repetition_penalty: float = Field(1.0, **SAMPLING_BOUNDS["repetition_penalty"])
    frequency_penalty: float = Field(0.0, **SAMPLING_BOUNDS["frequency_penalty"])
    presence_penalty: float = Field(0.0, **SAMPLING_BOUNDS["presence_penalty"])
    stop: Annotated[Optional[Union[str, list[str]]], _STOP_SCHEMA] = None
    seed: Optional[int] = Field(None, **SAMPLING_BOUNDS["seed"])
    n: int = Field(1, ge=1, le=MAX_CHOICES, description=f"choices, 1 to {MAX_CHOICES}, decoded as rows of one batch")
    stream: bool = False
    stream_options: Optional["StreamOptions"] = None
    logit_bias: Optional[dict[str, float]] = Field(
        None, description="token id (as a string) -> -100 to 100, added to that token's logit")
    ignore_eos: bool = Field(False, description="extension: generate exactly max_tokens (benchmarks)")
    return_tokens_as_token_ids: bool = Field(
        False, description="extension (as vLLM's): logprobs name each token 'token_id:<id>'")
    user: Optional[str] = None

    @field_validator("stop")
    @classmethod
    def _check_stop(cls, value):
        stops = [value] if isinstance(value, str) else (value or [])
        if len(stops) > MAX_STOP_SEQUENCES:
            raise ValueError(f"at most {MAX_STOP_SEQUENCES} stop sequences")
        if any(not s for s in stops):
            raise ValueError("stop sequences must not be empty")
        return value

    @field_validator("logit_bias")
    @classmethod
    def _check_logit_bias(cls, value):
        for key, bias in (value or {}).items():
            if not key.isdigit():
                raise ValueError(f"logit_bias keys are token ids written as strings; {key!r} is not one")
            if not -100 <= bias <= 100:
                raise ValueError(f"logit_bias values lie in -100..100; token {key} has {bias}")
        return value

    def logit_bias_pairs(self) -> tuple[tuple[int, float], ...]:
        return tuple((int(key), float(bias)) for key, bias in (self.logit_bias or {}).items())

    def top_logprobs_wanted(self) -> Optional[int]:
        """None: no log-probabilities; k: the sampled token's and k alternatives."""
        raise NotImplementedError

    def stop_list(self) -> list[str]:
        if self.stop is None:
            return []
        return [self.stop] if isinstance(self.stop, str) else list(self.stop)

    def requested_max_tokens(self) -> Optional[int]:
        return self.max_completion_tokens or self.max_tokens

    def include_usage_in_stream(self) -> bool:
        return bool(self.stream_options and self.stream_options.include_usage)


class StreamOptions(_Request):
    include_usage: bool = False


class TextPart(_Request):
    type: Literal["text"]
    text: str


class FunctionCall(_Request):
    name: str = Field(..., min_length=1)
    arguments: str = Field("{}", description="JSON text")


class MessageToolCall(_Request):
    id: str = ""
    type: Literal["function"] = "function"
    function: FunctionCall


class ChatMessage(_Request):
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: Optional[Union[str, list[TextPart]]] = None
    name: Optional[str] = None
    tool_calls: Optional[list[MessageToolCall]] = Field(None, description="assistant: the calls it made")
    tool_call_id: Optional[str] = Field(None, description="tool: the call this result answers")

    def text(self) -> str:
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        return "".join(part.text for part in self.content)


class JsonSchemaFormat(_Request):
    name: str = Field("response", max_length=64)
    description: Optional[str] = None
    schema_: dict = Field(default_factory=dict, alias="schema", description="a JSON schema")
    strict: Optional[bool] = None


class ResponseFormat(_Request):
    """``text`` (the default), ``json_object`` (any JSON object) or ``json_schema``: the reply is
    decoded under the schema's grammar, so it parses and validates."""

    type: Literal["text", "json_object", "json_schema"]
    json_schema: Optional[JsonSchemaFormat] = None

    @model_validator(mode="after")
    def _check_schema(self):
        if self.json_schema is None and self.type == "json_schema":
            raise ValueError("type json_schema needs json_schema: {name, schema}")
        return self


class FunctionDefinition(_Request):
    name: str = Field(..., min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")
    description: Optional[str] = None
    parameters: Optional[dict] = Field(None, description="a JSON schema of the arguments")
    strict: Optional[bool] = None


class Tool(_Request):
    type: Literal["function"]
    function: FunctionDefinition


class NamedFunction(_Request):
    name: str


class NamedToolChoice(_Request):
    type: Literal["function"]
    function: NamedFunction


class ChatCompletionRequest(SamplingFields):
    messages: list[ChatMessage] = Field(..., min_length=1)
    tools: Optional[list[Tool]] = Field(None, description="functions the model may call (rendered by its chat "
                                                          "template, or in a Hermes-style system message)")
    tool_choice: Optional[Union[Literal["none", "auto", "required"], NamedToolChoice]] = Field(
        None, description="required or a named function: enforced by constrained decoding")
    parallel_tool_calls: bool = Field(True, description="false: at most one call per reply")
    search: Optional[SearchOptions] = Field(None, description="extension: answer from a document collection's passages, given to the model as numbered sources; the reply adds citations and unknown_citations")
    response_format: Optional[ResponseFormat] = None
    logprobs: Optional[bool] = Field(None, description="each generated token's log-probability")
    top_logprobs: Optional[int] = Field(None, ge=0, le=MAX_TOP_LOGPROBS,
                                        description="with logprobs: the likeliest alternatives per token")

    @field_validator("top_logprobs")
    @classmethod
    def _check_top_logprobs(cls, value, info):
        if value and not info.data.get("logprobs"):
            raise ValueError("top_logprobs needs logprobs: true")
        return value

    def top_logprobs_wanted(self) -> Optional[int]:
        return (self.top_logprobs or 0) if self.logprobs else None

    @model_validator(mode="after")
    def _check_combinations(self):
        structured = self.response_format is not None and self.response_format.type != "text"
        if structured and self.ignore_eos:
            raise ValueError("response_format cannot be combined with ignore_eos: a structured reply ends "
                             "where its grammar does; drop ignore_eos")
        if self.tool_choice not in (None, "none", "auto") and not self.tools:
            raise ValueError("tool_choice 'required' or a named function needs tools")
        if isinstance(self.tool_choice, NamedToolChoice) and self.tool_choice.function.name not in {
                tool.function.name for tool in self.tools}:
            raise ValueError(f"tool_choice names {self.tool_choice.function.name!r}, which is not among the tools")
        if structured and self.tools_wanted():
            raise ValueError("response_format cannot be combined with tools; send one, or tool_choice 'none'")
        if self.forced_functions() and self.ignore_eos:
            raise ValueError("tool_choice 'required' or a named function cannot be combined with ignore_eos")
        return self

    def template_messages(self) -> list[dict]:
        # "developer" is OpenAI's newer name for "system"; chat templates know only the latter.
        messages = []
        for m in self.messages:
            message: dict = {"role": "system" if m.role == "developer" else m.role, "content": m.text()}
            if m.tool_calls:
                message["tool_calls"] = [call.model_dump() for call in m.tool_calls]
            if m.tool_call_id is not None:
                message["tool_call_id"] = m.tool_call_id
            if m.name is not None and m.role == "tool":
                message["name"] = m.name
            messages.append(message)
        return messages

    def tools_wanted(self) -> bool:
        """Tools go into the prompt and calls are read from the reply (not with tool_choice none)."""
        return bool(self.tools) and self.tool_choice != "none"

    def forced_functions(self) -> Optional[list[dict]]:
        """The functions one of which the reply must call (tool_choice required or named), or None."""
        if not self.tools_wanted() or self.tool_choice in (None, "auto"):
            return None
        functions = [tool.function.model_dump(exclude_none=True) for tool in self.tools]
        if self.tool_choice == "required":
            return functions
        return [f for f in functions if f["name"] == self.tool_choice.function.name]


class CompletionRequest(SamplingFields):
    prompt: Annotated[Union[str, list[str]], _PROMPT_SCHEMA]
    echo: bool = Field(False, description="the prompt before the completion; with logprobs, the prompt "
                                          "tokens' log-probabilities too (not with stream)")
    logprobs: Optional[int] = Field(None, ge=0, le=MAX_TOP_LOGPROBS,
                                    description="each token's log-probability and this many alternatives")
    guided_json: Optional[Union[dict, str]] = Field(
        None, description="extension (as vLLM's): a JSON schema the completion is decoded under")

    @field_validator("prompt")
    @classmethod
    def _check_prompt(cls, value):
        if isinstance(value, list) and len(value) != 1:
            raise ValueError("send one prompt per request (a list must hold exactly one string)")
        return value

    @field_validator("guided_json")
    @classmethod
    def _check_guided_json(cls, value):
        if isinstance(value, str):
            try:
                value = json.loads(value)
            except ValueError as exc:
                raise ValueError(f"guided_json is not JSON: {exc}") from None
            if not isinstance(value, dict):
                raise ValueError("guided_json must be a JSON schema object")
        return value

    def top_logprobs_wanted(self) -> Optional[int]:
        return self.logprobs

    @model_validator(mode="after")
    def _check_combinations(self):
        if self.echo and self.stream:
            raise ValueError("echo is supported on non-streamed completions only; send stream: false")
        if self.guided_json is not None and self.ignore_eos:
            raise ValueError("guided_json cannot be combined with ignore_eos: a structured reply ends where "
                             "its grammar does; drop ignore_eos")
        return self

    def prompt_text(self) -> str:
        return self.prompt if isinstance(self.prompt, str) else self.prompt[0]


SamplingFields.model_rebuild()  # StreamOptions is defined after the class that names it
