"""FastAPI app: OpenAI-compatible routes, health and metrics, each mapped onto an Engine method.

Everything a client can send ends in a 2xx or an OpenAI-shaped 4xx; a 500 means a bug here.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import time
from typing import Any, AsyncIterator, Optional

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from pathlib import Path

from engine.config import ConfigError, LoadConfig, ModelConfig
from engine.core import Engine, LoadInProgress, ModelProblem, PromptError
from engine.protocol import (
    ChatCompletionRequest,
    CompletionRequest,
    LoadRequest,
    ModelCard,
    ModelList,
    SamplingFields,
    new_id,
    now,
)
from engine.requests import UnsupportedInMode
from engine.requests import (
    EngineNotReady,
    ErrorEvent,
    FinishEvent,
    QueueFullError,
    SamplingParams,
    TextEvent,
)

log = logging.getLogger("engine.server")
access_log = logging.getLogger("engine.access")

OPEN_PATHS = {"/health"}
DISCONNECT_POLL_S = 0.2


class APIError(Exception):
    def __init__(self, status: int, message: str, error_type: str = "invalid_request_error",
                 param: Optional[str] = None, code: Optional[str] = None,
                 headers: Optional[dict[str, str]] = None):
        super().__init__(message)
        self.status, self.message, self.error_type = status, message, error_type
        self.param, self.code, self.headers = param, code, headers


def error_body(message: str, error_type: str, param: Optional[str] = None, code: Any = None) -> dict:
    return {"error": {"message": message, "type": error_type, "param": param, "code": code}}


def error_response(status: int, message: str, error_type: str = "invalid_request_error",
                   param: Optional[str] = None, code: Any = None,
                   headers: Optional[dict[str, str]] = None) -> JSONResponse:
    return JSONResponse(error_body(message, error_type, param, code), status_code=status, headers=headers)


# ---------------------------------------------------------------------------- ASGI middleware


class AuthAndAccessLog:
    """Checks the API key on every route but the open ones, and writes one JSON log line per
    request (generation routes write their own richer line when the stream ends)."""

    def __init__(self, app, api_key: Optional[str], metrics_public: bool):
        self.app = app
        self.key = api_key.encode() if api_key else None
        self.open_paths = OPEN_PATHS | ({"/metrics"} if metrics_public else set())

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started = time.monotonic()
        status_holder = {"status": 0}
        scope.setdefault("state", {})

        async def send_wrapper(message):
            if message["type"] == "http.response.start":
                status_holder["status"] = message["status"]
            await send(message)

        if scope["method"] == "POST":
            scope = _assume_json_body(scope)
        if self.key is not None and scope["path"] not in self.open_paths and not self._authorized(scope):
            response = error_response(
                401, "Incorrect or missing API key: send it as 'Authorization: Bearer <key>'.",
                code="invalid_api_key",
            )
            await response(scope, receive, send_wrapper)
        else:
            await self.app(scope, receive, send_wrapper)
        if not scope["state"].get("logged_by_handler"):
            access_log.info("%s %s %s", scope["method"], scope["path"], status_holder["status"], extra={
                "event": "request", "method": scope["method"], "path": scope["path"],
                "status": status_holder["status"], "duration_ms": round((time.monotonic() - started) * 1000, 1),
            })

    def _authorized(self, scope) -> bool:
        for name, value in scope["headers"]:
            if name == b"authorization":
                scheme, _, token = value.partition(b" ")
                return scheme.lower() == b"bearer" and hmac.compare_digest(token.strip(), self.key)
        return False


def _assume_json_body(scope):
    """Treat a POST without a JSON content type as JSON: ``curl -d`` sends form encoding by
    default, and every body this API takes is JSON."""
    headers = [(k, v) for k, v in scope["headers"] if k != b"content-type"]
    content_type = dict(scope["headers"]).get(b"content-type", b"")
    if content_type.startswith(b"application/json"):
        return scope
    return {**scope, "headers": headers + [(b"content-type", b"application/json")]}


# ---------------------------------------------------------------------------- app


def create_app(engine: Engine) -> FastAPI:
    server_cfg = engine.config.server
    app = FastAPI(title="DeepSeek Desktop engine", version="0.1.0", docs_url=None, redoc_url=None)
    app.state.engine = engine
    app.add_middleware(AuthAndAccessLog, api_key=server_cfg.api_key, metrics_public=server_cfg.metrics_public)
    _install_error_handlers(app)

    @app.get("/health")
    async def health():
        ok, reason = engine.health()
        body = {"status": "ok" if ok else "unavailable", "reason": reason, "state": engine.state}
        return JSONResponse(body, status_code=200 if ok else 503)

    @app.get("/metrics")
    async def metrics():
        return Response(engine.metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8")

    def model_card() -> Optional[ModelCard]:
        loaded = engine.loaded  # one read: a model swapped meanwhile cannot mix two cards
        if loaded is None:
            return None
        return ModelCard(id=loaded.name, root=str(loaded.path), max_model_len=loaded.context_length)

    @app.get("/v1/models")
    async def list_models():
        card = model_card()
        return ModelList(data=[card] if card else []).model_dump()

    @app.get("/v1/models/{model_id:path}")
    async def get_model(model_id: str):
        card = model_card()
        if card is None or not engine.serves(model_id):
            raise _unknown_model(engine, model_id)
        return card.model_dump()

    @app.get("/admin/status")
    async def status():
        return engine.describe()

    @app.get("/admin/config")
    async def get_config():
        return engine.public_config()

    @app.put("/admin/config")
    async def put_config(request: Request):
        try:
            changes = await request.json()
        except ValueError:
            raise APIError(400, "the request body is not valid JSON") from None
        if not isinstance(changes, dict):
            raise APIError(400, 'send a JSON object of sections, e.g. {"batching": {"max_batch_size": 8}}')
        try:
            engine.update_config(changes)
        except ConfigError as exc:
            raise APIError(400, str(exc), code="invalid_config") from None
        return engine.public_config()

    @app.post("/admin/load", status_code=202)
    async def admin_load(body: LoadRequest):
        model = ModelConfig(path=body.path, dtype=body.dtype, device=body.device,
                            served_model_name=body.served_model_name, max_context=body.max_context)
        load = LoadConfig(chunk_size_mb=body.chunk_size_mb, timeout_s=body.load_timeout_s,
                          max_memory=body.max_memory)
        try:
            engine.start_load(model, load)
        except ModelProblem as exc:
            status = 404 if not Path(body.path).expanduser().exists() else 400
            raise APIError(status, str(exc), param="path", code="model_not_loadable") from None
        except LoadInProgress as exc:
            raise APIError(409, str(exc), code="load_in_progress") from None
        return {"state": "loading", "path": body.path, "events": "/admin/events"}

    @app.post("/admin/cancel-load")
    async def admin_cancel_load():
        if not engine.cancel_load():
            raise APIError(409, "no load is running", code="no_load")
        await asyncio.get_running_loop().run_in_executor(None, engine.wait_load, 60)
        if not engine.last_load_cancelled:  # past its last tensor: the load completed all the same
            raise APIError(409, f"the load finished before the cancel took effect; {engine.model_name} is loaded"
                           " (POST /admin/unload to remove it)", code="load_finished")
        return {"cancelled": True, "state": engine.state, "model": engine.model_name}

    @app.post("/admin/unload")
    async def admin_unload():
        if engine.loading:
            raise APIError(409, "a model is loading; cancel it first (POST /admin/cancel-load)", code="load_in_progress")
        await asyncio.get_running_loop().run_in_executor(None, engine.unload)
        return {"state": engine.state}

    @app.get("/admin/events")
    async def admin_events(request: Request):
        return StreamingResponse(_event_stream(engine), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

    @app.post("/v1/chat/completions")
    async def chat_completions(body: ChatCompletionRequest, request: Request):
        _check_model(engine, body.model)
        try:
            ids, opens_reasoning = engine.encode_chat(body.template_messages())
        except PromptError as exc:
            raise APIError(400, str(exc), param="messages") from None
        return await _serve(engine, request, body, ids, opens_reasoning, chat=True)

    @app.post("/v1/completions")
    async def completions(body: CompletionRequest, request: Request):
        _check_model(engine, body.model)
        try:
            ids = engine.encode_text(body.prompt_text())
        except PromptError as exc:
            raise APIError(400, str(exc), param="prompt") from None
        return await _serve(engine, request, body, ids, False, chat=False)

    return app


async def _event_stream(engine: Engine) -> AsyncIterator[str]:
    queue = engine.events.subscribe()
    try:
        while True:
            try:
                event = await asyncio.wait_for(queue.get(), timeout=15)
            except asyncio.TimeoutError:
                yield ": keep-alive\n\n"  # lets proxies and clients see the stream is alive
                continue
            if event is None:  # the server is shutting down
                return
            # No "event:" line: every event reaches EventSource's onmessage; "type" tells them apart.
            yield f"data: {json.dumps(event)}\n\n"
    finally:
        engine.events.unsubscribe(queue)


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(APIError)
    async def _api_error(request: Request, exc: APIError):
        return error_response(exc.status, exc.message, exc.error_type, exc.param, exc.code, exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError):
        errors = exc.errors()
        first = errors[0] if errors else {}
        if first.get("type") == "json_invalid":
            return error_response(400, f"the request body is not valid JSON: {first.get('msg')}")
        parts, param = [], None
        for err in errors:
            loc = [str(p) for p in err.get("loc", ()) if p != "body"]
            field = ".".join(loc) or "body"
            param = param or field
            msg = err.get("msg", "").removeprefix("Value error, ")
            shown = "" if err.get("type") == "missing" else f" (got {err.get('input')!r:.80})"
            parts.append(f"{field}: {msg}{shown}")
        return error_response(400, "invalid request: " + "; ".join(parts), param=param)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException):
        message = {404: f"no route {request.method} {request.url.path}",
                   405: f"method {request.method} is not allowed on {request.url.path}"}.get(exc.status_code, str(exc.detail))
        return error_response(exc.status_code, message, "invalid_request_error" if exc.status_code < 500 else "server_error")

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception):
        log.exception("unhandled error on %s", request.url.path)
        return error_response(500, f"internal error: {type(exc).__name__}: {exc}", "server_error")


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


async def _serve(engine: Engine, request: Request, body: SamplingFields, ids: list[int],
                 opens_reasoning: bool, chat: bool):
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
    reply = _Reply(request_id, engine.model_name, chat, request.url.path)
    if body.stream:
        return StreamingResponse(_stream(reply, events, gen, body.include_usage_in_stream()),
                                 media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
    return await _collect(reply, events, gen, request)


class _Reply:
    """Builds OpenAI response bodies for one request, and logs it once when it ends."""

    def __init__(self, request_id: str, model: str, chat: bool, path: str):
        self.id, self.model, self.chat, self.path = request_id, model, chat, path
        self.created = now()
        self.object = "chat.completion" if chat else "text_completion"
        self.started = time.monotonic()

    def _choice_delta(self, event: TextEvent) -> dict:
        if not self.chat:
            return {"index": 0, "text": event.content, "logprobs": None, "finish_reason": None}
        delta: dict[str, Any] = {}
        if event.reasoning:
            delta["reasoning_content"] = event.reasoning
        if event.content:
            delta["content"] = event.content
        return {"index": 0, "delta": delta, "logprobs": None, "finish_reason": None}

    def chunk(self, choices: list[dict], **extra: Any) -> str:
        obj = self.object + (".chunk" if self.chat else "")
        payload = {"id": self.id, "object": obj, "created": self.created, "model": self.model,
                   "choices": choices, **extra}
        return f"data: {json.dumps(payload, ensure_ascii=False)}\n\n"

    def first_chunk(self) -> str:
        return self.chunk([{"index": 0, "delta": {"role": "assistant", "content": ""},
                            "logprobs": None, "finish_reason": None}])

    def text_chunk(self, event: TextEvent) -> str:
        return self.chunk([self._choice_delta(event)])

    def finish_chunk(self, reason: str) -> str:
        if self.chat:
            return self.chunk([{"index": 0, "delta": {}, "logprobs": None, "finish_reason": reason}])
        return self.chunk([{"index": 0, "text": "", "logprobs": None, "finish_reason": reason}])

    def full(self, content: str, reasoning: str, finish: FinishEvent) -> dict:
        if self.chat:
            message: dict[str, Any] = {"role": "assistant", "content": content}
            if reasoning:
                message["reasoning_content"] = reasoning
            choice = {"index": 0, "message": message, "logprobs": None, "finish_reason": finish.finish_reason}
        else:
            choice = {"index": 0, "text": content, "logprobs": None, "finish_reason": finish.finish_reason}
        return {"id": self.id, "object": self.object, "created": self.created, "model": self.model,
                "choices": [choice], "usage": usage(finish)}

    def log(self, status: int, outcome: str, finish: Optional[FinishEvent] = None) -> None:
        fields: dict[str, Any] = {"event": "request", "method": "POST", "path": self.path, "status": status,
                                  "request_id": self.id, "model": self.model, "outcome": outcome,
                                  "duration_ms": round((time.monotonic() - self.started) * 1000, 1)}
        if finish is not None:
            fields.update(prompt_tokens=finish.prompt_tokens, completion_tokens=finish.completion_tokens,
                          ttft_ms=None if finish.time_to_first_token_s is None
                          else round(finish.time_to_first_token_s * 1000, 1))
        access_log.info("POST %s %s %s", self.path, status, outcome, extra=fields)


def usage(finish: FinishEvent) -> dict:
    return {"prompt_tokens": finish.prompt_tokens, "completion_tokens": finish.completion_tokens,
            "total_tokens": finish.prompt_tokens + finish.completion_tokens}


async def _stream(reply: _Reply, events: asyncio.Queue, gen, include_usage: bool) -> AsyncIterator[str]:
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
                    yield reply.chunk([], usage=usage(event))
                break
            elif isinstance(event, ErrorEvent):
                outcome = "error"
                yield f"data: {json.dumps(error_body(event.message, event.error_type, code=event.status_code))}\n\n"
                break
        yield "data: [DONE]\n\n"
    finally:
        # Reached on normal end and when the client goes away (the response task is cancelled).
        gen.cancel()
        reply.log(200, outcome, finish)


async def _collect(reply: _Reply, events: asyncio.Queue, gen, request: Request):
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
                return reply.full("".join(content), "".join(reasoning), event)
            elif isinstance(event, ErrorEvent):
                reply.log(event.status_code, "error")
                return error_response(event.status_code, event.message, event.error_type)
    finally:
        gen.cancel()
