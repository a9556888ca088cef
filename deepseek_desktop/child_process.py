"""ChildProcess: the one wrapper around QProcess for every program the app starts (the worker,
the demo fetch, the GGUF import). It starts the program, hands over its stderr a line at a time,
stops it (terminate, then kill after a grace period: waiting for it, or returning at once with
``ended`` to follow) and reports one readable ``Outcome``.

The owners (``EngineProcess``, ``ModelLibrary``) add what is theirs: restarts, JSON log lines,
job messages. Nothing else in the app creates a QProcess.
"""

from __future__ import annotations

import re
from collections import deque
from dataclasses import dataclass
from typing import Optional

from PySide6.QtCore import QObject, QProcess, QProcessEnvironment, QTimer, Signal

# tqdm redraws its bar after a carriage return: a "\r" ends a line as "\n" does.
LINE_END = re.compile(rb"\r\n|\r|\n")


@dataclass(frozen=True)
class Outcome:
    """How a child process ended."""

    code: Optional[int]          # exit code; None when it never started
    crashed: bool = False        # killed by a signal, or crashed
    stopped: bool = False        # it ended because the app asked it to (``stop``)
    start_error: str = ""        # Qt's reason when the program could not be started at all
    stdout: str = ""

    @property
    def ok(self) -> bool:
        return self.code == 0 and not self.crashed and not self.start_error

    def describe(self) -> str:
        """"exited with code 2", "crashed", "failed to start: No such file or directory"."""
        if self.start_error:
            return f"failed to start: {self.start_error}"
        return "crashed" if self.crashed else f"exited with code {self.code}"


class ChildProcess(QObject):
    line = Signal(str)       # one non-empty line of its stderr, stripped
    ended = Signal(object)   # Outcome, once per start

    def __init__(self, parent: Optional[QObject] = None, tail_lines: int = 40, merge_output: bool = False):
        """``merge_output``: stdout joins stderr, line by line (vLLM logs to stdout, uvicorn to
        stderr: the lines come in the order they were written); ``Outcome.stdout`` is then empty."""
        super().__init__(parent)
        self.tail: deque[str] = deque(maxlen=tail_lines)
        self._buffer = b""
        self._stopping = False
        self._process = QProcess(self)
        if merge_output:
            self._process.setProcessChannelMode(QProcess.ProcessChannelMode.MergedChannels)
            self._process.readyReadStandardOutput.connect(self._read_stderr)
        self._merged = merge_output
        self._process.readyReadStandardError.connect(self._read_stderr)
        self._process.finished.connect(self._on_finished)
        self._process.errorOccurred.connect(self._on_error)
        self._kill_timer = QTimer(self, singleShot=True, timeout=self._kill_if_running)

    def start(self, program: str, args: list[str], env: Optional[dict[str, str]] = None) -> bool:
        """Start ``program``; False (and nothing done) when one is still running. ``env`` is
        added to the app's own environment."""
        if self.running():
            return False
        self._stopping = False
        self._buffer = b""
        self.tail.clear()
        environment = QProcessEnvironment.systemEnvironment()
        for key, value in (env or {}).items():
            environment.insert(key, value)
        self._process.setProcessEnvironment(environment)
        self._process.start(program, args)
        return True

    def stop(self, grace_ms: int = 5000, quiet: bool = False) -> None:
        """Terminate, then kill after ``grace_ms`` (0: kill at once). Blocks until it has ended
        (for quitting; ``stop_soon`` keeps the GUI responsive). ``quiet``: no signal is emitted
        any more (its owner is going away)."""
        self._stopping = True
        self._kill_timer.stop()
        if quiet:
            self.blockSignals(True)
        if not self.running():
            return
        if grace_ms > 0:
            self._process.terminate()
            if self._process.waitForFinished(grace_ms):
                return
        self._process.kill()
        self._process.waitForFinished(3000)

    def stop_soon(self, grace_ms: int = 5000) -> None:
        """Terminate, and kill if it is still running after ``grace_ms``. Returns at once:
        ``ended`` says when it has ended."""
        self._stopping = True
        if not self.running() or self._kill_timer.isActive():
            return
        self._process.terminate()
        self._kill_timer.start(grace_ms)

    def _kill_if_running(self) -> None:
        if self.running():
            self._process.kill()

    def running(self) -> bool:
        return self._process.state() != QProcess.ProcessState.NotRunning

    def pid(self) -> int:
        return int(self._process.processId())

    def _read_stderr(self) -> None:
        if self._merged:
            self._buffer += bytes(self._process.readAllStandardOutput())
        else:
            self._buffer += bytes(self._process.readAllStandardError())
        *lines, self._buffer = LINE_END.split(self._buffer)
        self._emit_lines(lines)

    def _emit_lines(self, lines: list[bytes]) -> None:
        for raw in lines:
            text = raw.decode("utf-8", "replace").strip()
            if text:
                self.tail.append(text)
                self.line.emit(text)

    def _on_finished(self, code: int, status: QProcess.ExitStatus) -> None:
        self._kill_timer.stop()
        self._read_stderr()
        self._emit_lines([self._buffer])  # a last line without its newline
        self._buffer = b""
        stdout = "" if self._merged else bytes(self._process.readAllStandardOutput()).decode("utf-8", "replace")
        crashed = status == QProcess.ExitStatus.CrashExit
        self.ended.emit(Outcome(code, crashed=crashed, stopped=self._stopping, stdout=stdout))

    def _on_error(self, error: QProcess.ProcessError) -> None:
        # Other errors (a crash, a failed write) are followed by ``finished``; this one is not.
        if error == QProcess.ProcessError.FailedToStart:
            self.ended.emit(Outcome(None, stopped=self._stopping, start_error=self._process.errorString()))
