"""EngineProcess: owns the worker (``deepseek-engine serve``), run as a ``ChildProcess``.

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

from PySide6.QtCore import QObject, QTimer, Signal

from deepseek_desktop.child_process import ChildProcess, Outcome
from engine.states import ProcessState

# Seconds to wait before each restart after a crash; a worker that ran this long is healthy again.
BACKOFF_S = (1, 2, 4, 8, 16, 30)
HEALTHY_AFTER_S = 60
MAX_RESTARTS = len(BACKOFF_S)
USAGE_ERROR = 2  # ``deepseek-engine`` exits 2 on a bad flag or configuration: restarting cannot help


API_KEY_ENV = "DEEPSEEK_ENGINE_API_KEY"  # read by `deepseek-engine serve` when no --api-key is given


class EngineProcess(QObject):
    """The built-in worker. ``VllmProcess`` (vllm_process.py) runs vLLM through the same life."""

    backend = "built-in"   # Engine → Backend, ``deepseek-desktop --backend``
    admin_api = True       # it serves /admin (load, unload, events, run-time settings)
    listening = Signal(str)          # base URL, on each (re)start
    log_line = Signal(dict)          # one parsed JSON log line of the worker
    finished = Signal(str)           # why it stopped, with the tail of its stderr
    state_changed = Signal(str)      # a ProcessState: starting, running, crashed, failed, stopped
    restart_scheduled = Signal(float)  # seconds until the next start

    def __init__(self, model_path: Optional[str] = None, parent: Optional[QObject] = None,
                 restart: bool = True, extra_args: Optional[list[str]] = None):
        super().__init__(parent)
        self.model_path = model_path
        self.api_key = secrets.token_urlsafe(24)
        self.url: Optional[str] = None
        self.state = ProcessState.STOPPED
        self.restart_enabled = restart
        self.restarts = 0            # crashes in a row (reset once a worker stays up)
        self.extra_args = list(extra_args or [])
        self._started_at = 0.0
        self._start_when_ended = False  # ``restart``: the stopped worker's ``ended`` starts the next
        self._restart_timer = QTimer(self, singleShot=True, timeout=self.start)
        self._child = ChildProcess(self, tail_lines=40, merge_output=self.merge_output)
        self._child.line.connect(self._on_line)
        self._child.ended.connect(self._on_ended)

    @property
    def tail(self) -> deque[str]:
        """The worker's last stderr lines."""
        return self._child.tail

    merge_output = False  # the worker logs JSON lines to stderr only

    def program(self) -> str:
        return sys.executable

    def arguments(self) -> list[str]:
        # The key goes in the environment, not the command line: other local users can read a
        # process's arguments, and argparse took a key starting with "-" (1 in 64 of
        # token_urlsafe's) for an option, so 1 launch in 64 ended in "engine failed".
        args = ["-m", "engine", "serve", "--port", "0", "--parent-pid", str(os.getpid()), *self.extra_args]
        if self.model_path:
            args.append(f"--model={self.model_path}")
        return args

    def environment(self) -> dict[str, str]:
        """Added to the app's own environment."""
        return {API_KEY_ENV: self.api_key}

    def start(self) -> None:
        if self._child.running():
            return
        self.url = None
        self._started_at = time.monotonic()
        self._set_state(ProcessState.STARTING)
        try:
            program, args, env = self.program(), self.arguments(), self.environment()
        except ValueError as exc:  # a launch setting that cannot work (no vLLM here, no model): no restart
            self.finished.emit(f"engine failed to start: {exc}")
            self._set_state(ProcessState.FAILED)
            return
        self._child.start(program, args, env)

    def stop(self, grace_ms: int = 5000) -> None:
        """Terminate, then kill after ``grace_ms``; no restart follows. Blocks until it has ended
        (for quitting)."""
        self._restart_timer.stop()
        self._start_when_ended = False
        self._child.stop(grace_ms)
        self._set_state(ProcessState.STOPPED)

    def restart(self, grace_ms: int = 5000) -> None:
        """Stop the worker and start a new one once it has ended (terminate, kill after
        ``grace_ms``). Returns at once: the GUI stays responsive while the worker shuts down."""
        self._restart_timer.stop()
        self.restarts = 0
        if not self._child.running():
            self.start()
            return
        self._start_when_ended = True
        self._set_state(ProcessState.STOPPED)
        self._child.stop_soon(grace_ms)

    def restart_now(self) -> None:
        self._restart_timer.stop()
        self.start()

    def pid(self) -> int:
        return self._child.pid()

    def running(self) -> bool:
        return self._child.running()

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

    def _set_state(self, state: ProcessState) -> None:
        if state != self.state:
            self.state = state
            self.state_changed.emit(state.value)

    def _on_line(self, text: str) -> None:
        """A JSON log line of the worker: its ``listening`` event says the port."""
        try:
            entry = json.loads(text)
        except json.JSONDecodeError:
            return
        if not isinstance(entry, dict):
            return
        if entry.get("event") == "listening":
            self.url = f"http://{entry['host']}:{entry['port']}"
            self._set_state(ProcessState.RUNNING)
            self.listening.emit(self.url)
        self.log_line.emit(entry)

    def _on_ended(self, outcome: Outcome) -> None:
        if outcome.stopped:
            self.finished.emit(f"engine stopped (exit code {outcome.code})")
            if self._start_when_ended:
                self._start_when_ended = False
                self.start()
            return
        if outcome.start_error:
            self.finished.emit(f"engine failed to start: {outcome.start_error}")
            self._after_death()
            return
        what = outcome.describe()
        if self.url is None:
            what = f"could not start ({what})"
        self.finished.emit(f"engine {what}:\n{self.stderr_tail()}")
        self._after_death(give_up=self.url is None and not outcome.crashed and outcome.code == USAGE_ERROR)

    def _after_death(self, give_up: bool = False) -> None:
        if time.monotonic() - self._started_at >= HEALTHY_AFTER_S:
            self.restarts = 0
        if give_up or not self.restart_enabled or self.restarts >= MAX_RESTARTS:
            self._set_state(ProcessState.FAILED)
            return
        delay = BACKOFF_S[self.restarts]
        self.restarts += 1
        self._set_state(ProcessState.CRASHED)
        self.restart_scheduled.emit(float(delay))
        self._restart_timer.start(int(delay * 1000))
