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
