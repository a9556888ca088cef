"""EngineProcess: owns the worker (``deepseek-engine serve``) as a QProcess.

It gives the worker a free port (the worker binds port 0 and logs the one it got), a random API
key and the GUI's pid to watch (so a killed GUI leaves no worker behind), forwards its JSON log
lines, and restarts it with back-off when it dies without being asked to.
"""

from __future__ import annotations

import json
import os
import secrets
import sys
import time
from collections import deque
from typing import Optional

from PySide6.QtCore import QObject, QProcess, QProcessEnvironment, QTimer, Signal

# Seconds to wait before each restart after a crash; a worker that ran this long is healthy again.
BACKOFF_S = (1, 2, 4, 8, 16, 30)
HEALTHY_AFTER_S = 60
MAX_RESTARTS = len(BACKOFF_S)
USAGE_ERROR = 2  # ``deepseek-engine`` exits 2 on a bad flag or configuration: restarting cannot help


API_KEY_ENV = "DEEPSEEK_ENGINE_API_KEY"  # read by `deepseek-engine serve` when no --api-key is given


class EngineProcess(QObject):
    listening = Signal(str)          # base URL, on each (re)start
    log_line = Signal(dict)          # one parsed JSON log line of the worker
    finished = Signal(str)           # why it stopped, with the tail of its stderr
    state_changed = Signal(str)      # "starting", "running", "crashed", "failed", "stopped"
    restart_scheduled = Signal(float)  # seconds until the next start

    def __init__(self, model_path: Optional[str] = None, parent: Optional[QObject] = None,
                 restart: bool = True, extra_args: Optional[list[str]] = None):
        super().__init__(parent)
        self.model_path = model_path
        self.api_key = secrets.token_urlsafe(24)
        self.url: Optional[str] = None
        self.state = "stopped"
        self.restart_enabled = restart
        self.restarts = 0            # crashes in a row (reset once a worker stays up)
        self.extra_args = list(extra_args or [])
        self.tail: deque[str] = deque(maxlen=40)
        self._buffer = b""
        self._started_at = 0.0
        self._stopping = False
        self._restart_timer = QTimer(self, singleShot=True, timeout=self.start)
        self._process = QProcess(self)
        self._process.readyReadStandardError.connect(self._read_stderr)
        self._process.finished.connect(self._on_finished)
        self._process.errorOccurred.connect(self._on_error)

    def arguments(self) -> list[str]:
        # The key goes in the environment, not the command line: other local users can read a
        # process's arguments, and argparse took a key starting with "-" (1 in 64 of
        # token_urlsafe's) for an option, so 1 launch in 64 ended in "engine failed".
        args = ["-m", "engine", "serve", "--port", "0", "--parent-pid", str(os.getpid()), *self.extra_args]
        if self.model_path:
            args.append(f"--model={self.model_path}")
        return args

    def environment(self) -> QProcessEnvironment:
        env = QProcessEnvironment.systemEnvironment()
        env.insert(API_KEY_ENV, self.api_key)
        return env

    def start(self) -> None:
        if self._process.state() != QProcess.ProcessState.NotRunning:
            return
        self._stopping = False
        self.url = None
        self._buffer = b""
        self._started_at = time.monotonic()
        self._set_state("starting")
        self._process.setProcessEnvironment(self.environment())
        self._process.start(sys.executable, self.arguments())

    def stop(self, grace_ms: int = 5000) -> None:
        """Terminate, then kill after ``grace_ms``; no restart follows."""
        self._stopping = True
        self._restart_timer.stop()
        if self._process.state() != QProcess.ProcessState.NotRunning:
            self._process.terminate()
            if not self._process.waitForFinished(grace_ms):
                self._process.kill()
                self._process.waitForFinished(2000)
        self._set_state("stopped")

    def restart_now(self) -> None:
        self._restart_timer.stop()
        self.start()

    def pid(self) -> int:
        return int(self._process.processId())

    def running(self) -> bool:
        return self._process.state() != QProcess.ProcessState.NotRunning

    def stderr_tail(self, lines: int = 6) -> str:
        """The worker's last lines, messages only (its log lines are JSON)."""
        out = []
        for text in list(self.tail)[-lines:]:
            try:
                entry = json.loads(text)
                out.append(entry.get("msg") or entry.get("error") or text)
            except json.JSONDecodeError:
                out.append(text)
        return "\n".join(out)

    def _set_state(self, state: str) -> None:
        if state != self.state:
            self.state = state
            self.state_changed.emit(state)

    def _read_stderr(self) -> None:
        self._buffer += bytes(self._process.readAllStandardError())
        *lines, self._buffer = self._buffer.split(b"\n")
        for raw in lines:
            text = raw.decode("utf-8", "replace").strip()
            if not text:
                continue
            self.tail.append(text)
            try:
                entry = json.loads(text)
            except json.JSONDecodeError:
                continue
            if entry.get("event") == "listening":
                self.url = f"http://{entry['host']}:{entry['port']}"
                self._set_state("running")
                self.listening.emit(self.url)
            self.log_line.emit(entry)

    def _on_finished(self, code: int, status) -> None:
        self._read_stderr()
        if self._stopping:
            self.finished.emit(f"engine stopped (exit code {code})")
            return
        crashed = status == QProcess.ExitStatus.CrashExit
        what = "crashed" if crashed else f"exited with code {code}"
        if self.url is None:
            what = f"could not start ({what})"
        self.finished.emit(f"engine {what}:\n{self.stderr_tail()}")
        self._after_death(give_up=self.url is None and not crashed and code == USAGE_ERROR)

    def _on_error(self, error) -> None:
        if error == QProcess.ProcessError.FailedToStart:
            self.finished.emit(f"engine failed to start: {self._process.errorString()}")
            self._after_death()

    def _after_death(self, give_up: bool = False) -> None:
        if time.monotonic() - self._started_at >= HEALTHY_AFTER_S:
            self.restarts = 0
        if give_up or not self.restart_enabled or self.restarts >= MAX_RESTARTS:
            self._set_state("failed")
            return
        delay = BACKOFF_S[self.restarts]
        self.restarts += 1
        self._set_state("crashed")
        self.restart_scheduled.emit(float(delay))
        self._restart_timer.start(int(delay * 1000))
