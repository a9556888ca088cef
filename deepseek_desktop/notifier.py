"""One way for errors, warnings and alerts to reach the user: the status bar and the Logs panel
both listen here, so no part of the app opens its own dialog or prints a traceback."""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field

from PySide6.QtCore import QObject, Signal


@dataclass
class Notice:
    level: str          # "info", "warning", "error"
    text: str
    source: str = "app"  # "app", "engine" (a worker log line), "alert"
    time: float = field(default_factory=time.time)


class Notifier(QObject):
    posted = Signal(object)  # Notice

    def __init__(self, capacity: int = 5000, parent=None):
        super().__init__(parent)
        self.history: deque[Notice] = deque(maxlen=capacity)

    def post(self, level: str, text: str, source: str = "app", when: float | None = None) -> Notice:
        notice = Notice(level, text, source, when if when is not None else time.time())
        self.history.append(notice)
        self.posted.emit(notice)
        return notice

    def info(self, text: str, source: str = "app") -> Notice:
        return self.post("info", text, source)

    def warning(self, text: str, source: str = "app") -> Notice:
        return self.post("warning", text, source)

    def error(self, text: str, source: str = "app") -> Notice:
        return self.post("error", text, source)
