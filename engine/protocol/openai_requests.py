"""The bodies clients send to ``/v1/chat/completions`` and ``/v1/completions`` (and gRPC's twins).

Requests ignore fields they do not know (clients send newer OpenAI fields freely) but refuse
values out of range with a message naming the field.
"""

from __future__ import annotations

from typing import Annotated, Literal, Optional, Union

from pydantic import BaseModel, ConfigDict, Field, WithJsonSchema, field_validator

from engine.protocol.search import SearchOptions
from engine.requests import SAMPLING_BOUNDS

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
    search: Optional[SearchOptions] = Field(None, description="extension: answer from a document collection's passages, given to the model as numbered sources; the reply adds citations and unknown_citations")

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


SamplingFields.model_rebuild()  # StreamOptions is defined after the class that names it
