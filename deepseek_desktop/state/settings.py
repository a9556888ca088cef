"""What the app remembers between launches (QSettings in an INI file in the data folder, so a
test or a second profile can use its own by setting DEEPSEEK_DESKTOP_DATA)."""

from __future__ import annotations

import json
from typing import Any

from PySide6.QtCore import QSettings

from engine.paths import data_dir


def settings() -> QSettings:
    return QSettings(str(data_dir() / "settings.ini"), QSettings.Format.IniFormat)


def read_json(key: str, default: Any) -> Any:
    """Lists and dicts are kept as JSON: QSettings' own lists come back as a string when they hold one item."""
    raw = settings().value(key)
    if raw is None:
        return default
    try:
        return json.loads(raw)
    except (TypeError, ValueError):
        return default


def write_json(key: str, value: Any) -> None:
    store = settings()
    store.setValue(key, json.dumps(value))
    store.sync()


# The engine the app starts (Engine → Backend, ``deepseek-desktop --backend``).
BACKENDS = ("built-in", "vllm")
BACKEND_KEY = "engine/backend"


def chosen_backend() -> str:
    value = read_json(BACKEND_KEY, BACKENDS[0])
    return value if value in BACKENDS else BACKENDS[0]


def remember_backend(name: str) -> None:
    if name not in BACKENDS:
        raise ValueError(f"unknown backend {name!r}: choose one of {', '.join(BACKENDS)}")
    write_json(BACKEND_KEY, name)
