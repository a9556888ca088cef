"""Named presets: engine settings plus sampling defaults, one TOML file each (torch-free).

A preset is an engine TOML (the same commented layout ``export --format engine-toml`` writes) with a
``[sampling]`` table, kept in ``<data>/presets/<name>.toml``. ``serve --config`` does not read
``[sampling]``; ``export --from preset.toml`` does (Ollama's PARAMETER lines). Files are written
atomically; a name is a file name, so it is checked first.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any, Optional

import tomli_w
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from engine.config import ConfigError, EngineConfig, format_validation_error
from engine.export.engine_toml import exportable, render_config
from engine.paths import data_dir
from engine.protocol import MAX_STOP_SEQUENCES
from engine.requests import SAMPLING_BOUNDS
from engine.staging import atomic_write_text

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9 ._-]{0,63}$")


class PresetError(ValueError):
    """A bad name, a missing preset or a file that does not hold one; the message says which."""


class SamplingDefaults(BaseModel):
    """The sampling defaults a preset carries (the chat's settings)."""

    model_config = ConfigDict(extra="forbid")

    temperature: Optional[float] = Field(None, **SAMPLING_BOUNDS["temperature"])
    top_p: Optional[float] = Field(None, **SAMPLING_BOUNDS["top_p"])
    top_k: Optional[int] = Field(None, **SAMPLING_BOUNDS["top_k"])
    max_tokens: Optional[int] = Field(None, **SAMPLING_BOUNDS["max_tokens"])
    repetition_penalty: Optional[float] = Field(None, **SAMPLING_BOUNDS["repetition_penalty"])
    frequency_penalty: Optional[float] = Field(None, **SAMPLING_BOUNDS["frequency_penalty"])
    presence_penalty: Optional[float] = Field(None, **SAMPLING_BOUNDS["presence_penalty"])
    seed: Optional[int] = Field(None, **SAMPLING_BOUNDS["seed"])
    stop: Optional[list[str]] = Field(None, max_length=MAX_STOP_SEQUENCES)
    system_prompt: Optional[str] = None

    @field_validator("max_tokens", mode="before")
    @classmethod
    def _no_limit_is_unset(cls, value):
        # The chat's 0 means "as the context allows", which a request says by leaving max_tokens out.
        return None if value == 0 and not isinstance(value, bool) else value


def check_name(name: str) -> str:
    name = name.strip()
    if not _NAME.match(name):
        raise PresetError(f"preset name {name!r}: 1 to 64 letters, digits, spaces, '.', '_' or '-', "
                          "starting with a letter or digit")
    return name


class PresetStore:
    def __init__(self, folder: Optional[Path] = None):
        self.folder = Path(folder) if folder else data_dir() / "presets"

    def path(self, name: str) -> Path:
        return self.folder / f"{check_name(name)}.toml"

    def names(self) -> list[str]:
        if not self.folder.is_dir():
            return []
        return sorted((p.stem for p in self.folder.glob("*.toml") if _NAME.match(p.stem)), key=str.lower)

    def save(self, name: str, config: EngineConfig, sampling: Optional[dict[str, Any]] = None) -> Path:
        """Write (or replace) a preset. Secrets never go in: the API key and literal named keys are left out.

        Raises:
            PresetError: a bad name or sampling value, or a folder that cannot be written.
        """
        path = self.path(name)
        values = _check_sampling(sampling or {})
        clean, _notes = exportable(config)
        table = "[sampling]\n" + tomli_w.dumps(values) if values else ""
        text = f"# deepseek-desktop preset {name!r}: engine settings and [sampling] defaults\n\n"
        text += render_config(clean, extra_tables=table)
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            atomic_write_text(path, text)
        except OSError as exc:
            raise PresetError(f"cannot save preset {name!r} in {self.folder}: {exc.strerror or exc}") from None
        return path

    def load(self, name: str) -> tuple[EngineConfig, dict[str, Any]]:
        """(engine config, sampling defaults).

        Raises:
            PresetError: no such preset, or a file that is not one.
        """
        path = self.path(name)
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise PresetError(f"no preset named {name!r}") from None
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
            raise PresetError(f"preset {name!r} ({path}) cannot be read: {exc}") from None
        sampling = data.pop("sampling", {})
        try:
            return EngineConfig.from_dict(data), _check_sampling(sampling)
        except (ConfigError, PresetError) as exc:
            raise PresetError(f"preset {name!r} ({path}): {exc}") from None

    def rename(self, old: str, new: str) -> Path:
        source, target = self.path(old), self.path(new)
        if not source.exists():
            raise PresetError(f"no preset named {old!r}")
        if target.exists() and target != source:
            raise PresetError(f"a preset named {new!r} already exists")
        source.replace(target)
        return target

    def delete(self, name: str) -> None:
        path = self.path(name)
        if not path.exists():
            raise PresetError(f"no preset named {name!r}")
        path.unlink()


def _check_sampling(values: dict[str, Any]) -> dict[str, Any]:
    if not isinstance(values, dict):
        raise PresetError("[sampling] must be a table")
    try:
        return SamplingDefaults.model_validate(values).model_dump(exclude_none=True)
    except ValidationError as exc:
        raise PresetError(f"[sampling]: {format_validation_error(exc)}") from None
