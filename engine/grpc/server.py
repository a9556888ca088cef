"""The gRPC server beside REST: deepseek.v1.Inference, grpc.health.v1 and server reflection.

Requests are validated by the same ``engine.protocol`` models as REST's, submitted through
``engine.service.gateway`` and refused with ``ServiceError``s mapped to gRPC codes, so both faces
say the same. Each stream runs on a thread of the server's pool and reads its events from a
queue; a client that cancels cancels the generation, which frees its batch slot before the next
token.
"""

from __future__ import annotations

import logging
import queue
import threading
from concurrent import futures
from typing import Any, Iterator, Optional

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from pydantic import ValidationError

from engine.core import Engine
from engine.grpc import inference_pb2 as pb
from engine.grpc import inference_pb2_grpc as pb_grpc
from engine.protocol import ChatCompletionRequest, CompletionRequest, new_id
from engine.requests import ErrorEvent, FinishEvent, TextEvent
from engine.service import Service, gateway
from engine.service.errors import ServiceError, describe_validation_errors, retry_after_seconds
from engine.service.keys import Principal, bearer_token

log = logging.getLogger("engine.grpc")
access_log = logging.getLogger("engine.access")

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["Inference"].full_name  # deepseek.v1.Inference
SAMPLING_FIELDS = ("max_tokens", "temperature", "top_p", "seed", "top_k", "repetition_penalty",
                   "frequency_penalty", "presence_penalty")
HEALTH_POLL_S = 0.5


def _code(error: ServiceError) -> grpc.StatusCode:
    return getattr(grpc.StatusCode, error.grpc_code)


class InferenceServicer(pb_grpc.InferenceServicer):
    def __init__(self, engine: Engine, service: Service):
        self.engine, self.service = engine, service

    # ------------------------------------------------------------------ RPCs
    def Generate(self, request: pb.GenerateRequest, context) -> Iterator[pb.Chunk]:
        try:
            principal, address = self._caller(context, "Generate")
            body = self._validate(CompletionRequest, {"model": request.model, "prompt": request.prompt,
                                                      **self._sampling(request)})
            gateway.check_model(self.engine, body.model)
            ids = gateway.encode_text(self.engine, body.prompt_text())
            yield from self._stream(context, body, ids, False, principal, address, "Generate")
        except ServiceError as exc:
            self._abort(context, exc, "Generate")

    def Chat(self, request: pb.ChatRequest, context) -> Iterator[pb.Chunk]:
        try:
            principal, address = self._caller(context, "Chat")
            messages = [{"role": m.role, "content": m.content} for m in request.messages]
            body = self._validate(ChatCompletionRequest, {"model": request.model, "messages": messages,
                                                          **self._sampling(request)})
            gateway.check_model(self.engine, body.model)
            ids, opens_reasoning = gateway.encode_chat(self.engine, body.template_messages())
            yield from self._stream(context, body, ids, opens_reasoning, principal, address, "Chat")
        except ServiceError as exc:
            self._abort(context, exc, "Chat")

    def ListModels(self, request: pb.ListModelsRequest, context) -> pb.ListModelsResponse:
        try:
            self._caller(context, "ListModels")
        except ServiceError as exc:
            self._abort(context, exc, "ListModels")
        loaded = self.engine.loaded
        models = [pb.Model(id=loaded.name, root=str(loaded.path), max_model_len=loaded.context_length)] if loaded else []
        return pb.ListModelsResponse(models=models)

    # ------------------------------------------------------------------ the shared steps
    def _caller(self, context, rpc: str) -> tuple[Principal, Optional[str]]:
        """Key, role and rate limit, as REST checks them; the rate headers go out as metadata."""
        metadata = dict(context.invocation_metadata())
        token = bearer_token(metadata.get("authorization", "").encode())
        principal = self.service.identify(token)
        self.service.authorize_rpc(principal, rpc)
        address = _peer_address(context.peer())
        decision = self.service.admit_rate(principal, address)
        if not decision.allowed:
            raise ServiceError(429, decision.reason, "rate_limit_error", code="rate_limit_exceeded",
                               retry_after=decision.retry_after, headers=decision.headers)
        if decision.headers:
            context.send_initial_metadata(tuple(decision.headers.items()))
        return principal, address

    @staticmethod
    def _sampling(request) -> dict[str, Any]:
        fields = {name: getattr(request, name) for name in SAMPLING_FIELDS if request.HasField(name)}
        if request.stop:
            fields["stop"] = list(request.stop)
        if request.ignore_eos:
            fields["ignore_eos"] = True
        return fields

    @staticmethod
    def _validate(model, data: dict):
        try:
            return model.model_validate(data)
        except ValidationError as exc:
            message, param = describe_validation_errors(exc.errors())
            raise ServiceError(400, message, param=param) from None

    def _stream(self, context, body, ids: list[int], opens_reasoning: bool, principal: Principal,
                address: Optional[str], rpc: str) -> Iterator[pb.Chunk]:
        events: "queue.Queue" = queue.Queue()
        request_id = new_id("grpc")
        gen = gateway.submit(self.engine, self.service, body, ids, opens_reasoning, events.put, request_id,
                             "grpc", principal, address)
        context.add_callback(gen.cancel)  # the client cancelled or went away: free the slot
        outcome, error = "disconnected", None
        try:
            while True:
                event = events.get()
                if isinstance(event, TextEvent):
                    yield pb.Chunk(text=event.content, reasoning_text=event.reasoning, token_ids=event.token_ids)
                elif isinstance(event, FinishEvent):
                    outcome = event.finish_reason
                    yield pb.Chunk(finish_reason=event.finish_reason, token_ids=event.token_ids,
                                   usage=pb.Usage(prompt_tokens=event.prompt_tokens,
                                                  completion_tokens=event.completion_tokens))
                    return
                elif isinstance(event, ErrorEvent):
                    error = ServiceError(event.status_code, event.message, event.error_type)
                    break
        finally:
            gen.cancel()
            if error is None:  # a failure gets its one line from _abort, with its status
                access_log.info("gRPC %s %s", rpc, outcome, extra={
                    "event": "request", "protocol": "grpc", "method": rpc, "request_id": request_id,
                    "outcome": outcome, "key": principal.name})
        # Only a failure leaves the loop by its end.
        self._abort(context, error, rpc, request_id=request_id, outcome="error", key=principal.name)

    def _abort(self, context, error: ServiceError, rpc: str, **fields: Any) -> None:
        # The retry delay (and, over a rate limit, the x-ratelimit-* values) as trailing metadata.
        trailing = {name.lower(): value for name, value in error.headers.items()
                    if name.lower().startswith("x-ratelimit-")}
        if error.retry_after is not None:
            trailing["retry-after"] = str(retry_after_seconds(error.retry_after))
        if trailing:
            context.set_trailing_metadata(tuple(trailing.items()))
        access_log.info("gRPC %s %s", rpc, error.grpc_code, extra={
            "event": "request", "protocol": "grpc", "method": rpc, "status": error.grpc_code, **fields})
        context.abort(_code(error), error.message)


def _peer_address(peer: str) -> Optional[str]:
    """``ipv4:127.0.0.1:5000`` → ``127.0.0.1``; ``ipv6:[::1]:5000`` → ``::1``."""
    kind, _, rest = peer.partition(":")
    if kind == "ipv6":
        return rest.rpartition(":")[0].strip("[]")
    if kind == "ipv4":
        return rest.rpartition(":")[0]
    return rest or None


class EngineHealth(health.HealthServicer):
    """grpc.health.v1 for "" and deepseek.v1.Inference: SERVING exactly when ``/health`` answers
    200. ``Check`` reads it live; a thread keeps ``Watch`` streams up to date."""

    def __init__(self, engine: Engine, service: Service):
        super().__init__()
        self.engine, self.service = engine, service
        self._status: Optional[int] = None
        self._stop = threading.Event()
        self.refresh()
        threading.Thread(target=self._watch, name="grpc-health", daemon=True).start()

    def refresh(self) -> None:
        ok, _ = gateway.health(self.engine, self.service)
        status = health_pb2.HealthCheckResponse.SERVING if ok else health_pb2.HealthCheckResponse.NOT_SERVING
        if status != self._status:
            self._status = status
            for name in ("", SERVICE_NAME):
                self.set(name, status)

    def Check(self, request, context):
        self.refresh()
        return super().Check(request, context)

    def _watch(self) -> None:
        while not self._stop.wait(HEALTH_POLL_S):
            self.refresh()

    def stop(self) -> None:
        self._stop.set()


class GrpcServer:
    """The server, started on ``host:port`` (port 0: a free one; ``port`` says which)."""

    def __init__(self, engine: Engine, service: Service, host: str, port: int, max_workers: int = 64):
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="grpc"),
                                  options=[("grpc.so_reuseport", 0)])
        pb_grpc.add_InferenceServicer_to_server(InferenceServicer(engine, service), self.server)
        self.health = EngineHealth(engine, service)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        reflection.enable_server_reflection(
            (SERVICE_NAME, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name, reflection.SERVICE_NAME),
            self.server)
        address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        self.port = self.server.add_insecure_port(address)
        if not self.port:
            raise OSError(f"cannot listen on {address} for gRPC")
        self.host = host

    def start(self) -> "GrpcServer":
        self.server.start()
        return self

    def stop(self, grace: float = 2.0) -> None:
        self.health.stop()
        self.server.stop(grace).wait(grace + 1)
