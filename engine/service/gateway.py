"""The one way a generation enters the engine from a protocol face (torch-free): REST and gRPC
check the model, encode the prompt and submit through these functions, so they refuse with the
same statuses and the same message text, and the circuit breaker sees every outcome."""

from __future__ import annotations

import dataclasses
import functools
from typing import Callable, Optional

from engine.core import Engine, PromptError
from engine.protocol import SamplingFields
from engine.requests import (
    Constraint,
    EngineNotReady,
    ErrorEvent,
    Event,
    FinishEvent,
    GenerationRequest,
    InvalidConstraint,
    QueueFullError,
    SamplingParams,
    UnsupportedInMode,
)
from engine.service.circuit import CircuitOpen
from engine.service.errors import ServiceError
from engine.service.keys import Principal


def health(engine: Engine, service) -> tuple[bool, str]:
    """``/health`` and gRPC Health alike: the model serves and the circuit is closed."""
    ok, reason = engine.health()
    if ok and service is not None:
        circuit = service.circuit.health()
        if circuit:
            return False, circuit
    return ok, reason


def unknown_model(engine: Engine, model_id: str) -> ServiceError:
    served = engine.model_name
    hint = f"this server serves {served!r}" if served else "no model is loaded"
    return ServiceError(404, f"the model {model_id!r} does not exist: {hint}", param="model", code="model_not_found")


def check_model(engine: Engine, model_id: str) -> None:
    """Raises:
        ServiceError: 503 when no model is ready, 404 when ``model_id`` is not the one served.
    """
    if not engine.ready:
        raise ServiceError(503, f"no model is ready: {engine.health()[1]}", "service_unavailable")
    if not engine.serves(model_id):
        raise unknown_model(engine, model_id)


def encode_chat(engine: Engine, messages: list[dict], tools: Optional[list[dict]] = None) -> tuple[list[int], bool]:
    try:
        return engine.encode_chat(messages, tools)
    except PromptError as exc:
        raise ServiceError(400, str(exc), param="messages") from None


def encode_text(engine: Engine, prompt: str) -> list[int]:
    try:
        return engine.encode_text(prompt)
    except PromptError as exc:
        raise ServiceError(400, str(exc), param="prompt") from None


def sampling_params(body: SamplingFields, max_new_tokens: int, model_defaults: Optional[dict] = None) -> SamplingParams:
    """``model_defaults``: the model's own sampling settings (its generation_config.json); a field
    the request leaves out takes the model's value, else the API's default (as vLLM and
    transformers do)."""
    given = body.model_fields_set
    model_defaults = model_defaults or {}

    def pick(key: str):
        return getattr(body, key) if key in given or key not in model_defaults else model_defaults[key]
    return SamplingParams(
        max_new_tokens=max_new_tokens,
        temperature=pick("temperature"),
        top_p=pick("top_p"),
        top_k=pick("top_k"),
        repetition_penalty=pick("repetition_penalty"),
        frequency_penalty=body.frequency_penalty,
        presence_penalty=body.presence_penalty,
        seed=body.seed,
        stop=tuple(body.stop_list()),
        ignore_eos=body.ignore_eos,
        logprobs=body.top_logprobs_wanted(),
        logit_bias=body.logit_bias_pairs(),
    )


def submit(engine: Engine, service, body: SamplingFields, ids: list[int], opens_reasoning: bool,
           sink: Callable[[Event], None], request_id: str, protocol: str,
           principal: Optional[Principal] = None, address: Optional[str] = None,
           constraint: Optional[Constraint] = None, prompt_logprobs: Optional[int] = None) -> GenerationRequest:
    """Queue one generation; its events reach ``sink`` on the generation thread.

    Raises:
        ServiceError: 400 (context, mode, schema), 429 (queue full), 503 (not ready, circuit open).
    """
    return submit_choices(engine, service, body, ids, opens_reasoning, lambda index, event: sink(event),
                          request_id, protocol, principal, address, constraint, prompt_logprobs, n=1)[0]


def submit_choices(engine: Engine, service, body: SamplingFields, ids: list[int], opens_reasoning: bool,
                   sink: Callable[[int, Event], None], request_id: str, protocol: str,
                   principal: Optional[Principal] = None, address: Optional[str] = None,
                   constraint: Optional[Constraint] = None, prompt_logprobs: Optional[int] = None,
                   n: int = 1) -> list[GenerationRequest]:
    """Queue ``n`` choices of one generation; ``sink(choice index, event)`` gets their events.
    Choice ``i`` samples with ``seed + i`` (each reproducible, none a copy of another). The
    circuit breaker counts the request once (its first choice); every choice's tokens are charged,
    the prompt's once.

    Raises:
        ServiceError: 400 (context, mode, schema), 429 (queue full), 503 (not ready, circuit open).
    """
    try:
        max_new = engine.plan_max_tokens(len(ids), body.requested_max_tokens())
    except PromptError as exc:
        raise ServiceError(400, str(exc), param="max_tokens", code="context_length_exceeded") from None
    defaults = getattr(engine.loaded, "sampling_defaults", None)
    params = sampling_params(body, max_new, defaults)
    _check_logit_bias(engine, params)
    try:
        ticket = service.circuit.admit() if service is not None else None
    except CircuitOpen as exc:
        raise ServiceError(503, str(exc), "service_unavailable", code="circuit_open", retry_after=exc.retry_after) from None

    def observed(index: int, event: Event) -> None:
        if isinstance(event, FinishEvent):
            if ticket is not None and index == 0:
                service.circuit.record(ticket, None if event.finish_reason == "cancelled" else False)
            if principal is not None:
                prompt = event.prompt_tokens if index == 0 else 0
                service.charge_tokens(principal, address, prompt + event.completion_tokens)
        elif isinstance(event, ErrorEvent) and ticket is not None and index == 0:
            # Generation failures (500) count; timeouts (504) say nothing of the engine's health.
            service.circuit.record(ticket, True if event.status_code >= 500 and event.status_code != 504 else None,
                                   event.message)
        sink(index, event)

    deliver = observed if service is not None else sink
    choices = [params if index == 0 or params.seed is None
               else dataclasses.replace(params, seed=(params.seed + index) % 2**63) for index in range(n)]
    sinks = [functools.partial(deliver, index) for index in range(n)]
    try:
        gens = engine.submit_choices(ids, choices, sinks, starts_in_reasoning=opens_reasoning,
                                     request_id=request_id, protocol=protocol, constraint=constraint,
                                     prompt_logprobs=prompt_logprobs)
    except UnsupportedInMode as exc:
        _release(service, ticket)
        raise ServiceError(400, str(exc), code="unsupported_in_batching_mode") from None
    except InvalidConstraint as exc:
        _release(service, ticket)
        raise ServiceError(400, str(exc), param="response_format", code="invalid_schema") from None
    except QueueFullError as exc:
        _release(service, ticket)
        raise ServiceError(429, f"the engine is busy: {exc}; retry shortly", "rate_limit_error",
                           retry_after=1) from None
    except EngineNotReady as exc:
        _release(service, ticket)
        raise ServiceError(503, f"no model is ready: {exc}", "service_unavailable") from None
    return gens


def _check_logit_bias(engine: Engine, params: SamplingParams) -> None:
    vocabulary = len(engine.loaded.tokenizer) if engine.loaded is not None else None
    for token, _ in params.logit_bias:
        if vocabulary is not None and token >= vocabulary:
            raise ServiceError(400, f"logit_bias names token {token}, but the model's vocabulary has "
                                    f"{vocabulary} tokens (ids 0-{vocabulary - 1})", param="logit_bias")


def _release(service, ticket) -> None:
    if ticket is not None:
        service.circuit.record(ticket, None)
