"""Turning generation events into OpenAI bodies: one JSON reply, or Server-Sent Events.

Bodies are built from the ``engine.protocol`` models the OpenAPI document describes, except the
per-token stream chunks: plain dicts of the same shape, for speed (a test validates them against
the models). SSE lines keep ``json.dumps``'s spelling, so the bytes on the wire are what they
always were.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import time
from typing import Any, AsyncIterator, Iterator, Optional, Union

from fastapi import Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from engine.api.errors import error_body, error_response
from engine.api.logprobs import LogprobFormatter
from engine.protocol.openai_responses import CalledFunction, FunctionDelta, ToolCallDelta
from engine.protocol.openai_responses import ToolCall as ResponseToolCall
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
from engine.requests import ErrorEvent, FinishEvent, GenerationRequest, TextEvent, TokenLogprob
from engine.tool_call_stream import CallPiece, ToolCallStream
from engine.tool_calls import ToolCall, ToolFormat

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


def total_usage(finishes: list[FinishEvent]) -> Usage:
    """Usage of a request's choices: the prompt counted once, every choice's completion."""
    prompt = max(finish.prompt_tokens for finish in finishes)
    completion = sum(finish.completion_tokens for finish in finishes)
    return Usage(prompt_tokens=prompt, completion_tokens=completion, total_tokens=prompt + completion)


class Reply:
    """Builds the OpenAI bodies of one chat or text completion, and logs it once when it ends.

    ``logprobs``: formats the tokens' log-probabilities when the request asked for them.
    ``echo``: the prompt text that comes before each text completion's choice.
    """

    def __init__(self, request_id: str, model: str, chat: bool, path: str, key: Optional[str] = None,
                 logprobs: Optional[LogprobFormatter] = None, echo: Optional[str] = None,
                 tools: Optional[ToolFormat] = None, single_call: bool = False):
        self.id, self.model, self.chat, self.path = request_id, model, chat, path
        self.key = key  # the API key's name (never the key)
        self.created = now()
        self.started = time.monotonic()
        self.logprobs = logprobs
        self.echo = echo
        self.tools = tools  # reads the calls out of a chat reply, when the request offered tools
        self.single_call = single_call  # parallel_tool_calls false: the first call only
        self._offsets: dict[int, int] = {}  # streamed completions: where each choice's next token starts
        # What every per-token chunk repeats. Those chunks are built as plain dicts (a model per
        # token cost twice the time); a test checks they validate as the chunk models.
        self._envelope = {"id": self.id, "object": "chat.completion.chunk" if chat else "text_completion",
                          "created": self.created, "model": self.model}

    def _chunk(self, choice: Union[ChatChunkChoice, TextChunkChoice, None],
               finished: Optional[Usage] = None) -> str:
        kind = ChatCompletionChunk if self.chat else CompletionChunk
        chunk = kind(id=self.id, created=self.created, model=self.model, choices=[choice] if choice else [],
                     usage=finished)
        return sse(chunk.model_dump())

    def first_chunk(self, index: int = 0) -> str:
        return self._chunk(ChatChunkChoice(index=index, delta=ChatDelta(role="assistant", content="")))

    def text_chunk(self, event: TextEvent, index: int = 0) -> str:
        """A ``ChatCompletionChunk`` (or ``CompletionChunk``) with the event's text, on the hot path."""
        if self.chat:
            delta = {}
            if event.reasoning:
                delta["reasoning_content"] = event.reasoning
            if event.content:
                delta["content"] = event.content
            choice = {"index": index, "delta": delta, "logprobs": None, "finish_reason": None}
        else:
            choice = {"index": index, "text": event.content, "logprobs": None, "finish_reason": None}
        if event.logprobs is not None:
            choice["logprobs"] = self._stream_logprobs(event.logprobs, index)
        return sse({**self._envelope, "choices": [choice]})

    def _stream_logprobs(self, entries: list[TokenLogprob], index: int) -> dict:
        if self.chat:
            return self.logprobs.chat(entries)
        body = self.logprobs.completion(entries, self._offsets.get(index, 0))
        if body["text_offset"]:
            self._offsets[index] = body["text_offset"][-1] + len(body["tokens"][-1])
        return body

    def finish_chunk(self, finish: FinishEvent, index: int = 0) -> str:
        """The choice's last chunk: its finish reason, and the log-probabilities of tokens that
        brought no text (held-back bytes flushed at the end)."""
        reason = finish.finish_reason
        logprobs = None
        if finish.logprobs and self.logprobs is not None:
            logprobs = self._stream_logprobs(finish.logprobs, index)
        if self.chat:
            return self._chunk(ChatChunkChoice(index=index, delta=ChatDelta(), finish_reason=reason, logprobs=logprobs))
        return self._chunk(TextChunkChoice(index=index, text="", finish_reason=reason, logprobs=logprobs))

    def usage_chunk(self, finishes: list[FinishEvent]) -> str:
        return self._chunk(None, finished=total_usage(finishes))

    def choice(self, index: int, content: str, reasoning: str, finish: FinishEvent,
               entries: Optional[list[TokenLogprob]], prompt_ids: list[int]) -> Union[ChatChoice, TextChoice]:
        """One whole choice: its text, finish reason and (when asked) log-probabilities."""
        if self.chat:
            calls = []
            if self.tools is not None:
                content, calls = self.read_calls(content)
            message = AssistantMessage(content=content if content or not calls else None,
                                       reasoning_content=reasoning or None,
                                       tool_calls=[_call_body(call) for call in calls] or None)
            logprobs = self.logprobs.chat(entries) if self.logprobs is not None else None
            reason = "tool_calls" if calls else finish.finish_reason
            return ChatChoice(index=index, message=message, finish_reason=reason, logprobs=logprobs)
        text = (self.echo or "") + content
        logprobs = None
        if self.logprobs is not None:
            prompt = self._prompt_entries(finish)
            logprobs = self.logprobs.completion(prompt + (entries or []), 0, prompt_ids)
        return TextChoice(index=index, text=text, finish_reason=finish.finish_reason, logprobs=logprobs)

    def read_calls(self, content: str) -> tuple[str, list[ToolCall]]:
        text, calls = self.tools.parse(content)
        return text, calls[:1] if self.single_call else calls

    def call_pieces_chunk(self, pieces: list[CallPiece], index: int = 0) -> str:
        """Pieces of the choice's calls: a call's first names it, the next add to its arguments."""
        delta = ChatDelta(tool_calls=[ToolCallDelta(
            index=piece.index, id=piece.id, type="function" if piece.id else None,
            function=FunctionDelta(name=piece.name, arguments=piece.arguments)) for piece in pieces])
        return self._chunk(ChatChunkChoice(index=index, delta=delta))

    def _prompt_entries(self, finish: FinishEvent) -> list:
        return list(finish.prompt_logprobs or []) if self.echo is not None else []

    def full(self, choices: list, finishes: list[FinishEvent]) -> Union[ChatCompletion, Completion]:
        fields = dict(id=self.id, created=self.created, model=self.model, usage=total_usage(finishes))
        if self.chat:
            return ChatCompletion(choices=choices, **fields)
        return Completion(choices=choices, **fields)

    def log(self, status: int, outcome: str, finish: Optional[FinishEvent] = None) -> None:
        fields: dict[str, Any] = {"event": "request", "method": "POST", "path": self.path, "status": status,
                                  "request_id": self.id, "model": self.model, "outcome": outcome, "key": self.key,
                                  "duration_ms": round((time.monotonic() - self.started) * 1000, 1)}
        if finish is not None:
            fields.update(prompt_tokens=finish.prompt_tokens, completion_tokens=finish.completion_tokens,
                          ttft_ms=None if finish.time_to_first_token_s is None
                          else round(finish.time_to_first_token_s * 1000, 1))
        access_log.info("POST %s %s %s", self.path, status, outcome, extra=fields)


class _ChoiceChunks:
    """One choice's chunks as its events arrive."""

    def __init__(self, reply: Reply, index: int):
        self.reply, self.index = reply, index

    def text(self, event: TextEvent) -> Iterator[str]:
        yield self.reply.text_chunk(event, self.index)

    def finish(self, event: FinishEvent) -> Iterator[str]:
        yield self.reply.finish_chunk(event, self.index)


class _ToolChoiceChunks(_ChoiceChunks):
    """A choice of a request that offered tools: text streams until a call may be starting (the
    format's opening marker); a call streams in pieces once its name is known; the choice
    finishes with ``tool_calls`` when it called (or the held text goes out, when it was no call
    after all)."""

    def __init__(self, reply: Reply, index: int):
        super().__init__(reply, index)
        self.reader = ToolCallStream(reply.tools, single_call=reply.single_call)

    def text(self, event: TextEvent) -> Iterator[str]:
        text, pieces = self.reader.push(event.content)
        if text or event.reasoning or event.logprobs:
            yield self.reply.text_chunk(dataclasses.replace(event, content=text), self.index)
        if pieces:
            yield self.reply.call_pieces_chunk(pieces, self.index)

    def finish(self, event: FinishEvent) -> Iterator[str]:
        text, pieces = self.reader.finish()
        if text:
            yield self.reply.text_chunk(TextEvent(content=text), self.index)
        if pieces:
            yield self.reply.call_pieces_chunk(pieces, self.index)
        if self.reader.calls:
            event = dataclasses.replace(event, finish_reason="tool_calls")
        yield self.reply.finish_chunk(event, self.index)


async def stream_choices(reply: Reply, events: asyncio.Queue, gens: list[GenerationRequest],
                         include_usage: bool) -> AsyncIterator[str]:
    """SSE chunks as tokens arrive, then ``[DONE]``; a client that leaves cancels the generation.
    With ``n`` > 1 ``events`` holds (choice index, event): each choice's chunks carry its index,
    each ends with its own finish chunk, usage comes once at the end."""
    several = len(gens) > 1
    kind = _ToolChoiceChunks if reply.tools is not None else _ChoiceChunks
    choices = [kind(reply, index) for index in range(len(gens))]
    outcome, finishes = "disconnected", {}
    try:
        if reply.chat:
            for index in range(len(gens)):
                yield reply.first_chunk(index)
        while len(finishes) < len(gens):
            item = await events.get()
            index, event = item if several else (0, item)
            if isinstance(event, TextEvent):
                for chunk in choices[index].text(event):
                    yield chunk
            elif isinstance(event, FinishEvent):
                finishes[index] = event
                for chunk in choices[index].finish(event):
                    yield chunk
            elif isinstance(event, ErrorEvent):
                outcome = "error"
                yield sse(error_body(event.message, event.error_type, code=event.status_code))
                break
        if len(finishes) == len(gens):
            outcome = finishes[0].finish_reason
            if include_usage:
                yield reply.usage_chunk(list(finishes.values()))
        yield "data: [DONE]\n\n"
    finally:
        # Reached on normal end and when the client goes away (the response task is cancelled).
        for gen in gens:
            gen.cancel()
        reply.log(200, outcome, _summed(finishes))


def _call_body(call: ToolCall) -> ResponseToolCall:
    return ResponseToolCall(id=call.id, function=CalledFunction(name=call.name, arguments=call.arguments))


def _summed(finishes: dict[int, FinishEvent]) -> Optional[FinishEvent]:
    """One finish event for the access log: the first choice's, with every choice's tokens."""
    if len(finishes) <= 1:
        return finishes.get(0)
    first = finishes[min(finishes)]
    return dataclasses.replace(first, completion_tokens=sum(f.completion_tokens for f in finishes.values()))


class _Collected:
    """One choice's parts as they arrive."""

    def __init__(self):
        self.content: list[str] = []
        self.reasoning: list[str] = []
        self.logprobs: list[TokenLogprob] = []
        self.finish: Optional[FinishEvent] = None

    def add(self, event: TextEvent) -> None:
        self.content.append(event.content)
        self.reasoning.append(event.reasoning)
        if event.logprobs:
            self.logprobs.extend(event.logprobs)


async def collect_reply(reply: Reply, events: asyncio.Queue, gens: list[GenerationRequest],
                        request: Request) -> Response:
    """The whole reply as one JSON body; generation stops if the client leaves meanwhile. With
    several choices ``events`` holds (choice index, event)."""
    several = len(gens) > 1
    choices = [_Collected() for _ in gens]
    waiting = len(gens)
    try:
        while True:
            try:
                item = await asyncio.wait_for(events.get(), timeout=DISCONNECT_POLL_S)
            except asyncio.TimeoutError:
                if await request.is_disconnected():
                    reply.log(499, "disconnected")
                    return Response(status_code=499)
                continue
            index, event = item if several else (0, item)
            if isinstance(event, TextEvent):
                choices[index].add(event)
            elif isinstance(event, FinishEvent):
                choices[index].finish = event
                if event.logprobs:
                    choices[index].logprobs.extend(event.logprobs)
                waiting -= 1
                if waiting == 0:
                    return _whole(reply, choices, gens[0].prompt_ids)
            elif isinstance(event, ErrorEvent):
                reply.log(event.status_code, "error")
                return error_response(event.status_code, event.message, event.error_type)
    finally:
        for gen in gens:
            gen.cancel()


def _whole(reply: Reply, choices: list[_Collected], prompt_ids: list[int]) -> Response:
    finishes = [c.finish for c in choices]
    # The prompt's log-probabilities come with the first choice only; every echoed choice shows them.
    prompt_logprobs = finishes[0].prompt_logprobs
    bodies = []
    for index, c in enumerate(choices):
        finish = c.finish if c.finish.prompt_logprobs is not None else dataclasses.replace(
            c.finish, prompt_logprobs=prompt_logprobs)
        bodies.append(reply.choice(index, "".join(c.content), "".join(c.reasoning), finish,
                                   c.logprobs if reply.logprobs is not None else None, prompt_ids))
    reply.log(200, finishes[0].finish_reason, _summed(dict(enumerate(finishes))))
    return JSONResponse(reply.full(bodies, finishes).model_dump())


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
