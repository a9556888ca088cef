"""The ``search`` extension of ``/v1/chat/completions``: retrieve, put the passages into the
prompt as numbered sources (as many as fit the model's context), and add ``citations`` (to the
body, or to the stream's first chunk) and ``unknown_citations`` (to the body, or to the chunk
that carries finish_reason). The chat route calls ``encode_chat`` and ``finish``; everything
else about grounding lives here and in ``engine.search.grounding``."""

from __future__ import annotations

import json
from typing import AsyncIterator, Optional

from fastapi import Request
from fastapi.responses import JSONResponse, Response

from engine.core import Engine
from engine.search import grounding
from engine.search.store import StoreError, UnknownCollection
from engine.service import gateway
from engine.service.errors import ServiceError

# Room kept for the answer when the request sets no max_tokens.
ANSWER_RESERVE = 512


class Grounding:
    def __init__(self, hits: list):
        self.hits = hits
        self.citations = grounding.citations(hits)

    def unknown(self, answer: str) -> list[int]:
        return grounding.unknown_citations(answer, len(self.hits))


def encode_chat(engine: Engine, request: Request, body) -> tuple[list[int], bool, Optional[Grounding]]:
    """The prompt's ids (with the sources when the body asks for ``search``), as
    ``gateway.encode_chat`` gives them, and the grounding to finish the reply with."""
    messages = body.template_messages()
    options = getattr(body, "search", None)
    if options is None:
        return (*gateway.encode_chat(engine, messages), None)
    from engine.api.routers.search import search_service

    question = grounding.last_question(messages)
    if question is None:
        raise ServiceError(400, "search needs a user message to search for", param="messages")
    try:
        result = search_service(request).search(question, options.collection, options.top_k, options.mode)
    except UnknownCollection as exc:
        raise ServiceError(404, str(exc), param="search.collection", code="unknown_collection") from None
    except StoreError as exc:
        raise ServiceError(400, str(exc), param="search") from None
    hits = result.hits
    loaded = engine.loaded
    budget = (loaded.context_length if loaded else 0) - (body.requested_max_tokens() or ANSWER_RESERVE)
    # Fewer sources, then shorter ones, until the prompt leaves room for the answer.
    for chars in (grounding.SOURCE_CHARS, 600, 250):
        for count in range(len(hits), 0, -1):
            ids, opens = gateway.encode_chat(engine, grounding.grounded_messages(messages, hits[:count], chars))
            if loaded is None or len(ids) <= budget:
                return ids, opens, Grounding(hits[:count])
    if not hits:
        return (*gateway.encode_chat(engine, grounding.grounded_messages(messages, [])), Grounding([]))
    raise ServiceError(400, f"no retrieved source fits in the model's context of {loaded.context_length} tokens "
                            "beside the conversation; lower max_tokens or search.top_k", param="search")


def finish(found: Optional[Grounding], response: Response) -> Response:
    if found is None or response.status_code != 200:
        return response
    if isinstance(response, JSONResponse):
        body = json.loads(response.body)
        answer = "".join((choice.get("message") or {}).get("content") or "" for choice in body.get("choices", []))
        body["citations"] = found.citations
        body["unknown_citations"] = found.unknown(answer)
        return JSONResponse(body, status_code=response.status_code)
    response.body_iterator = _stream(found, response.body_iterator)
    return response


async def _stream(found: Grounding, chunks: AsyncIterator) -> AsyncIterator[str]:
    first, answer = True, []
    async for chunk in chunks:
        text = chunk.decode() if isinstance(chunk, bytes) else chunk
        if not text.startswith("data: {"):
            yield chunk
            continue
        event = json.loads(text[len("data: "):])
        choices = event.get("choices") or []
        if "error" in event:
            yield chunk
            continue
        for choice in choices:
            answer.append((choice.get("delta") or {}).get("content") or "")
        changed = False
        if first:
            event["citations"], first, changed = found.citations, False, True
        if any(choice.get("finish_reason") for choice in choices):
            event["unknown_citations"], changed = found.unknown("".join(answer)), True
        yield f"data: {json.dumps(event, ensure_ascii=False)}\n\n" if changed else chunk
