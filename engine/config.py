"""EngineConfig: every setting of the engine, validated, read from and written to TOML.

A file holding only ``[model] path = "…"`` is a complete configuration. Unknown keys are errors,
never silently ignored, and every refusal names the field, the value and what is allowed.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any, Literal, Optional

import tomli_w
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_serializer,
    field_validator,
    model_validator,
)

from engine.staging import atomic_write_text

DType = Literal["auto", "float32", "bfloat16", "float16"]
Quantization = Literal["none", "int8", "int4", "auto"]
_DEVICE_PATTERN = re.compile(r"^(auto|cpu|mps|cuda(:\d+)?)$")


class ConfigError(ValueError):
    """A configuration value was refused; the message names the field, the value and what is allowed."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class ModelConfig(_Section):
    path: Optional[str] = Field(None, description="model folder (config.json + safetensors + tokenizer)")
    served_model_name: Optional[str] = Field(None, description="id shown in /v1/models; default: folder name")
    dtype: DType = "auto"
    device: str = Field("auto", description="auto | cpu | cuda | cuda:N | mps")
    max_context: Optional[int] = Field(None, ge=16, description="cap on the model's context length")
    trust_remote_code: bool = False
    quantization: Quantization = Field(
        "none", description="weights held quantized: none | int8 | int4 | auto (the smallest loss that fits; "
                            "see engine.quantization)")

    @field_validator("device")
    @classmethod
    def _check_device(cls, value: str) -> str:
        if not _DEVICE_PATTERN.match(value):
            raise ValueError("expected auto, cpu, mps, cuda or cuda:N")
        return value


class LoadConfig(_Section):
    timeout_s: float = Field(1800.0, gt=0, description="give up a load that takes longer")
    chunk_size_mb: float = Field(64.0, gt=0, description="a progress event at least every this many MB")
    max_memory: Optional[dict[str, str]] = Field(
        None, description='per-device limits, e.g. {"cuda:0" = "20GiB", "cpu" = "64GiB"} (spreads layers)'
    )


class BatchingConfig(_Section):
    mode: Literal["continuous", "dynamic", "sequential"] = Field(
        "dynamic", description="continuous: transformers' paged manager; dynamic: the engine's batcher "
                               "(requests join at the next step); sequential: one at a time"
    )
    max_batch_size: int = Field(32, ge=1, le=1024, description="requests decoded together")
    max_wait_ms: float = Field(50.0, ge=0, le=10_000, description="dynamic: how long a batch may wait to fill")
    max_batch_tokens: Optional[int] = Field(
        None, ge=16, description="continuous: token budget per step (default: 512 on a CPU, 4096 on a GPU)")
    # At least 4: transformers' continuous batching refuses smaller pages (a 500 at run time before).
    page_size: Optional[int] = Field(None, ge=4, le=4096, description="continuous: tokens per KV page (default 32 CPU, 256 GPU)")
    num_blocks: Optional[int] = Field(None, ge=1, description="continuous: KV blocks (default: sized from kv_memory_share)")
    kv_memory_share: float = Field(0.1, gt=0, le=0.9, description="continuous: share of free memory for the paged KV cache")
    block_sharing: bool = Field(True, description="continuous: share KV blocks of common prefixes")
    cpu_offload_gb: float = Field(0.0, ge=0, description="continuous: CPU space for KV of preempted requests (GPU)")
    max_queue: int = Field(256, ge=1, description="requests waiting beyond this get 429")
    request_timeout_s: float = Field(600.0, gt=0, description="a request running longer ends with an error")


class CacheConfig(_Section):
    type: Literal["hierarchical", "none"] = Field("hierarchical", description="prefix KV cache: RAM, then disk")
    memory_mb: float = Field(1024.0, ge=0, description="RAM tier for prefix KV")
    disk_mb: float = Field(4096.0, ge=0, description="disk tier for prefix KV (0: no disk tier)")
    dir: Optional[str] = Field(None, description="disk tier folder (default: the user's cache folder)")


class RateLimit(_Section):
    """A token bucket: ``burst`` requests at once, refilled at ``requests_per_s``; optionally a
    second bucket of ``tokens_per_min`` prompt + completion tokens (0: no token limit)."""

    # At least one request per ~17 minutes: slower buckets would take longer than a day to say when to retry.
    requests_per_s: float = Field(..., ge=0.001, le=1_000_000, description="requests refilled per second")
    burst: int = Field(..., ge=1, le=1_000_000, description="requests allowed at once (the bucket's size)")
    tokens_per_min: int = Field(0, ge=0, le=10**12, description="prompt + completion tokens per minute (0: no token limit)")


ROLES = ("admin", "inference", "monitor")
SECRET_MASK = "********"


class KeyConfig(_Section):
    """One named API key: the key itself, the variable holding it, or its SHA-256."""

    name: str = Field(..., min_length=1, pattern=r"^[A-Za-z0-9_.-]+$", description="shown in logs and metrics")
    key: Optional[str] = Field(None, min_length=8, description="the key itself (prefer key_env or key_sha256)")
    key_env: Optional[str] = Field(None, min_length=1, description="environment variable holding the key")
    key_sha256: Optional[str] = Field(None, pattern=r"^[0-9a-fA-F]{64}$", description="hex SHA-256 of the key")
    role: Literal["admin", "inference", "monitor"] = Field(
        "inference", description="admin: every route; inference: /v1/*, /metrics, gRPC inference; "
                                 "monitor: /metrics, GET /v1/models, gRPC ListModels")
    rate_limit: Optional[RateLimit] = Field(None, description="this key's own limit (default: [server.rate_limit])")

    @model_validator(mode="after")
    def _one_secret(self) -> "KeyConfig":
        given = [name for name in ("key", "key_env", "key_sha256") if getattr(self, name) is not None]
        if len(given) != 1:
            raise ValueError(f"key {self.name!r}: give exactly one of key, key_env, key_sha256 (got "
                             f"{', '.join(given) or 'none'})")
        return self

    @field_serializer("key", "key_sha256", when_used="json-unless-none")
    def _mask(self, value: str, info) -> str:
        # Shown masked wherever the configuration goes out as JSON (GET /admin/config, logs);
        # only writing a TOML file (``to_toml``) asks for the real value.
        return value if (info.context or {}).get("reveal_secrets") else SECRET_MASK


class CircuitConfig(_Section):
    """When generation fails for ``failure_ratio`` of at least ``min_requests`` requests within
    ``window_s``, new requests are refused at once for ``cooldown_s``, then one probe is let through."""

    failure_ratio: float = Field(0.5, gt=0, le=1, description="share of failed requests that opens the circuit")
    min_requests: int = Field(10, ge=1, description="requests the window must hold before it may open")
    window_s: float = Field(30.0, gt=0, le=3600, description="rolling window of request outcomes")
    cooldown_s: float = Field(30.0, gt=0, le=3600, description="open this long before a probe is let through")


class ServerConfig(_Section):
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=0, le=65535)
    grpc_port: Optional[int] = Field(None, ge=0, le=65535,
                                     description="gRPC (deepseek.v1.Inference) on the same host; off unless set")
    api_key: Optional[str] = Field(None, description="required as a Bearer token on every route but /health")
    keys: list[KeyConfig] = Field(default_factory=list, description="named keys with roles ([[server.keys]])")
    rate_limit: Optional[RateLimit] = Field(None, description="default per-key (or per-address) limit; absent: none")
    circuit: CircuitConfig = Field(default_factory=CircuitConfig)
    metrics_public: bool = Field(False, description="serve /metrics without the API key")
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    parent_pid: Optional[int] = Field(None, description="exit when this process dies (set by the desktop app)")

    @field_validator("keys")
    @classmethod
    def _unique_names(cls, keys: list[KeyConfig]) -> list[KeyConfig]:
        names = [k.name for k in keys]
        doubled = sorted({n for n in names if names.count(n) > 1})
        if doubled:
            raise ValueError(f"key names must be unique: {', '.join(doubled)} appear more than once")
        return keys


class SearchConfig(_Section):
    """Local document search (``engine.search``): where the index lives and the embedding model."""

    dir: Optional[str] = Field(None, description="index folder (default: <engine data folder>/search)")
    embedding_model: str = Field("all-MiniLM-L6-v2", description="sentence-embedding model: a model folder, "
                                 "all-MiniLM-L6-v2 (fetched by fetch-demo) or a Hugging Face cache id; \"\": no semantic search")


# Fault injection (tests of the circuit breaker and of per-request isolation) is read from this
# environment variable only: a configuration file that tries to set it is refused.
FAULTS_ENV = "DEEPSEEK_ENGINE_FAULTS"


class EngineConfig(_Section):
    model: ModelConfig = Field(default_factory=ModelConfig)
    load: LoadConfig = Field(default_factory=LoadConfig)
    batching: BatchingConfig = Field(default_factory=BatchingConfig)
    cache: CacheConfig = Field(default_factory=CacheConfig)
    server: ServerConfig = Field(default_factory=ServerConfig)
    search: SearchConfig = Field(default_factory=SearchConfig)

    @model_validator(mode="before")
    @classmethod
    def _no_faults(cls, data: Any) -> Any:
        if isinstance(data, dict):
            sections = [data] + [v for v in data.values() if isinstance(v, dict)]
            if any(key in section for section in sections for key in ("faults", "fault_injection")):
                raise ValueError(f"fault injection cannot be set in a configuration: it is for tests, "
                                 f"through the {FAULTS_ENV} environment variable only")
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "EngineConfig":
        """Validate a plain dict (as read from TOML).

        Raises:
            ConfigError: listing every refused field.
        """
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            raise ConfigError(format_validation_error(exc)) from None

    @classmethod
    def from_toml(cls, path: str | Path) -> "EngineConfig":
        """Read a TOML file.

        Raises:
            ConfigError: the file is missing, not TOML, or holds a refused value.
        """
        path = Path(path)
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError(f"config file not found: {path}") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{path} is not valid TOML: {exc}") from None
        try:
            return cls.from_dict(data)
        except ConfigError as exc:
            raise ConfigError(f"{path}: {exc}") from None

    def to_toml(self) -> str:
        # TOML has no null: unset optional values are left out and read back as their default.
        return tomli_w.dumps(self.model_dump(mode="json", exclude_none=True, context={"reveal_secrets": True}))

    def write_toml(self, path: str | Path) -> None:
        """Write atomically: a crash mid-write never leaves a truncated config."""
        atomic_write_text(path, self.to_toml())

    def with_overrides(self, overrides: dict[str, Any]) -> "EngineConfig":
        """Return a copy with dotted keys (``"server.port"``) replaced; None values are skipped.

        Raises:
            ConfigError: an override names an unknown key or holds a refused value.
        """
        sections: dict[str, dict[str, Any]] = {}
        for dotted, value in overrides.items():
            if value is None:
                continue
            section, _, key = dotted.partition(".")
            if section not in type(self).model_fields:
                raise ConfigError(f"{dotted}: unknown section {section!r}")
            sections.setdefault(section, {})[key] = value
        return self.merged(sections)

    def merged(self, changes: dict[str, dict[str, Any]]) -> "EngineConfig":
        """Return a copy with the fields each section of ``changes`` names replaced, the others
        kept; everything is validated together, so a refusal changes nothing.

        Raises:
            ConfigError: an unknown section or key, or a refused value.
        """
        data = self.model_dump()
        for section, values in changes.items():
            if section not in data:
                raise ConfigError(f"{section}: unknown section")
            if not isinstance(values, dict):
                raise ConfigError(f"{section}: expected a table of settings")
            data[section].update(values)
        return EngineConfig.from_dict(data)


def format_validation_error(exc: ValidationError) -> str:
    """One line per refused field: ``batching.mode = 'fast': Input should be 'sequential'``."""
    lines = []
    for err in exc.errors():
        field = ".".join(str(part) for part in err["loc"])
        if not field:  # a refusal of the whole configuration
            lines.append(err["msg"].removeprefix("Value error, "))
        elif err["type"] == "extra_forbidden":
            lines.append(f"{field}: unknown key (not a setting of this section)")
        elif err["type"] == "missing":
            lines.append(f"{field}: required")
        else:
            msg = err["msg"].removeprefix("Value error, ")
            lines.append(f"{field} = {err.get('input')!r}: {msg}")
    return "; ".join(lines)
