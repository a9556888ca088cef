"""OpenAI-compatible request and response models (torch-free; the GUI and tests import them too).

Requests ignore fields they do not know (clients send newer OpenAI fields freely) but refuse
values out of range with a message naming the field. Responses follow OpenAI's shapes, with
``reasoning_content`` beside ``content`` as DeepSeek's API returns it. The server builds every
body it sends from these models, so its OpenAPI document describes exactly what goes on the wire.
"""

from __future__ import annotations

import time
import uuid
from typing import Annotated, Any, Literal, Optional, Union

from pydantic import BaseModel, ConfigDict, Field, WithJsonSchema, create_model, field_validator

from engine.config import BatchingConfig, CacheConfig, CircuitConfig, LoadConfig, ModelConfig, RateLimit, ServerConfig
from engine.states import ModelState

MAX_STOP_SEQUENCES = 4


class _Request(BaseModel):
    model_config = ConfigDict(extra="ignore")


def _refuse(value, info):
    """For OpenAI fields this engine does not implement: refused when set, never ignored."""
    if value:
        raise ValueError(f"{info.field_name} is not supported by this engine")
    return value


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
_UNSUPPORTED_FLAG = WithJsonSchema({"enum": [False, None], "description": "not supported: false or absent"})


class SamplingFields(_Request):
    """Sampling settings shared by chat and text completions."""

    model: str = Field(..., min_length=1)
    max_tokens: Optional[int] = Field(None, ge=1)
    max_completion_tokens: Optional[int] = Field(None, ge=1)
    temperature: float = Field(1.0, ge=0.0, le=2.0)
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    top_k: int = Field(0, ge=-1, description="0 or -1: off")
    repetition_penalty: float = Field(1.0, gt=0.0, le=10.0)
    frequency_penalty: float = Field(0.0, ge=-2.0, le=2.0)
    presence_penalty: float = Field(0.0, ge=-2.0, le=2.0)
    stop: Annotated[Optional[Union[str, list[str]]], _STOP_SCHEMA] = None
    seed: Optional[int] = Field(None, ge=0, lt=2**63)
    n: int = Field(1, ge=1, le=1, description="only 1 choice per request")
    stream: bool = False
    stream_options: Optional["StreamOptions"] = None
    logprobs: Annotated[Optional[bool], _UNSUPPORTED_FLAG] = None
    ignore_eos: bool = Field(False, description="extension: generate exactly max_tokens (benchmarks)")
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

    _check_logprobs = field_validator("logprobs")(classmethod(lambda cls, value, info: _refuse(value, info)))

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


class ChatMessage(_Request):
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: Optional[Union[str, list[TextPart]]] = None
    name: Optional[str] = None

    def text(self) -> str:
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        return "".join(part.text for part in self.content)


class ChatCompletionRequest(SamplingFields):
    messages: list[ChatMessage] = Field(..., min_length=1)

    def template_messages(self) -> list[dict[str, str]]:
        # "developer" is OpenAI's newer name for "system"; chat templates know only the latter.
        return [
            {"role": "system" if m.role == "developer" else m.role, "content": m.text()}
            for m in self.messages
        ]


class CompletionRequest(SamplingFields):
    prompt: Annotated[Union[str, list[str]], _PROMPT_SCHEMA]
    echo: Annotated[bool, WithJsonSchema({"enum": [False], "description": "not supported: false or absent"})] = False

    @field_validator("prompt")
    @classmethod
    def _check_prompt(cls, value):
        if isinstance(value, list) and len(value) != 1:
            raise ValueError("send one prompt per request (a list must hold exactly one string)")
        return value

    _check_echo = field_validator("echo")(classmethod(lambda cls, value, info: _refuse(value, info)))

    def prompt_text(self) -> str:
        return self.prompt if isinstance(self.prompt, str) else self.prompt[0]


SamplingFields.model_rebuild()


# ---------------------------------------------------------------------------- responses


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:24]}"


def now() -> int:
    return int(time.time())


def _is_none(value: Any) -> bool:
    return value is None


def _never_null(schema: dict[str, Any]) -> None:
    """The document of a field that is absent when unset: its type, never null."""
    schema["anyOf"] = [s for s in schema.pop("anyOf") if s.get("type") != "null"]
    schema.pop("default", None)


def _omitted_when_none(description: str = "") -> Any:
    return Field(None, exclude_if=_is_none, json_schema_extra=_never_null, description=description or None)


FinishReason = Literal["stop", "length", "cancelled"]


class _Response(BaseModel):
    # A field with a default is still always sent: the document lists it as required.
    model_config = ConfigDict(json_schema_serialization_defaults_required=True)


class ErrorDetail(_Response):
    message: str
    type: str = Field(description="invalid_request_error, rate_limit_error, service_unavailable, timeout, server_error")
    param: Optional[str] = Field(None, description="the request field at fault, when one is")
    code: Union[str, int, None] = Field(None, description="a stable code such as model_not_found (an HTTP status"
                                                           " inside an event stream)")


class ErrorResponse(_Response):
    """OpenAI's error body: every 4xx and 5xx this server sends has this shape."""

    error: ErrorDetail


class Usage(_Response):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class AssistantMessage(_Response):
    role: Literal["assistant"] = "assistant"
    content: str
    reasoning_content: Optional[str] = _omitted_when_none("the model's thinking, when it thinks aloud")


class ChatChoice(_Response):
    index: int = 0
    message: AssistantMessage
    logprobs: None = None
    finish_reason: FinishReason


class ChatCompletion(_Response):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[ChatChoice]
    usage: Usage


class ChatDelta(_Response):
    """What a chunk adds: the role in the first chunk, then text; empty in the last."""

    role: Optional[Literal["assistant"]] = _omitted_when_none()
    reasoning_content: Optional[str] = _omitted_when_none()
    content: Optional[str] = _omitted_when_none()


class ChatChunkChoice(_Response):
    index: int = 0
    delta: ChatDelta
    logprobs: None = None
    finish_reason: Optional[FinishReason] = None


class ChatCompletionChunk(_Response):
    """One ``data:`` event of a streamed chat completion; the stream ends with ``data: [DONE]``."""

    id: str
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    created: int
    model: str
    choices: list[ChatChunkChoice]
    usage: Optional[Usage] = _omitted_when_none("in the last chunk (no choices), when stream_options.include_usage")


class TextChoice(_Response):
    index: int = 0
    text: str
    logprobs: None = None
    finish_reason: FinishReason


class Completion(_Response):
    id: str
    object: Literal["text_completion"] = "text_completion"
    created: int
    model: str
    choices: list[TextChoice]
    usage: Usage


class TextChunkChoice(_Response):
    index: int = 0
    text: str
    logprobs: None = None
    finish_reason: Optional[FinishReason] = None


class CompletionChunk(_Response):
    """One ``data:`` event of a streamed text completion; the stream ends with ``data: [DONE]``."""

    id: str
    object: Literal["text_completion"] = "text_completion"
    created: int
    model: str
    choices: list[TextChunkChoice]
    usage: Optional[Usage] = _omitted_when_none("in the last chunk (no choices), when stream_options.include_usage")


class ModelCard(_Response):
    id: str
    object: Literal["model"] = "model"
    created: int = Field(default_factory=now)
    owned_by: str = "deepseek-desktop"
    root: Optional[str] = None
    max_model_len: Optional[int] = None


class ModelList(_Response):
    object: Literal["list"] = "list"
    data: list[ModelCard]


# ---------------------------------------------------------------------------- admin


class LoadRequest(BaseModel):
    """``POST /admin/load``. Unknown fields are refused: a typo here would silently load wrongly."""

    model_config = ConfigDict(extra="forbid")

    path: str = Field(..., min_length=1, description="model folder or .gguf file")
    dtype: Literal["auto", "bfloat16", "float16", "float32"] = "auto"
    device: str = Field("auto", pattern=r"^(auto|cpu|mps|cuda(:\d+)?)$")
    max_memory: Optional[dict[str, str]] = Field(None, description='e.g. {"cuda:0": "20GiB", "cpu": "64GiB"}')
    chunk_size_mb: float = Field(64.0, gt=0)
    load_timeout_s: float = Field(1800.0, gt=0)
    served_model_name: Optional[str] = None
    max_context: Optional[int] = Field(None, ge=16)


class Health(_Response):
    """``GET /health``: 200 when a model serves, 503 with the reason otherwise."""

    status: Literal["ok", "unavailable"]
    reason: str
    state: ModelState


class PublicKey(_Response):
    """A named key as the API shows it: never the key (nor its hash)."""

    name: str
    role: Literal["admin", "inference", "monitor"]
    key_env: Optional[str] = Field(None, description="the environment variable it was read from, if any")
    rate_limit: Optional[RateLimit] = None


def _public_server_fields() -> dict[str, Any]:
    fields: dict[str, Any] = {name: (field.annotation, field) for name, field in ServerConfig.model_fields.items()
                              if name not in ("api_key", "keys")}
    fields["keys"] = (list[PublicKey], Field(default_factory=list))
    return fields


# The server section as the API shows it: no key is ever sent back.
PublicServerConfig = create_model("PublicServerConfig", __base__=_Response, **_public_server_fields())


class PublicConfig(_Response):
    """The configuration in force (``GET /admin/config``), without the API key."""

    model: ModelConfig
    load: LoadConfig
    batching: BatchingConfig
    cache: CacheConfig
    server: PublicServerConfig  # type: ignore[valid-type]


class KeyRateLimit(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(..., description="a key of [[server.keys]]")
    rate_limit: Optional[RateLimit] = Field(..., description="its own limit; null: the default one")


class ServerChanges(BaseModel):
    """What of ``[server]`` changes at run time: the rate limits and the circuit breaker."""

    model_config = ConfigDict(extra="forbid")

    rate_limit: Optional[RateLimit] = Field(None, description="the default limit; null: none")
    keys: Optional[list[KeyRateLimit]] = Field(None, json_schema_extra=_never_null)
    circuit: Optional[CircuitConfig] = Field(None, json_schema_extra=_never_null)


class ConfigChanges(BaseModel):
    """``PUT /admin/config``: settings applied without reloading weights; any subset of the sections.

    Documents the body only: the route reads it as it comes, so that a section that needs a
    reload or a restart (model, load, server) is refused with a message saying so.
    """

    model_config = ConfigDict(extra="forbid")

    batching: Optional[BatchingConfig] = Field(None, json_schema_extra=_never_null)
    cache: Optional[CacheConfig] = Field(None, json_schema_extra=_never_null)
    server: Optional[ServerChanges] = Field(None, json_schema_extra=_never_null)


class CircuitStatus(_Response):
    """The circuit breaker over generation failures (``[server.circuit]``)."""

    state: Literal["closed", "open", "half_open"]
    reason: Optional[str]
    recent_requests: int = Field(description="outcomes in the rolling window (while closed)")
    recent_failures: int
    failure_ratio: float
    min_requests: int
    window_s: float
    cooldown_s: float


class BatchLimitStatus(_Response):
    """Requests decoded together: lowered for a while after the device ran out of memory."""

    configured: int
    current: int
    lowered_for_s: Optional[float] = Field(description="seconds until the configured limit is back; null: not lowered")
    reason: Optional[str]


class AdminStatus(_Response):
    """``GET /admin/status``."""

    state: ModelState
    error: Optional[str]
    process_rss_bytes: int
    batching_mode: str
    batching_warning: Optional[str]
    config: PublicConfig
    model: Optional[str]
    path: Optional[str]
    device: Optional[str]
    dtype: Optional[str]
    context_length: Optional[int]
    memory_bytes: Optional[int]
    circuit: CircuitStatus
    batch_limit: Optional[BatchLimitStatus] = Field(description="null: no model, or a scheduler without one")


class LoadAccepted(_Response):
    """``POST /admin/load`` (202): the load runs in the background; follow it on ``events``."""

    state: Literal[ModelState.LOADING] = ModelState.LOADING
    path: str
    events: str = "/admin/events"


class LoadCancelled(_Response):
    cancelled: Literal[True] = True
    state: ModelState
    model: Optional[str]


class Unloaded(_Response):
    state: ModelState


class EngineEvent(_Response):
    """One ``data:`` event of ``GET /admin/events``: a state change, load progress or an error,
    with fields that depend on the type (a load's bytes and ETA, the model's device…)."""

    model_config = ConfigDict(extra="allow")

    type: Literal["state", "progress", "error", "circuit"]
    ts: float
