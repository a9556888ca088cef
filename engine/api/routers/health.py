"""Liveness for supervisors and Prometheus metrics."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response

from engine.api.deps import EngineDep
from engine.protocol import Health
from engine.service import gateway
from engine.states import ModelState

router = APIRouter(tags=["health"])

PROMETHEUS_TEXT = "text/plain; version=0.0.4; charset=utf-8"


@router.get("/health", response_model=Health, responses={
    200: {"description": "A model is loaded, its generation loop runs and the circuit breaker is closed"},
    503: {"model": Health, "description": "No model serves, or the circuit is open: the reason says why"}})
async def health(request: Request, engine: EngineDep) -> JSONResponse:
    ok, reason = gateway.health(engine, request.app.state.service)
    body = Health(status="ok" if ok else "unavailable", reason=reason, state=ModelState(engine.state))
    return JSONResponse(body.model_dump(mode="json"), status_code=200 if ok else 503)


@router.get("/metrics", response_class=PlainTextResponse,
            responses={200: {"description": "Prometheus text exposition format 0.0.4"}})
async def metrics(engine: EngineDep) -> Response:
    return Response(engine.metrics.render(), media_type=PROMETHEUS_TEXT)
