"""StatusBar: the engine's state, the served model, the worker's memory and speed, and the last
warning or error for a few seconds. It observes the engine session, the telemetry and the
notifier; nobody writes into it."""

from __future__ import annotations

from typing import Optional

from PySide6.QtCore import Qt
from PySide6.QtWidgets import QLabel, QStatusBar, QWidget

from deepseek_desktop.notifier import Notice, Notifier
from deepseek_desktop.state.engine_session import EngineSession, load_percent
from deepseek_desktop.widgets.labels import ElidedLabel
from engine.states import ModelState, ProcessState

NOTICE_SHOWN_MS = 8000
# Keyed by the enums, which hash and compare as their spelling: the signal carries the string.
STATE_TEXT = {ProcessState.STARTING: "starting engine…", ProcessState.RUNNING: "engine started",
              ModelState.IDLE: "idle — no model", ModelState.LOADING: "loading 0%", ModelState.READY: "ready",
              ModelState.ERROR: "load failed", ModelState.UNLOADING: "unloading…",
              ProcessState.CRASHED: "engine crashed", ProcessState.FAILED: "engine failed",
              ProcessState.STOPPED: "engine stopped"}
WITH_REASON = (ProcessState.CRASHED, ProcessState.FAILED)  # the reason follows the state on the bar itself


def headline(detail: str) -> str:
    """One line for the status bar: "engine could not start (exited with code 2):" says little,
    so the last line of the worker's stderr (usually the reason) follows it."""
    lines = [line.strip() for line in detail.splitlines() if line.strip()]
    if not lines:
        return ""
    if lines[0].endswith(":") and len(lines) > 1:
        return f"{lines[0]} {lines[-1]}"
    return lines[0]


def _known(value) -> bool:
    """A number, not N/A (None) nor NaN."""
    return isinstance(value, (int, float)) and value == value


class StatusBar(QStatusBar):
    def __init__(self, parent: Optional[QWidget] = None):
        super().__init__(parent)
        # A crash's reason and a model's name can be long: elided, whole in the tooltip.
        self.state_label = ElidedLabel()
        self.state_label.setMaximumWidth(520)
        self.state_label.setObjectName("engine_state")
        self.model_label = ElidedLabel("no model", Qt.TextElideMode.ElideMiddle)
        self.model_label.setMaximumWidth(320)
        self.memory_label = QLabel("memory N/A")
        self.speed_label = QLabel("0.0 tok/s")
        # The engine's circuit breaker (issue 14): shown only while it is not closed.
        self.circuit_label = ElidedLabel()
        self.circuit_label.setObjectName("engine_circuit")
        self.circuit_label.setMaximumWidth(420)
        self.circuit_label.hide()
        for label in (self.circuit_label, self.state_label, self.model_label, self.memory_label, self.speed_label):
            self.addPermanentWidget(label)
        self._state: tuple[str, str] = ("", "")
        self._generating = False

    def observe(self, session: EngineSession, telemetry, notifier: Notifier, chat=None) -> None:
        """``telemetry``: a ``TelemetryModel`` (its rows give memory and speed); ``chat``: a
        ``ChatSession`` (while a reply streams the state reads "generating" with its speed)."""
        session.state_changed.connect(self.show_state)
        # vLLM's model says so: its state comes from /health and /v1/models, not our /admin events.
        suffix = " · vLLM" if session.backend == "vllm" else ""
        session.model_changed.connect(
            lambda model_id, _hint: self.model_label.setText(f"{model_id}{suffix}" if model_id else "no model"))
        session.load_progress.connect(lambda event: self.state_label.setText(f"loading {load_percent(event):.0f}%"))
        session.engine_event.connect(self.show_circuit)
        telemetry.row_added.connect(self.show_telemetry)
        notifier.posted.connect(self.show_notice)
        if chat is not None:
            chat.busy_changed.connect(self.show_generating)
            chat.generating.connect(lambda rate: self.show_generating(True, rate))

    def show_generating(self, busy: bool, rate: Optional[float] = None) -> None:
        """"generating · 14.2 tok/s" while a reply streams; the engine's state again after it."""
        self._generating = busy
        if not busy:
            self.show_state(*self._state)
            return
        if self._state[0] == ModelState.READY:
            self.state_label.detail = ""
            self.state_label.setText("generating" + (f" · {rate:.1f} tok/s" if rate is not None else "…"))

    def show_state(self, state: str, detail: str = "") -> None:
        self._state = (state, detail)
        if self._generating and state == ModelState.READY:
            return  # "generating" stays until the reply ends
        text = STATE_TEXT.get(state, state)
        self.state_label.detail = detail
        self.state_label.setText(f"{text} — {headline(detail)}" if state in WITH_REASON and detail else text)
        self.state_label.setProperty("state", state)  # the theme colours the label by state
        self.state_label.style().unpolish(self.state_label)
        self.state_label.style().polish(self.state_label)

    def show_circuit(self, event: dict) -> None:
        """A ``circuit`` event of /admin/events: "circuit open — why" until it closes again."""
        if event.get("type") != "circuit":
            return
        state, reason = event.get("state"), event.get("reason") or ""
        if state == "closed":
            self.circuit_label.hide()
            return
        self.circuit_label.detail = reason
        self.circuit_label.setText(f"circuit {str(state).replace('_', '-')} — {headline(reason)}")
        self.circuit_label.show()

    def show_notice(self, notice: Notice) -> None:
        if notice.level in ("warning", "error") and notice.source != "engine":
            self.showMessage(notice.text, NOTICE_SHOWN_MS)

    def show_telemetry(self, row: dict) -> None:
        from engine.memory import format_bytes

        rate = row.get("engine_generation_tokens_per_s")
        self.speed_label.setText(f"{rate:.1f} tok/s" if _known(rate) else "— tok/s")
        # The worker's memory on every GPU NVML lists it on (its model need not be on GPU 0).
        on_gpus = [v for k, v in row.items() if k.startswith("gpu") and k.endswith("_engine_mem_bytes") and _known(v)]
        rss = row.get("worker_rss_bytes")
        if sum(on_gpus) > 0:
            self.memory_label.setText(f"VRAM {format_bytes(int(sum(on_gpus)))}")
        elif _known(rss):
            self.memory_label.setText(f"RAM {format_bytes(int(rss))}")
