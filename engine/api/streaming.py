"""Turning generation events into OpenAI bodies: one JSON reply, or Server-Sent Events.

Bodies are built from the ``engine.protocol`` models the OpenAPI document describes, except the
per-token stream chunks: plain dicts of the same shape, for speed (a test validates them against
the models). SSE lines keep ``json.dumps``'s spelling, so the bytes on the wire are what they
always were.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from typing import Any, AsyncIterator, Optional, Union

from fastapi import Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from engine.api.errors import error_body, error_response
from engine.events import EventBus
from engine.protocol import (
    AssistantMessage,
    ChatChoice,
    ChatChunkChoice,
    ChatCompletion,
    ChatCompletionChunk,
    ChatDelta,
    Completion,
    CompletionChunk,
    TextChoice,
    TextChunkChoice,
    Usage,
    now,
)
from engine.requests import ErrorEvent, FinishEvent, GenerationRequest, TextEvent

access_log = logging.getLogger("engine.access")

DISCONNECT_POLL_S = 0.2
KEEP_ALIVE_S = 15
SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


class EventStream(StreamingResponse):
    """Server-Sent Events: the media type is set here, so the OpenAPI document names it too."""

    media_type = "text/event-stream"

    def __init__(self, content: AsyncIterator[str], status_code: int = 200):
        super().__init__(content, status_code=status_code, headers=SSE_HEADERS)


def sse(payload: Any) -> str:
    return f"data: {json.dumps(payload, ensure_ascii=False)}\n\n"


def usage(finish: FinishEvent) -> Usage:
    return Usage(prompt_tokens=finish.prompt_tokens, completion_tokens=finish.completion_tokens,
                 total_tokens=finish.prompt_tokens + finish.completion_tokens)


class Reply:
    """Builds the OpenAI bodies of one chat or text completion, and logs it once when it ends."""

    def __init__(self, request_id: str, model: str, chat: bool, path: str, key: Optional[str] = None):
        self.id, self.model, self.chat, self.path = request_id, model, chat, path
        self.key = key  # the API key's name (never the key)
        self.created = now()
        self.started = time.monotonic()
        # What every per-token chunk repeats. Those chunks are built as plain dicts (a model per
        # token cost twice the time); a test checks they validate as the chunk models.
        self._envelope = {"id": self.id, "object": "chat.completion.chunk" if chat else "text_completion",
                          "created": self.created, "model": self.model}

    def _chunk(self, choice: Union[ChatChunkChoice, TextChunkChoice, None],
               finished: Optional[FinishEvent] = None) -> str:
        kind = ChatCompletionChunk if self.chat else CompletionChunk
        chunk = kind(id=self.id, created=self.created, model=self.model, choices=[choice] if choice else [],
                     usage=usage(finished) if finished else None)
        return sse(chunk.model_dump())

    def first_chunk(self) -> str:
        return self._chunk(ChatChunkChoice(delta=ChatDelta(role="assistant", content="")))

    def text_chunk(self, event: TextEvent) -> str:
        """A ``ChatCompletionChunk`` (or ``CompletionChunk``) with the event's text, on the hot path."""
        if self.chat:
            delta = {}
            if event.reasoning:
                delta["reasoning_content"] = event.reasoning
            if event.content:
                delta["content"] = event.content
            choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": None}
        else:
            choice = {"index": 0, "text": event.content, "logprobs": None, "finish_reason": None}
        return sse({**self._envelope, "choices": [choice]})

    def finish_chunk(self, reason: str) -> str:
        if self.chat:
            return self._chunk(ChatChunkChoice(delta=ChatDelta(), finish_reason=reason))
        return self._chunk(TextChunkChoice(text="", finish_reason=reason))

    def usage_chunk(self, finish: FinishEvent) -> str:
        return self._chunk(None, finished=finish)

    def full(self, content: str, reasoning: str, finish: FinishEvent) -> Union[ChatCompletion, Completion]:
        fields = dict(id=self.id, created=self.created, model=self.model, usage=usage(finish))
        if self.chat:
            message = AssistantMessage(content=content, reasoning_content=reasoning or None)
            return ChatCompletion(choices=[ChatChoice(message=message, finish_reason=finish.finish_reason)], **fields)
        return Completion(choices=[TextChoice(text=content, finish_reason=finish.finish_reason)], **fields)

    def log(self, status: int, outcome: str, finish: Optional[FinishEvent] = None) -> None:
        fields: dict[str, Any] = {"event": "request", "method": "POST", "path": self.path, "status": status,
                                  "request_id": self.id, "model": self.model, "outcome": outcome, "key": self.key,
                                  "duration_ms": round((time.monotonic() - self.started) * 1000, 1)}
        if finish is not None:
            fields.update(prompt_tokens=finish.prompt_tokens, completion_tokens=finish.completion_tokens,
                          ttft_ms=None if finish.time_to_first_token_s is None
                          else round(finish.time_to_first_token_s * 1000, 1))
        access_log.info("POST %s %s %s", self.path, status, outcome, extra=fields)


async def stream_reply(reply: Reply, events: asyncio.Queue, gen: GenerationRequest,
                       include_usage: bool) -> AsyncIterator[str]:
    """SSE chunks as tokens arrive, then ``[DONE]``; a client that leaves cancels the generation."""
    outcome, finish = "disconnected", None
    try:
        if reply.chat:
            yield reply.first_chunk()
        while True:
            event = await events.get()
            if isinstance(event, TextEvent):
                yield reply.text_chunk(event)
            elif isinstance(event, FinishEvent):
                finish, outcome = event, event.finish_reason
                yield reply.finish_chunk(event.finish_reason)
                if include_usage:
                    yield reply.usage_chunk(event)
                break
            elif isinstance(event, ErrorEvent):
                outcome = "error"
                yield sse(error_body(event.message, event.error_type, code=event.status_code))
                break
        yield "data: [DONE]\n\n"
    finally:
        # Reached on normal end and when the client goes away (the response task is cancelled).
        gen.cancel()
        reply.log(200, outcome, finish)


async def collect_reply(reply: Reply, events: asyncio.Queue, gen: GenerationRequest,
                        request: Request) -> Response:
    """The whole reply as one JSON body; generation stops if the client leaves meanwhile."""
    content, reasoning = [], []
    try:
        while True:
            try:
                event = await asyncio.wait_for(events.get(), timeout=DISCONNECT_POLL_S)
            except asyncio.TimeoutError:
                if await request.is_disconnected():
                    reply.log(499, "disconnected")
                    return Response(status_code=499)
                continue
            if isinstance(event, TextEvent):
                content.append(event.content)
                reasoning.append(event.reasoning)
            elif isinstance(event, FinishEvent):
                reply.log(200, event.finish_reason, event)
                body = reply.full("".join(content), "".join(reasoning), event)
                return JSONResponse(body.model_dump())
            elif isinstance(event, ErrorEvent):
                reply.log(event.status_code, "error")
                return error_response(event.status_code, event.message, event.error_type)
    finally:
        gen.cancel()


async def engine_events(bus: EventBus) -> AsyncIterator[str]:
    """``GET /admin/events``: the current state first, then every event until shutdown."""
    queue = bus.subscribe()
    try:
        while True:
            try:
                event = await asyncio.wait_for(queue.get(), timeout=KEEP_ALIVE_S)
            except asyncio.TimeoutError:
                yield ": keep-alive\n\n"  # lets proxies and clients see the stream is alive
                continue
            if event is None:  # the server is shutting down
                return
            # No "event:" line: every event reaches EventSource's onmessage; "type" tells them apart.
            yield f"data: {json.dumps(event)}\n\n"
    finally:
        bus.unsubscribe(queue)
