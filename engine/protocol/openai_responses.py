"""What ``/v1/chat/completions``, ``/v1/completions`` and ``/v1/models`` send back.

OpenAI's shapes, with ``reasoning_content`` beside ``content`` as DeepSeek's API returns it.
A streamed body is a series of chunks shaped like the whole body, each choice holding what it
adds; the stream ends with ``data: [DONE]``.
"""

from __future__ import annotations

from typing import Literal, Optional

from pydantic import Field

from engine.protocol.response_base import ResponseModel, now, omitted_when_none

FinishReason = Literal["stop", "length", "tool_calls", "cancelled"]

_STREAM_USAGE = "in the last chunk (no choices), when stream_options.include_usage"


class Usage(ResponseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class _CompletionBody(ResponseModel):
    """The fields of every completion body and chunk, in OpenAI's order; each body narrows
    ``object`` to its own name and adds ``choices`` and ``usage``."""

    id: str
    object: str
    created: int
    model: str


# ---------------------------------------------------------------------------- chat


class CalledFunction(ResponseModel):
    name: str
    arguments: str  # JSON text


class ToolCall(ResponseModel):
    id: str
    type: Literal["function"] = "function"
    function: CalledFunction


class AssistantMessage(ResponseModel):
    role: Literal["assistant"] = "assistant"
    content: Optional[str]
    reasoning_content: Optional[str] = omitted_when_none("the model's thinking, when it thinks aloud")
    tool_calls: Optional[list[ToolCall]] = omitted_when_none("the functions the reply calls")


class TopLogprob(ResponseModel):
    token: str
    logprob: float
    bytes: Optional[list[int]] = None


class TokenLogprobEntry(TopLogprob):
    """One token of the reply: its log-probability under the model's raw distribution (before
    penalties, bias, grammar mask and temperature) and its likeliest alternatives."""

    top_logprobs: list[TopLogprob] = Field(default_factory=list)


class ChatLogprobs(ResponseModel):
    content: Optional[list[TokenLogprobEntry]] = None
    refusal: Optional[list[TokenLogprobEntry]] = None


class ChatChoice(ResponseModel):
    index: int = 0
    message: AssistantMessage
    logprobs: Optional[ChatLogprobs] = None
    finish_reason: FinishReason


class ChatCompletion(_CompletionBody):
    object: Literal["chat.completion"] = "chat.completion"
    choices: list[ChatChoice]
    usage: Usage


class ChatDelta(ResponseModel):
    """What a chunk adds: the role in the first chunk, then text; empty in the last."""

    role: Optional[Literal["assistant"]] = omitted_when_none()
    reasoning_content: Optional[str] = omitted_when_none()
    content: Optional[str] = omitted_when_none()
    tool_calls: Optional[list["ToolCallDelta"]] = omitted_when_none(
        "calls in pieces: a call's first piece has its id and name, the next add argument text")


class FunctionDelta(ResponseModel):
    name: Optional[str] = omitted_when_none("in the call's first piece")
    arguments: str = ""  # the next piece of the arguments' JSON text


class ToolCallDelta(ResponseModel):
    """A piece of a call; clients join the pieces by ``index``."""

    index: int
    id: Optional[str] = omitted_when_none("in the call's first piece")
    type: Optional[Literal["function"]] = omitted_when_none("in the call's first piece")
    function: FunctionDelta


class ChatChunkChoice(ResponseModel):
    index: int = 0
    delta: ChatDelta
    logprobs: Optional[ChatLogprobs] = None
    finish_reason: Optional[FinishReason] = None


class ChatCompletionChunk(_CompletionBody):
    """One ``data:`` event of a streamed chat completion; the stream ends with ``data: [DONE]``."""

    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    choices: list[ChatChunkChoice]
    usage: Optional[Usage] = omitted_when_none(_STREAM_USAGE)


ChatDelta.model_rebuild()

# ---------------------------------------------------------------------------- text


class CompletionLogprobs(ResponseModel):
    """The legacy completions shape: parallel lists, one place per token. With ``echo`` the
    prompt's tokens come first, the very first with a ``null`` log-probability."""

    tokens: list[str] = Field(default_factory=list)
    token_logprobs: list[Optional[float]] = Field(default_factory=list)
    top_logprobs: list[Optional[dict[str, float]]] = Field(default_factory=list)
    text_offset: list[int] = Field(default_factory=list)


class TextChoice(ResponseModel):
    index: int = 0
    text: str
    logprobs: Optional[CompletionLogprobs] = None
    finish_reason: FinishReason


class Completion(_CompletionBody):
    object: Literal["text_completion"] = "text_completion"
    choices: list[TextChoice]
    usage: Usage


class TextChunkChoice(TextChoice):
    # A chunk's choice is the final one with its finish_reason still open (set in the last chunk).
    finish_reason: Optional[FinishReason] = None


class CompletionChunk(_CompletionBody):
    """One ``data:`` event of a streamed text completion; the stream ends with ``data: [DONE]``."""

    object: Literal["text_completion"] = "text_completion"
    choices: list[TextChunkChoice]
    usage: Optional[Usage] = omitted_when_none(_STREAM_USAGE)


# ---------------------------------------------------------------------------- models


class ModelCard(ResponseModel):
    id: str
    object: Literal["model"] = "model"
    created: int = Field(default_factory=now)
    owned_by: str = "deepseek-desktop"
    root: Optional[str] = None
    max_model_len: Optional[int] = None


class ModelList(ResponseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]
