"""Where the engine keeps its files by default (torch-free)."""

from __future__ import annotations

import os
from pathlib import Path

from platformdirs import user_cache_dir, user_data_dir

APP_NAME = "deepseek-desktop"
DEMO_MODEL_NAME = "SmolLM2-135M-Instruct"


def data_dir() -> Path:
    """``DEEPSEEK_DESKTOP_DATA`` or the platform's user data folder."""
    return Path(os.environ.get("DEEPSEEK_DESKTOP_DATA") or user_data_dir(APP_NAME))


def cache_dir() -> Path:
    return Path(os.environ.get("DEEPSEEK_DESKTOP_CACHE") or user_cache_dir(APP_NAME))


def models_dir() -> Path:
    return data_dir() / "models"


def demo_model_dir(base: Path | None = None) -> Path:
    return (base or models_dir()) / DEMO_MODEL_NAME


def is_model_folder(path: Path) -> bool:
    return (path / "config.json").is_file() and any(path.glob("*.safetensors"))
