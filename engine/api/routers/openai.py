"""The OpenAI-compatible routes: models, chat completions, text completions."""

from __future__ import annotations

import asyncio
from typing import Optional

from fastapi import APIRouter, Request
from fastapi.responses import Response
from pydantic import BaseModel

from engine.api.deps import EngineDep
from engine.api.errors import APIError, documented
from engine.api.openapi import event_stream
from engine.api.streaming import EventStream, Reply, collect_reply, stream_reply
from engine.core import Engine, PromptError
from engine.protocol import (
    ChatCompletion,
    ChatCompletionChunk,
    ChatCompletionRequest,
    Completion,
    CompletionChunk,
    CompletionRequest,
    ErrorResponse,
    ModelCard,
    ModelList,
    SamplingFields,
    new_id,
)
from engine.requests import EngineNotReady, QueueFullError, SamplingParams, UnsupportedInMode

router = APIRouter(prefix="/v1", tags=["openai"])

GENERATION_ERRORS = documented(400, 404, 429, 500, 503, 504)


def _reply_or_stream(chunk: type[BaseModel]) -> dict:
    return event_stream("The reply as one JSON body; with stream: true, Server-Sent Events as tokens arrive"
                        " (an error after the first event arrives as an error event), then [DONE]",
                        chunk, ErrorResponse, done=True)


@router.get("/models", response_model=ModelList)
async def list_models(engine: EngineDep) -> ModelList:
    card = _model_card(engine)
    return ModelList(data=[card] if card else [])


@router.get("/models/{model_id:path}", response_model=ModelCard, responses=documented(404))
async def get_model(model_id: str, engine: EngineDep) -> ModelCard:
    card = _model_card(engine)
    if card is None or not engine.serves(model_id):
        raise _unknown_model(engine, model_id)
    return card


@router.post("/chat/completions", response_model=ChatCompletion,
             responses={200: _reply_or_stream(ChatCompletionChunk),
                        **GENERATION_ERRORS})
async def chat_completions(body: ChatCompletionRequest, request: Request, engine: EngineDep) -> Response:
    _check_model(engine, body.model)
    try:
        ids, opens_reasoning = engine.encode_chat(body.template_messages())
    except PromptError as exc:
        raise APIError(400, str(exc), param="messages") from None
    return await _generate(engine, request, body, ids, opens_reasoning, chat=True)


@router.post("/completions", response_model=Completion,
             responses={200: _reply_or_stream(CompletionChunk),
                        **GENERATION_ERRORS})
async def completions(body: CompletionRequest, request: Request, engine: EngineDep) -> Response:
    _check_model(engine, body.model)
    try:
        ids = engine.encode_text(body.prompt_text())
    except PromptError as exc:
        raise APIError(400, str(exc), param="prompt") from None
    return await _generate(engine, request, body, ids, False, chat=False)


def _model_card(engine: Engine) -> Optional[ModelCard]:
    loaded = engine.loaded  # one read: a model swapped meanwhile cannot mix two cards
    if loaded is None:
        return None
    return ModelCard(id=loaded.name, root=str(loaded.path), max_model_len=loaded.context_length)


def _unknown_model(engine: Engine, model_id: str) -> APIError:
    served = engine.model_name
    hint = f"this server serves {served!r}" if served else "no model is loaded"
    return APIError(404, f"the model {model_id!r} does not exist: {hint}", param="model", code="model_not_found")


def _check_model(engine: Engine, model_id: str) -> None:
    if not engine.ready:
        raise APIError(503, f"no model is ready: {engine.health()[1]}", "service_unavailable")
    if not engine.serves(model_id):
        raise _unknown_model(engine, model_id)


def _sampling_params(body: SamplingFields, max_new_tokens: int) -> SamplingParams:
    return SamplingParams(
        max_new_tokens=max_new_tokens,
        temperature=body.temperature,
        top_p=body.top_p,
        top_k=body.top_k,
        repetition_penalty=body.repetition_penalty,
        frequency_penalty=body.frequency_penalty,
        presence_penalty=body.presence_penalty,
        seed=body.seed,
        stop=tuple(body.stop_list()),
        ignore_eos=body.ignore_eos,
    )


async def _generate(engine: Engine, request: Request, body: SamplingFields, ids: list[int],
                    opens_reasoning: bool, chat: bool) -> Response:
    """Submit to the engine, then stream the reply or collect it into one body."""
    try:
        max_new = engine.plan_max_tokens(len(ids), body.requested_max_tokens())
    except PromptError as exc:
        raise APIError(400, str(exc), param="max_tokens", code="context_length_exceeded") from None
    loop = asyncio.get_running_loop()
    events: asyncio.Queue = asyncio.Queue()
    request_id = new_id("chatcmpl" if chat else "cmpl")
    try:
        gen = engine.submit(ids, _sampling_params(body, max_new),
                            lambda ev: loop.call_soon_threadsafe(events.put_nowait, ev),
                            starts_in_reasoning=opens_reasoning, request_id=request_id)
    except UnsupportedInMode as exc:
        raise APIError(400, str(exc), code="unsupported_in_batching_mode") from None
    except QueueFullError as exc:
        raise APIError(429, f"the engine is busy: {exc}; retry shortly", "rate_limit_error",
                       headers={"Retry-After": "1"}) from None
    except EngineNotReady as exc:
        raise APIError(503, f"no model is ready: {exc}", "service_unavailable") from None
    request.scope["state"]["logged_by_handler"] = True
    reply = Reply(request_id, engine.model_name, chat, request.url.path)
    if body.stream:
        return EventStream(stream_reply(reply, events, gen, body.include_usage_in_stream()))
    return await collect_reply(reply, events, gen, request)
