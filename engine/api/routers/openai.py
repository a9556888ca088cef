"""The OpenAI-compatible routes: models, chat completions, text completions."""

from __future__ import annotations

import asyncio
import functools
from typing import Optional

from fastapi import APIRouter, Request
from fastapi.responses import Response
from pydantic import BaseModel

from engine.api.deps import EngineDep
from engine.api import grounded
from engine.api.errors import documented
from engine.api.openapi import event_stream
from engine.api.logprobs import LogprobFormatter
from engine.api.streaming import EventStream, Reply, collect_reply, stream_choices
from engine.core import Engine
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
from engine.requests import Constraint
from engine.service import gateway
from engine.service.errors import ServiceError
from engine.structured import chat_constraint, completion_constraint
from engine.tool_calls import ToolFormat, ToolPlan, plan_tools

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
        raise gateway.unknown_model(engine, model_id)
    return card


@router.post("/chat/completions", response_model=ChatCompletion,
             responses={200: _reply_or_stream(ChatCompletionChunk),
                        **GENERATION_ERRORS})
async def chat_completions(body: ChatCompletionRequest, request: Request, engine: EngineDep) -> Response:
    gateway.check_model(engine, body.model)
    constraint = _constraint(chat_constraint, body.response_format, "response_format")
    plan = _tool_plan(engine, body)
    if plan is not None:
        ids, opens_reasoning = gateway.encode_chat(engine, plan.messages, plan.template_tools)
        return await _generate(engine, request, body, ids, opens_reasoning, chat=True,
                               constraint=plan.constraint or constraint, tools=plan.reader)
    ids, opens_reasoning, grounding = grounded.encode_chat(engine, request, body)
    return grounded.finish(grounding, await _generate(engine, request, body, ids, opens_reasoning, chat=True, constraint=constraint))


@router.post("/completions", response_model=Completion,
             responses={200: _reply_or_stream(CompletionChunk),
                        **GENERATION_ERRORS})
async def completions(body: CompletionRequest, request: Request, engine: EngineDep) -> Response:
    gateway.check_model(engine, body.model)
    constraint = _constraint(completion_constraint, body.guided_json, "guided_json")
    ids = gateway.encode_text(engine, body.prompt_text())
    prompt_logprobs = body.logprobs if body.echo else None
    return await _generate(engine, request, body, ids, False, chat=False, constraint=constraint,
                           prompt_logprobs=prompt_logprobs, echo=body.prompt_text() if body.echo else None)


def _tool_plan(engine: Engine, body: ChatCompletionRequest) -> Optional[ToolPlan]:
    """How the request's tools (and earlier calls and results) reach the prompt; None when it
    involves none."""
    if not _involves_tools(body):
        return None
    if getattr(body, "search", None) is not None:
        raise ServiceError(400, "search cannot be combined with tools or tool messages; send one", param="search")
    tools = [tool.model_dump(exclude_none=True) for tool in body.tools or []]
    return plan_tools(getattr(engine.loaded.tokenizer, "chat_template", None), body.template_messages(), tools,
                      body.forced_functions(), body.tools_wanted())


def _involves_tools(body: ChatCompletionRequest) -> bool:
    return body.tools_wanted() or any(m.tool_calls or m.role == "tool" for m in body.messages)


def _constraint(build, value, param: str) -> Optional[Constraint]:
    try:
        return build(value)
    except ValueError as exc:
        raise ServiceError(400, str(exc), param=param, code="invalid_schema") from None


def _model_card(engine: Engine) -> Optional[ModelCard]:
    loaded = engine.loaded  # one read: a model swapped meanwhile cannot mix two cards
    if loaded is None:
        return None
    return ModelCard(id=loaded.name, root=str(loaded.path), max_model_len=loaded.context_length)


async def _generate(engine: Engine, request: Request, body: SamplingFields, ids: list[int],
                    opens_reasoning: bool, chat: bool, constraint: Optional[Constraint] = None,
                    prompt_logprobs: Optional[int] = None, echo: Optional[str] = None,
                    tools: Optional[ToolFormat] = None) -> Response:
    """Submit to the engine, then stream the reply or collect it into one body. With ``n`` > 1
    the queue holds (choice index, event); with one choice, the events alone (the common case
    pays for no tuple per token)."""
    loop = asyncio.get_running_loop()
    events: asyncio.Queue = asyncio.Queue()
    request_id = new_id("chatcmpl" if chat else "cmpl")
    state = request.scope["state"]
    client = request.scope.get("client")
    if body.n == 1:
        def sink(index, ev): loop.call_soon_threadsafe(events.put_nowait, ev)
    else:
        def sink(index, ev): loop.call_soon_threadsafe(events.put_nowait, (index, ev))
    submit = functools.partial(gateway.submit_choices, engine, request.app.state.service, body, ids, opens_reasoning,
                               sink, request_id, "rest", state.get("principal"), client[0] if client else None,
                               constraint=constraint, prompt_logprobs=prompt_logprobs, n=body.n)
    # A new schema compiles on submit (up to ~0.5 s for a large one): off the event loop, so the
    # other clients' streams do not stall meanwhile.
    gens = submit() if constraint is None else await asyncio.to_thread(submit)
    state["logged_by_handler"] = True
    formatter = None
    if body.top_logprobs_wanted() is not None:
        formatter = LogprobFormatter(engine.loaded.tokenizer, body.return_tokens_as_token_ids)
    reply = Reply(request_id, engine.model_name, chat, request.url.path, key=state.get("key"),
                  logprobs=formatter, echo=echo, tools=tools,
                  single_call=not getattr(body, "parallel_tool_calls", True))
    if body.stream:
        return EventStream(stream_choices(reply, events, gens, body.include_usage_in_stream()))
    return await collect_reply(reply, events, gens, request)
