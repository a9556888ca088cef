"""The admin and health API: load/unload, configuration in force and run-time changes, status, events.

Request bodies here refuse unknown fields (a typo would silently load or configure wrongly);
responses build on the same ``ResponseModel`` as the OpenAI ones.
"""

from __future__ import annotations

from typing import Any, Literal, Optional

from pydantic import BaseModel, ConfigDict, Field, create_model

from engine.config import BatchingConfig, CacheConfig, CircuitConfig, LoadConfig, ModelConfig, RateLimit, ServerConfig
from engine.protocol.response_base import ResponseModel, never_null
from engine.states import ModelState

class LoadRequest(BaseModel):
    """``POST /admin/load``. Unknown fields are refused: a typo here would silently load wrongly."""

    model_config = ConfigDict(extra="forbid")

    path: str = Field(..., min_length=1, description="model folder or .gguf file")
    dtype: Literal["auto", "bfloat16", "float16", "float32"] = "auto"
    device: str = Field("auto", pattern=r"^(auto|cpu|mps|cuda(:\d+)?)$")
    max_memory: Optional[dict[str, str]] = Field(None, description='e.g. {"cuda:0": "20GiB", "cpu": "64GiB"}')
    chunk_size_mb: float = Field(64.0, gt=0)
    load_timeout_s: float = Field(1800.0, gt=0)
    served_model_name: Optional[str] = None
    max_context: Optional[int] = Field(None, ge=16)
    quantization: Literal["none", "int8", "int4", "auto"] = Field(
        "none", description="hold the weights quantized (int8/int4 weight-only); auto picks the smallest loss that fits")


class Health(ResponseModel):
    """``GET /health``: 200 when a model serves, 503 with the reason otherwise."""

    status: Literal["ok", "unavailable"]
    reason: str
    state: ModelState


class PublicKey(ResponseModel):
    """A named key as the API shows it: never the key (nor its hash)."""

    name: str
    role: Literal["admin", "inference", "monitor"]
    key_env: Optional[str] = Field(None, description="the environment variable it was read from, if any")
    rate_limit: Optional[RateLimit] = None


def _public_server_fields() -> dict[str, Any]:
    fields: dict[str, Any] = {name: (field.annotation, field) for name, field in ServerConfig.model_fields.items()
                              if name not in ("api_key", "keys")}
    fields["keys"] = (list[PublicKey], Field(default_factory=list))
    return fields


# The server section as the API shows it: no key is ever sent back.
PublicServerConfig = create_model("PublicServerConfig", __base__=ResponseModel, **_public_server_fields())


class PublicConfig(ResponseModel):
    """The configuration in force (``GET /admin/config``), without the API key."""

    model: ModelConfig
    load: LoadConfig
    batching: BatchingConfig
    cache: CacheConfig
    server: PublicServerConfig  # type: ignore[valid-type]


class KeyRateLimit(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(..., description="a key of [[server.keys]]")
    rate_limit: Optional[RateLimit] = Field(..., description="its own limit; null: the default one")


class ServerChanges(BaseModel):
    """What of ``[server]`` changes at run time: the rate limits and the circuit breaker."""

    model_config = ConfigDict(extra="forbid")

    rate_limit: Optional[RateLimit] = Field(None, description="the default limit; null: none")
    keys: Optional[list[KeyRateLimit]] = Field(None, json_schema_extra=never_null)
    circuit: Optional[CircuitConfig] = Field(None, json_schema_extra=never_null)


class ConfigChanges(BaseModel):
    """``PUT /admin/config``: settings applied without reloading weights; any subset of the sections.

    Documents the body only: the route reads it as it comes, so that a section that needs a
    reload or a restart (model, load, server) is refused with a message saying so.
    """

    model_config = ConfigDict(extra="forbid")

    batching: Optional[BatchingConfig] = Field(None, json_schema_extra=never_null)
    cache: Optional[CacheConfig] = Field(None, json_schema_extra=never_null)
    server: Optional[ServerChanges] = Field(None, json_schema_extra=never_null)


class CircuitStatus(ResponseModel):
    """The circuit breaker over generation failures (``[server.circuit]``)."""

    state: Literal["closed", "open", "half_open"]
    reason: Optional[str]
    recent_requests: int = Field(description="outcomes in the rolling window (while closed)")
    recent_failures: int
    failure_ratio: float
    min_requests: int
    window_s: float
    cooldown_s: float


class BatchLimitStatus(ResponseModel):
    """Requests decoded together: lowered for a while after the device ran out of memory."""

    configured: int
    current: int
    lowered_for_s: Optional[float] = Field(description="seconds until the configured limit is back; null: not lowered")
    reason: Optional[str]


class AdminStatus(ResponseModel):
    """``GET /admin/status``."""

    state: ModelState
    error: Optional[str]
    process_rss_bytes: int
    batching_mode: str
    batching_warning: Optional[str]
    config: PublicConfig
    model: Optional[str]
    path: Optional[str]
    device: Optional[str]
    dtype: Optional[str]
    context_length: Optional[int]
    memory_bytes: Optional[int]
    quantization: Optional[str] = Field(None, description='how the weights are held: "none", "int8 (torchao)", '
                                                          '"pre-quantized gptq 4-bit (group 128)" …; null: no model')
    circuit: CircuitStatus
    batch_limit: Optional[BatchLimitStatus] = Field(description="null: no model, or a scheduler without one")


class LoadAccepted(ResponseModel):
    """``POST /admin/load`` (202): the load runs in the background; follow it on ``events``."""

    state: Literal[ModelState.LOADING] = ModelState.LOADING
    path: str
    events: str = "/admin/events"


class LoadCancelled(ResponseModel):
    cancelled: Literal[True] = True
    state: ModelState
    model: Optional[str]


class Unloaded(ResponseModel):
    state: ModelState


class EngineEvent(ResponseModel):
    """One ``data:`` event of ``GET /admin/events``: a state change, load progress or an error,
    with fields that depend on the type (a load's bytes and ETA, the model's device…)."""

    model_config = ConfigDict(extra="allow")

    type: Literal["state", "progress", "error", "circuit"]
    ts: float
