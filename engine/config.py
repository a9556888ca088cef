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
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

DType = Literal["auto", "float32", "bfloat16", "float16"]
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


class ServerConfig(_Section):
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=0, le=65535)
    api_key: Optional[str] = Field(None, description="required as a Bearer token on every route but /health")
    metrics_public: bool = Field(False, description="serve /metrics without the API key")
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    parent_pid: Optional[int] = Field(None, description="exit when this process dies (set by the desktop app)")


class EngineConfig(_Section):
    model: ModelConfig = Field(default_factory=ModelConfig)
    load: LoadConfig = Field(default_factory=LoadConfig)
    batching: BatchingConfig = Field(default_factory=BatchingConfig)
    cache: CacheConfig = Field(default_factory=CacheConfig)
    server: ServerConfig = Field(default_factory=ServerConfig)

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
        return tomli_w.dumps(self.model_dump(mode="json", exclude_none=True))

    def write_toml(self, path: str | Path) -> None:
        """Write atomically: a crash mid-write never leaves a truncated config."""
        path = Path(path)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(self.to_toml(), encoding="utf-8")
        tmp.replace(path)

    def with_overrides(self, overrides: dict[str, Any]) -> "EngineConfig":
        """Return a copy with dotted keys (``"server.port"``) replaced; None values are skipped.

        Raises:
            ConfigError: an override names an unknown key or holds a refused value.
        """
        data = self.model_dump()
        for dotted, value in overrides.items():
            if value is None:
                continue
            section, _, key = dotted.partition(".")
            if section not in data or not isinstance(data[section], dict):
                raise ConfigError(f"{dotted}: unknown section {section!r}")
            data[section][key] = value
        return EngineConfig.from_dict(data)


def format_validation_error(exc: ValidationError) -> str:
    """One line per refused field: ``batching.mode = 'fast': Input should be 'sequential'``."""
    lines = []
    for err in exc.errors():
        field = ".".join(str(part) for part in err["loc"])
        if err["type"] == "extra_forbidden":
            lines.append(f"{field}: unknown key (not a setting of this section)")
        elif err["type"] == "missing":
            lines.append(f"{field}: required")
        else:
            msg = err["msg"].removeprefix("Value error, ")
            lines.append(f"{field} = {err.get('input')!r}: {msg}")
    return "; ".join(lines)
