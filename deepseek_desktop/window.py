"""MainWindow: navigation, the six panels, the status bar and the engine's lifecycle as the user
sees it (starting, idle, loading 42%, ready, crashed — restarting, failed)."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Optional

from PySide6.QtCore import QByteArray, QEvent, Qt, QTimer, Signal
from PySide6.QtGui import QAction, QActionGroup, QGuiApplication
from PySide6.QtWidgets import (
    QApplication, QFileDialog, QHBoxLayout, QLabel, QListWidget, QMainWindow, QMessageBox, QStackedWidget,
    QVBoxLayout, QWidget,
)

from deepseek_desktop.client import EngineClient
from deepseek_desktop.engine_process import EngineProcess
from deepseek_desktop.notifier import Notice, Notifier
from deepseek_desktop.panels.chat import ChatPanel
from deepseek_desktop.panels.logs import LogsPanel
from deepseek_desktop.panels.models import ModelsPanel, progress_text
from deepseek_desktop.panels.monitor import MonitorPanel
from deepseek_desktop.panels.placeholder import PlaceholderPanel
from deepseek_desktop.state.chat import ChatSession
from deepseek_desktop.state.chat_store import StoreThread
from deepseek_desktop.state.library import ModelLibrary
from deepseek_desktop.state.settings import read_json, settings, write_json
from deepseek_desktop.telemetry import TelemetryModel
from engine.memory import format_bytes
from engine.paths import data_dir

PANELS = ["Models", "Chat", "Monitor", "Tuning", "Search", "Logs"]
THEMES_DIR = Path(__file__).resolve().parent / "resources" / "themes"
HEALTH_EVERY_MS = 2000
NOTICE_SHOWN_MS = 8000
QUIET_PATHS = ("/health", "/metrics", "/admin/status")


def _flush(layout_class, *items) -> QWidget:
    """A widget laying out ``items`` (a widget, or (widget, stretch)) edge to edge."""
    holder = QWidget()
    layout = layout_class(holder)
    layout.setContentsMargins(0, 0, 0, 0)
    layout.setSpacing(0)
    for item in items:
        widget, stretch = item if isinstance(item, tuple) else (item, 0)
        layout.addWidget(widget, stretch)
    return holder


def apply_theme(name: str) -> str:
    name = name if (THEMES_DIR / f"{name}.qss").exists() else "dark"
    QApplication.instance().setStyleSheet((THEMES_DIR / f"{name}.qss").read_text())
    return name


def _known(value) -> bool:
    """A number, not N/A (None) nor NaN."""
    return isinstance(value, (int, float)) and value == value


def headline(detail: str) -> str:
    """One line for the status bar: "engine could not start (exited with code 2):" says little,
    so the last line of the worker's stderr (usually the reason) follows it."""
    lines = [line.strip() for line in detail.splitlines() if line.strip()]
    if not lines:
        return ""
    if lines[0].endswith(":") and len(lines) > 1:
        return f"{lines[0]} {lines[-1]}"
    return lines[0]


class MainWindow(QMainWindow):
    first_painted = Signal(float)  # time.time() of the first paint

    def __init__(self, engine: Optional[EngineProcess] = None, url: Optional[str] = None,
                 api_key: Optional[str] = None, load_on_start: Optional[dict] = None):
        super().__init__()
        self.setWindowTitle("DeepSeek Desktop")
        self.engine = engine
        self.client: Optional[EngineClient] = None
        self.model_id: Optional[str] = None
        self.engine_state = "starting" if engine is not None else ("connecting" if url else "no engine")
        self.load_on_start = load_on_start
        last = read_json("engine/last_load", None)
        self.last_load: Optional[dict] = last if isinstance(last, dict) and last.get("path") else None
        self._events = None
        self._loading_when_crashed = False
        self._exit_reason = ""
        self.pending_load: Optional[dict] = None   # sent to /admin/load, not yet ready
        self._load_fetched = False                 # load the demo model once its fetch ends
        self._monitor_window: Optional[QWidget] = None
        self._painted = False
        self.notifier = Notifier(parent=self)
        self.theme = apply_theme(settings().value("window/theme", "dark"))
        self.store = StoreThread(data_dir() / "chats.sqlite3", self)
        self.store.failed.connect(self.notifier.error)
        self.store.warning.connect(self.notifier.warning)
        self.telemetry = TelemetryModel(parent=self)
        self.telemetry.alert.connect(self._on_alert)
        self.telemetry.row_added.connect(self._on_telemetry)
        self.library = ModelLibrary(self)
        self.session = ChatSession(self.store, self.notifier, lambda: self.client if self.model_id else None,
                                   lambda: self.model_id, self)
        self._build()
        self._build_menus()
        self._restore()
        self._health_timer = QTimer(self, interval=HEALTH_EVERY_MS, timeout=self._poll_health)
        self.telemetry.start()
        self.library.scan()
        if engine is not None:
            engine.listening.connect(lambda u: self._attach(u, engine.api_key))
            engine.finished.connect(self._on_engine_finished)
            engine.state_changed.connect(self._on_process_state)
            engine.restart_scheduled.connect(
                lambda s: self._set_state("crashed", f"restarting in {s:.0f} s (attempt {engine.restarts})"))
            engine.log_line.connect(self._on_worker_log)
        elif url:
            self._attach(url, api_key or "")
        self._set_state(self.engine_state, "starting engine…" if engine is not None else "")

    # ------------------------------------------------------------------ layout
    def _build(self) -> None:
        self.nav = QListWidget()
        self.nav.setObjectName("nav")
        self.nav.setFixedWidth(210)
        self.nav.addItems(PANELS)
        self.stack = QStackedWidget()
        self.models = ModelsPanel(self.library, self.notifier)
        self.chat = ChatPanel(self.session, self.notifier, self.theme)
        self.monitor = MonitorPanel(self.telemetry, theme=self.theme, notifier=self.notifier)
        self.logs = LogsPanel(self.notifier)
        self.panels = {"Models": self.models, "Chat": self.chat, "Monitor": self.monitor,
                       "Tuning": PlaceholderPanel("Tuning"), "Search": PlaceholderPanel("Search"), "Logs": self.logs}
        for name in PANELS:
            self.stack.addWidget(self.panels[name])
        self.nav.currentRowChanged.connect(self.stack.setCurrentIndex)
        brand = QLabel("DeepSeek Desktop")
        brand.setObjectName("brand")
        side = _flush(QVBoxLayout, brand, (self.nav, 1))
        side.setFixedWidth(210)
        self.setCentralWidget(_flush(QHBoxLayout, side, (self.stack, 1)))

        bar = self.statusBar()
        self.state_label = QLabel()
        self.state_label.setObjectName("engine_state")
        self.model_label = QLabel("no model")
        self.memory_label = QLabel("memory N/A")
        self.speed_label = QLabel("0.0 tok/s")
        for label in (self.state_label, self.model_label, self.memory_label, self.speed_label):
            bar.addPermanentWidget(label)

        self.models.load_requested.connect(self.load)
        self.models.cancel_requested.connect(lambda: self._admin("POST", "/admin/cancel-load"))
        self.models.unload_requested.connect(lambda: self._admin("POST", "/admin/unload"))
        self.chat.wants_models_panel.connect(lambda: self.show_panel("Models"))
        self.chat.wants_demo.connect(self.fetch_and_load_demo)
        self.library.job_finished.connect(self._on_job_finished)
        self.library.job_progress.connect(self._on_job_progress)
        self.notifier.posted.connect(self._show_notice)

    def _build_menus(self) -> None:
        file_menu = self.menuBar().addMenu("&File")
        file_menu.addAction("Import GGUF…", self.models.ask_gguf)
        file_menu.addAction("New chat", lambda: (self.show_panel("Chat"), self.session.new_conversation()))
        file_menu.addSeparator()
        file_menu.addAction("Quit", self.close, "Ctrl+Q")
        view = self.menuBar().addMenu("&View")
        themes = QActionGroup(self)
        for name in ("dark", "light"):
            action = QAction(name.title() + " theme", self, checkable=True, checked=name == self.theme)
            action.triggered.connect(lambda _=False, n=name: self.set_theme(n))
            themes.addAction(action)
            view.addAction(action)
        view.addSeparator()
        self.pop_out_action = view.addAction("Monitor in its own window", self.pop_out_monitor)
        engine_menu = self.menuBar().addMenu("&Engine")
        engine_menu.addAction("Restart engine", self.restart_engine)
        engine_menu.addAction("Copy address and API key", self._copy_address)
        help_menu = self.menuBar().addMenu("&Help")
        help_menu.addAction("About", lambda: QMessageBox.about(
            self, "DeepSeek Desktop", "Run language models on your own machine.\n"
            "The engine is an OpenAI-compatible server; see the README for its API."))

    def show_panel(self, name: str) -> None:
        self.nav.setCurrentRow(PANELS.index(name))

    def set_theme(self, name: str) -> None:
        self.theme = apply_theme(name)
        self.chat.theme = self.theme
        self.monitor.set_theme(self.theme)
        settings().setValue("window/theme", self.theme)

    def pop_out_monitor(self) -> QWidget:
        """Show the Monitor beside the chat (for a demo: graphs while the model answers)."""
        if self.monitor.window() is self:
            holder = QWidget()
            holder.setWindowTitle("DeepSeek Desktop — Monitor")
            QVBoxLayout(holder).addWidget(self.monitor)
            placeholder = QLabel("The Monitor is in its own window (View menu).")
            placeholder.setAlignment(Qt.AlignmentFlag.AlignCenter)
            self.stack.insertWidget(PANELS.index("Monitor"), placeholder)
            holder.resize(900, 700)
            self._monitor_window = holder
        self._monitor_window.show()
        self._monitor_window.raise_()
        return self._monitor_window

    # ------------------------------------------------------------------ settings
    def _restore(self) -> None:
        store = settings()
        geometry = store.value("window/geometry")
        if isinstance(geometry, QByteArray) and not geometry.isEmpty():
            self.restoreGeometry(geometry)
        else:
            self.resize(1440, 900)
        self.show_panel(store.value("window/panel", "Chat"))
        self.monitor.restore_settings(store)

    def save_settings(self) -> None:
        store = settings()
        store.setValue("window/geometry", self.saveGeometry())
        store.setValue("window/panel", PANELS[self.nav.currentRow()])
        store.setValue("window/theme", self.theme)
        self.monitor.save_settings(store)
        store.sync()

    # ------------------------------------------------------------------ engine
    def _attach(self, url: str, api_key: str) -> None:
        if self.client is None:
            self.client = EngineClient(url, api_key, self)
        self.client.url, self.client.api_key = url, api_key
        self.telemetry.attach(url, api_key, self.engine.pid() if self.engine is not None else None)
        self.models.set_engine_available(True)
        self._events = self.client.events(self._on_event, on_failed=self._on_events_failed)
        self._health_timer.start()
        self._refresh_status()
        load = self._load_after_attach()
        if load is not None:
            self.load(load)

    def _load_after_attach(self) -> Optional[dict]:
        """The model to load once the engine listens: the one asked for at launch, or after a
        crash the last one (unless the crash happened while loading it)."""
        if self.load_on_start is not None:
            load, self.load_on_start = self.load_on_start, None
            return load
        if self.engine is not None and self.engine.restarts and self.last_load and not self._loading_when_crashed:
            self.notifier.info(f"reloading {Path(self.last_load['path']).name} after the engine restarted")
            return self.last_load
        return None

    def _admin(self, method: str, path: str, body: Optional[dict] = None, on_done=None) -> None:
        if self.client is None:
            self.notifier.warning("the engine is not running")
            return
        self.client.request(method, path, on_done, lambda m: self.notifier.error(f"{path}: {m}"), body)

    def load(self, body: dict) -> None:
        self.pending_load = body
        self._admin("POST", "/admin/load", body)

    def load_when_ready(self, body: dict) -> None:
        """Load now, or as soon as the engine listens."""
        if self.client is not None and self.engine_state not in ("starting", "crashed", "failed"):
            self.load(body)
        else:
            self.load_on_start = body

    def fetch_and_load_demo(self) -> None:
        from engine.paths import demo_model_dir, is_model_folder

        if is_model_folder(demo_model_dir()):
            self.load_when_ready({"path": str(demo_model_dir())})
        elif self.library.fetch_demo():
            self._load_fetched = True

    def _on_job_progress(self, line: str) -> None:
        self.chat.cta_status.setText(line)

    def _on_job_finished(self, ok: bool, message: str, path: str) -> None:
        self.chat.cta_status.setText(message)
        if ok and self._load_fetched:
            self._load_fetched = False
            self.load_when_ready({"path": path})

    def restart_engine(self) -> None:
        if self.engine is None:
            self.notifier.warning("attached to an engine this app did not start: restart it where it runs")
            return
        self.session.interrupt("the engine was restarted")
        self.engine.stop()
        self.engine.restarts = 0
        self.engine.start()

    def _copy_address(self) -> None:
        if self.client is not None:
            QGuiApplication.clipboard().setText(f"{self.client.url}  API key: {self.client.api_key}")
            self.notifier.info("engine address and API key copied")

    def _poll_health(self) -> None:
        if self.client is not None:
            self.client.health(self._on_health, self._on_unreachable)

    def _on_health(self, body: dict) -> None:
        if self._events is None and body.get("status") == "ok" and self.model_id is None:
            self._refresh_status()  # an engine without /admin/events (vLLM…): health is all we have

    def _on_unreachable(self, message: str) -> None:
        if self.engine is None:
            self._set_state("unreachable", message)

    def _on_events_failed(self, message: str) -> None:
        self._events = None
        if self.engine is None:  # another server: no admin events; poll health and list models
            self._refresh_status()

    def _refresh_status(self) -> None:
        def on_models(body: dict) -> None:
            data = body.get("data") or []
            self._set_model(data[0]["id"] if data else None)
            if self._events is None:
                self._set_state("ready" if data else "idle")
        url = self.client.url
        self.client.request("GET", "/v1/models", on_models, lambda m: self.notifier.error(f"engine at {url}: {m}"))
        if self.engine is not None:
            self.client.request("GET", "/admin/status", self._on_status, lambda m: None)

    def _on_status(self, status: dict) -> None:
        self.models.set_loaded_path(status.get("path"))

    def _on_event(self, event: dict) -> None:
        self.models.on_engine_event(event)
        kind = event.get("type")
        if kind == "state":
            state = event.get("state")
            if state == "ready":
                self._set_model(event.get("model"))
                if self.pending_load and event.get("memory_bytes") is not None:
                    self.last_load, self.pending_load = self.pending_load, None
                    write_json("engine/last_load", self.last_load)
                self._refresh_status()
            elif state in ("idle", "error", "unloading"):
                self._set_model(None)
            detail = event.get("error") if state == "error" else event.get("path", "")
            self._set_state(state, detail or "")
        elif kind == "progress" and self.engine_state == "loading":
            total = event.get("bytes_total") or 0
            pct = 100 * event.get("bytes_done", 0) / total if total else 0
            self.state_label.setText(f"loading {pct:.0f}%")
            self.chat.cta_status.setText(f"Loading {pct:.0f}% — {progress_text(event)}")
        elif kind == "error":
            self.notifier.error(event.get("message", "engine error"), source="engine")

    def _set_model(self, model_id: Optional[str]) -> None:
        self.model_id = model_id
        self.model_label.setText(model_id or "no model")
        ready = model_id is not None
        detail = ""
        if not ready and self.last_load:
            detail = f"Last used: {Path(self.last_load['path']).name} (load it in the Models panel)"
        self.chat.set_model_ready(ready, detail)

    def _set_state(self, state: str, detail: str = "") -> None:
        self.engine_state = state
        text = {"starting": "starting engine…", "running": "engine started", "idle": "idle — no model",
                "loading": "loading…", "ready": "ready", "error": "load failed", "unloading": "unloading…",
                "crashed": "engine crashed", "failed": "engine failed", "stopped": "engine stopped"}.get(state, state)
        self.state_label.setText(text)
        self.state_label.setToolTip(detail)
        self.state_label.setProperty("state", state)
        self.state_label.style().unpolish(self.state_label)
        self.state_label.style().polish(self.state_label)
        if state in ("crashed", "failed") and detail:
            self.state_label.setText(f"{text} — {headline(detail)}")

    def _on_process_state(self, state: str) -> None:
        if state == "failed":
            self._set_state(state, self._exit_reason)
        elif state in ("starting", "stopped"):
            self._set_state(state)
        if state != "running":
            self.models.set_engine_available(False)

    def _on_engine_finished(self, why: str) -> None:
        self._health_timer.stop()
        self._events = None
        self._loading_when_crashed = self.engine_state == "loading"
        self._set_model(None)
        self.session.interrupt(why.splitlines()[0])
        self._exit_reason = why
        if self.engine is not None and self.engine.state != "stopped":
            self.notifier.error(why.replace("\n", " | "), source="engine")
            self._set_state("crashed", why)  # EngineProcess then says "restarting in…" or "failed"

    def _on_worker_log(self, entry: dict) -> None:
        path, status = entry.get("path"), int(entry.get("status") or 0)
        if path == "/health" or (path in QUIET_PATHS and status < 400):
            return  # the app's own polling (a 503 from /health just means "loading"): noise here
        level = str(entry.get("level", "info")).lower()
        text = entry.get("msg") or entry.get("event") or json.dumps(entry)
        self.notifier.post("warning" if level == "warning" else ("error" if level in ("error", "critical") else "info"),
                           text, source="engine", when=entry.get("ts"))

    # ------------------------------------------------------------------ status bar
    def _show_notice(self, notice: Notice) -> None:
        if notice.level in ("warning", "error") and notice.source != "engine":
            self.statusBar().showMessage(notice.text, NOTICE_SHOWN_MS)

    def _on_alert(self, message: str, since: float) -> None:
        self.notifier.post("warning", f"{message} (since {time.strftime('%H:%M:%S', time.localtime(since))})",
                           source="alert")

    def _on_telemetry(self, row: dict) -> None:
        rate = row.get("engine_generation_tokens_per_s")
        self.speed_label.setText(f"{rate:.1f} tok/s" if _known(rate) else "— tok/s")
        # The worker's memory on every GPU NVML lists it on (its model need not be on GPU 0).
        on_gpus = [v for k, v in row.items() if k.startswith("gpu") and k.endswith("_engine_mem_bytes") and _known(v)]
        rss = row.get("worker_rss_bytes")
        if sum(on_gpus) > 0:
            self.memory_label.setText(f"VRAM {format_bytes(int(sum(on_gpus)))}")
        elif _known(rss):
            self.memory_label.setText(f"RAM {format_bytes(int(rss))}")

    # ------------------------------------------------------------------ lifecycle
    def event(self, event) -> bool:
        if event.type() == QEvent.Type.Paint and not self._painted:
            self._painted = True
            self.first_painted.emit(time.time())
        return super().event(event)

    def closeEvent(self, event) -> None:
        self.save_settings()
        self._health_timer.stop()
        if self._events is not None:  # an attached engine keeps running: its stream must end here
            self._events.stop()
        self.session.stop()
        self.telemetry.stop()
        self.library.stop_job()
        if self.engine is not None:
            self.engine.stop()
        self.store.close()
        if self._monitor_window is not None:
            self._monitor_window.close()
        super().closeEvent(event)
