"""EngineProcess: owns the worker (``deepseek-engine serve``) as a QProcess.

It gives the worker a free port (the worker binds port 0 and logs the one it got) and a random
API key, forwards its JSON log lines, and tells the rest of the app where it listens.
"""

from __future__ import annotations

import json
import os
import secrets
import sys
from collections import deque
from typing import Optional

from PySide6.QtCore import QObject, QProcess, Signal


class EngineProcess(QObject):
    listening = Signal(str)          # base URL
    log_line = Signal(dict)          # one parsed JSON log line of the worker
    finished = Signal(str)           # why it stopped, with the tail of its stderr

    def __init__(self, model_path: Optional[str] = None, parent: Optional[QObject] = None):
        super().__init__(parent)
        self.model_path = model_path
        self.api_key = secrets.token_urlsafe(24)
        self.url: Optional[str] = None
        self._tail: deque[str] = deque(maxlen=20)
        self._buffer = b""
        self._process = QProcess(self)
        self._process.readyReadStandardError.connect(self._read_stderr)
        self._process.finished.connect(self._on_finished)
        self._process.errorOccurred.connect(self._on_error)

    def arguments(self) -> list[str]:
        args = ["-m", "engine", "serve", "--port", "0", "--api-key", self.api_key,
                "--parent-pid", str(os.getpid())]
        if self.model_path:
            args += ["--model", self.model_path]
        return args

    def start(self) -> None:
        self._process.start(sys.executable, self.arguments())

    def stop(self, grace_ms: int = 5000) -> None:
        """Terminate, then kill after ``grace_ms``."""
        if self._process.state() == QProcess.ProcessState.NotRunning:
            return
        self._process.terminate()
        if not self._process.waitForFinished(grace_ms):
            self._process.kill()
            self._process.waitForFinished(2000)

    def pid(self) -> int:
        return int(self._process.processId())

    def _read_stderr(self) -> None:
        self._buffer += bytes(self._process.readAllStandardError())
        *lines, self._buffer = self._buffer.split(b"\n")
        for raw in lines:
            text = raw.decode("utf-8", "replace").strip()
            if not text:
                continue
            self._tail.append(text)
            try:
                entry = json.loads(text)
            except json.JSONDecodeError:
                continue
            if entry.get("event") == "listening":
                self.url = f"http://{entry['host']}:{entry['port']}"
                self.listening.emit(self.url)
            self.log_line.emit(entry)

    def _on_finished(self, code: int, status) -> None:
        self.finished.emit(f"engine exited with code {code}:\n" + "\n".join(list(self._tail)[-5:]))

    def _on_error(self, error) -> None:
        if error == QProcess.ProcessError.FailedToStart:
            self.finished.emit(f"engine failed to start: {self._process.errorString()}")
