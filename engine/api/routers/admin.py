"""Admin routes: load, cancel and unload a model, run-time settings, status and the event stream."""

from __future__ import annotations

import asyncio
from pathlib import Path

from fastapi import APIRouter, Request

from engine.api.deps import EngineDep
from engine.api.errors import APIError, documented
from engine.api.openapi import event_stream, json_body
from engine.api.streaming import EventStream, engine_events
from engine.config import ConfigError, LoadConfig, ModelConfig
from engine.core import LoadInProgress, ModelProblem
from engine.protocol import (
    AdminStatus,
    ConfigChanges,
    EngineEvent,
    LoadAccepted,
    LoadCancelled,
    LoadRequest,
    PublicConfig,
    Unloaded,
)
from engine.states import ModelState

router = APIRouter(prefix="/admin", tags=["admin"])

CANCEL_WAIT_S = 60


@router.get("/status", response_model=AdminStatus)
async def status(request: Request, engine: EngineDep) -> AdminStatus:
    limit = getattr(engine.scheduler, "batch_limit", None)
    return AdminStatus.model_validate({**engine.describe(), "circuit": request.app.state.service.circuit.describe(),
                                       "batch_limit": limit.describe() if limit is not None else None})


@router.get("/config", response_model=PublicConfig)
async def get_config(engine: EngineDep) -> PublicConfig:
    return PublicConfig.model_validate(engine.public_config())


# The body is read as it comes, not parsed into ConfigChanges: a section that needs a reload
# or a restart is refused with a message saying so, not as an unknown field.
@router.put("/config", response_model=PublicConfig, responses=documented(400), openapi_extra=json_body(ConfigChanges))
async def put_config(request: Request, engine: EngineDep) -> PublicConfig:
    try:
        changes = await request.json()
    except ValueError:
        raise APIError(400, "the request body is not valid JSON") from None
    if not isinstance(changes, dict):
        raise APIError(400, 'send a JSON object of sections, e.g. {"batching": {"max_batch_size": 8}}')
    try:
        request.app.state.service.update_config(engine, changes)
    except ConfigError as exc:
        raise APIError(400, str(exc), code="invalid_config") from None
    return PublicConfig.model_validate(engine.public_config())


@router.post("/load", status_code=202, response_model=LoadAccepted, responses=documented(400, 404, 409))
async def load(body: LoadRequest, engine: EngineDep) -> LoadAccepted:
    model = ModelConfig(path=body.path, dtype=body.dtype, device=body.device,
                        served_model_name=body.served_model_name, max_context=body.max_context,
                        quantization=body.quantization)
    settings = LoadConfig(chunk_size_mb=body.chunk_size_mb, timeout_s=body.load_timeout_s,
                          max_memory=body.max_memory)
    try:
        engine.start_load(model, settings)
    except ModelProblem as exc:
        status = 404 if not Path(body.path).expanduser().exists() else 400
        raise APIError(status, str(exc), param="path", code="model_not_loadable") from None
    except LoadInProgress as exc:
        raise APIError(409, str(exc), code="load_in_progress") from None
    return LoadAccepted(path=body.path)


@router.post("/cancel-load", response_model=LoadCancelled, responses=documented(409))
async def cancel_load(engine: EngineDep) -> LoadCancelled:
    if not engine.cancel_load():
        raise APIError(409, "no load is running", code="no_load")
    outcome = await asyncio.get_running_loop().run_in_executor(None, engine.wait_load, CANCEL_WAIT_S)
    if outcome is None or not outcome.cancelled:  # past its last tensor: the load completed all the same
        raise APIError(409, f"the load finished before the cancel took effect; {engine.model_name} is loaded"
                       " (POST /admin/unload to remove it)", code="load_finished")
    return LoadCancelled(state=ModelState(engine.state), model=engine.model_name)


@router.post("/unload", response_model=Unloaded, responses=documented(409))
async def unload(engine: EngineDep) -> Unloaded:
    if engine.loading:
        raise APIError(409, "a model is loading; cancel it first (POST /admin/cancel-load)", code="load_in_progress")
    await asyncio.get_running_loop().run_in_executor(None, engine.unload)
    return Unloaded(state=ModelState(engine.state))


@router.get("/events", response_class=EventStream,
            responses={200: event_stream("The current state at once, then every state change, load progress"
                                         " and error as it happens, until the server stops", EngineEvent)})
async def events(engine: EngineDep) -> EventStream:
    return EventStream(engine_events(engine.events))
