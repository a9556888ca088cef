"""MainWindow: navigation, the six panels, the status bar and the menus: layout only.

The engine's connection lives in ``state.engine_session``; the panels and the status bar observe
it. A panel is built (and its imports, pyqtgraph for the Monitor, made) the first time it is
shown, so the first window paints without them.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Callable, Optional

from PySide6.QtCore import QByteArray, QEvent, Qt, Signal
from PySide6.QtGui import QAction, QActionGroup, QGuiApplication
from PySide6.QtWidgets import (
    QApplication, QHBoxLayout, QLabel, QListWidget, QMainWindow, QMessageBox, QStackedWidget, QVBoxLayout,
    QWidget,
)

from deepseek_desktop.engine_process import EngineProcess
from deepseek_desktop.notifier import Notifier
from deepseek_desktop.state.chat import ChatSession
from deepseek_desktop.state.chat_store import StoreThread
from deepseek_desktop.state.engine_session import EngineSession, SessionState, reload_at_launch
from deepseek_desktop.state.library import ModelLibrary
from deepseek_desktop.state.settings import settings, write_json
from deepseek_desktop.telemetry import TelemetryModel
from deepseek_desktop.widgets.backend_menu import install_backend_menu
from deepseek_desktop.widgets.export_menu import app_icon, install_export_menu
from deepseek_desktop.widgets.status_bar import StatusBar
from engine.paths import cache_dir, data_dir, make_private

PANELS = ["Models", "Chat", "Monitor", "Tuning", "Search", "Logs"]
THEMES_DIR = Path(__file__).resolve().parent / "resources" / "themes"


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
    # Images (arrows, the checkbox's tick) are named from the themes folder, wherever it is installed.
    qss = (THEMES_DIR / f"{name}.qss").read_text().replace("@THEMES@", THEMES_DIR.as_posix())
    QApplication.instance().setStyleSheet(qss)
    return name


class MainWindow(QMainWindow):
    first_painted = Signal(float)  # time.time() of the first paint

    def __init__(self, engine: Optional[EngineProcess] = None, url: Optional[str] = None,
                 api_key: Optional[str] = None, load_on_start: Optional[dict] = None):
        super().__init__()
        self.setWindowTitle("DeepSeek Desktop")
        self.setWindowIcon(app_icon())
        self.engine = engine
        self._load_fetched = False                 # load the demo model once its fetch ends
        self._monitor_window: Optional[QWidget] = None
        self._painted = False
        self._panels: dict[str, QWidget] = {}
        self._search_model = None  # state.search.SearchModel, made when the Search or Chat panel first needs it
        self.notifier = Notifier(parent=self)
        self._make_folders_private()
        self.theme = apply_theme(settings().value("window/theme", "dark"))
        self.store = StoreThread(data_dir() / "chats.sqlite3", self)
        self.store.failed.connect(self.notifier.error)
        self.store.warning.connect(self.notifier.warning)
        self.telemetry = TelemetryModel(parent=self)
        self.telemetry.alert.connect(self._on_alert)
        self.library = ModelLibrary(self.notifier, self)
        self.library.job_finished.connect(self._on_job_finished)
        self.engine_session = EngineSession(self.notifier, engine, url, api_key, load_on_start, self)
        self.engine_session.attached.connect(self.telemetry.attach)
        self.session = ChatSession(self.store, self.notifier, self.engine_session.ready_client,
                                   lambda: self.engine_session.model_id, self)
        self.engine_session.replies_cut.connect(self.session.interrupt)
        self._build()
        self._build_menus()
        self._restore()
        self.telemetry.start()
        self.engine_session.start()

    def _make_folders_private(self) -> None:
        """Conversations are private: the data folder 0700 and its files 0600 (the history and
        settings made so before anything is written to them); the cache (prefix KV: prompts) 0700.
        A folder or file others could read is tightened, and the Logs say so."""
        try:
            changed = make_private(data_dir(), ("settings.ini", "chats.sqlite3")) + make_private(cache_dir())
        except OSError as exc:
            self.notifier.warning(f"could not make the data folder private: {exc}")
            return
        if changed:
            self.notifier.info("made private (other accounts could read them): " + ", ".join(changed))

    # ------------------------------------------------------------------ what scripts and tests read
    @property
    def engine_state(self) -> SessionState:
        return self.engine_session.state

    @property
    def model_id(self) -> Optional[str]:
        return self.engine_session.model_id

    @property
    def last_load(self) -> Optional[dict]:
        return self.engine_session.last_load

    # ------------------------------------------------------------------ layout
    def _build(self) -> None:
        self.nav = QListWidget()
        self.nav.setObjectName("nav")
        self.nav.setFixedWidth(210)
        self.nav.addItems(PANELS)
        self.stack = QStackedWidget()
        for _ in PANELS:  # stand-ins until each panel is first shown
            self.stack.addWidget(QWidget())
        self.nav.currentRowChanged.connect(self._show_row)
        brand = QLabel("DeepSeek Desktop")
        brand.setObjectName("brand")
        side = _flush(QVBoxLayout, brand, (self.nav, 1))
        side.setFixedWidth(210)
        self.setCentralWidget(_flush(QHBoxLayout, side, (self.stack, 1)))
        status = StatusBar()
        self.setStatusBar(status)
        status.observe(self.engine_session, self.telemetry, self.notifier, self.session)

    def _build_menus(self) -> None:
        file_menu = self.menuBar().addMenu("&File")
        file_menu.addAction("Import GGUF…", lambda: self.models.ask_gguf())
        file_menu.addAction("New chat", lambda: (self.show_panel("Chat"), self.session.new_conversation()))
        install_export_menu(self, file_menu)  # Export configuration…, Presets…
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
        engine_menu.addAction("Restart engine", self.engine_session.restart)
        self.reload_action = engine_menu.addAction("Load the last model at launch")
        self.reload_action.setCheckable(True)
        self.reload_action.setChecked(reload_at_launch())
        self.reload_action.toggled.connect(lambda on: write_json("engine/reload_at_launch", on))
        engine_menu.addAction("Copy address and API key", self._copy_address)
        install_backend_menu(self, engine_menu)  # built-in or vLLM, remembered
        engine_menu.addAction("Compare endpoints…", self.show_compare)
        engine_menu.addAction("Several nodes (Ray)…", self.show_nodes)
        help_menu = self.menuBar().addMenu("&Help")
        help_menu.addAction("Diagnostics…", self.show_diagnostics)
        help_menu.addAction("About", lambda: QMessageBox.about(
            self, "DeepSeek Desktop", "Run language models on your own machine.\n"
            "The engine is an OpenAI-compatible server; see the README for its API."))

    # ------------------------------------------------------------------ panels, built when first shown
    def panel(self, name: str) -> QWidget:
        if name not in self._panels:
            widget = self._panel_factories()[name]()
            self._panels[name] = widget
            index = PANELS.index(name)
            stand_in = self.stack.widget(index)
            self.stack.insertWidget(index, widget)
            self.stack.removeWidget(stand_in)
            stand_in.deleteLater()
            if self.nav.currentRow() >= 0:  # removing the stand-in may have moved the current page
                self.stack.setCurrentIndex(self.nav.currentRow())
        return self._panels[name]

    def _panel_factories(self) -> dict[str, Callable[[], QWidget]]:
        return {"Models": self._make_models, "Chat": self._make_chat, "Monitor": self._make_monitor,
                "Tuning": self._make_tuning,
                "Search": self._make_search, "Logs": self._make_logs}

    def _make_models(self) -> QWidget:
        from deepseek_desktop.panels.models import ModelsPanel

        panel = ModelsPanel(self.library, self.notifier)
        panel.follow(self.engine_session)
        return panel

    def _make_chat(self) -> QWidget:
        from deepseek_desktop.panels.chat import ChatPanel

        panel = ChatPanel(self.session, self.notifier, self.theme)
        panel.wants_models_panel.connect(lambda: self.show_panel("Models"))
        panel.wants_demo.connect(self.fetch_and_load_demo)
        panel.follow(self.engine_session, self.library)
        panel.follow_documents(self.search_model)
        return panel

    def _make_monitor(self) -> QWidget:
        from deepseek_desktop.panels.monitor import MonitorPanel

        panel = MonitorPanel(self.telemetry, theme=self.theme, notifier=self.notifier)
        panel.restore_settings(settings())
        return panel

    def _make_tuning(self) -> QWidget:
        from deepseek_desktop.panels.tuning import TuningPanel
        from deepseek_desktop.state.tuning import TuningModel

        return TuningPanel(TuningModel(self.engine_session, self.notifier, self), self.notifier, self.theme)

    @property
    def search_model(self):
        """The document collections and queries (Search panel; the Chat's "Use documents")."""
        if self._search_model is None:
            from deepseek_desktop.state.search import SearchModel

            self._search_model = SearchModel(self.engine_session, self.notifier, self)
        return self._search_model

    def _make_search(self) -> QWidget:
        from deepseek_desktop.panels.search import SearchPanel
        from deepseek_desktop.state.search_ask import AskModel

        ask = AskModel(self.engine_session.ready_client, lambda: self.engine_session.model_id, self.notifier, self)
        return SearchPanel(self.search_model, ask, self.notifier, self.theme)

    def _make_logs(self) -> QWidget:
        from deepseek_desktop.panels.logs import LogsPanel

        return LogsPanel(self.notifier)  # it shows the notices posted before it was built too

    @property
    def models(self):
        return self.panel("Models")

    @property
    def chat(self):
        return self.panel("Chat")

    @property
    def monitor(self):
        return self.panel("Monitor")

    @property
    def tuning(self):
        return self.panel("Tuning")

    @property
    def search(self):
        return self.panel("Search")

    @property
    def logs(self):
        return self.panel("Logs")

    def _show_row(self, row: int) -> None:
        if 0 <= row < len(PANELS):
            self.panel(PANELS[row])
        self.stack.setCurrentIndex(row)

    def show_panel(self, name: str) -> None:
        self.nav.setCurrentRow(PANELS.index(name))

    def set_theme(self, name: str) -> None:
        self.theme = apply_theme(name)
        if "Chat" in self._panels:
            self.chat.set_theme(self.theme)
        if "Monitor" in self._panels:
            self.monitor.set_theme(self.theme)
        if "Tuning" in self._panels:
            self.tuning.set_theme(self.theme)
        if "Search" in self._panels:
            self.search.set_theme(self.theme)
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
        self.telemetry.restore_settings(store)
        remembered = store.value("window/panel", "Chat")
        self.show_panel(remembered if remembered in PANELS else "Chat")

    def save_settings(self) -> None:
        store = settings()
        store.setValue("window/geometry", self.saveGeometry())
        store.setValue("window/panel", PANELS[self.nav.currentRow()])
        store.setValue("window/theme", self.theme)
        self.telemetry.save_settings(store)
        if "Monitor" in self._panels:
            self.monitor.save_settings(store)
        store.sync()

    # ------------------------------------------------------------------ actions
    def fetch_and_load_demo(self) -> None:
        from engine.paths import demo_model_dir, is_model_folder

        if is_model_folder(demo_model_dir()):
            self.engine_session.load_when_ready({"path": str(demo_model_dir())})
        elif self.library.fetch_demo():
            self._load_fetched = True

    def _on_job_finished(self, ok: bool, _message: str, path: str) -> None:
        if ok and self._load_fetched:
            self._load_fetched = False
            self.engine_session.load_when_ready({"path": path})

    def show_compare(self) -> QWidget:
        """The same workload on this engine and other URLs (vLLM, another machine), side by side."""
        from deepseek_desktop.state.compare import CompareRun
        from deepseek_desktop.widgets.compare_dialog import CompareDialog

        client = self.engine_session.client
        here = [{"url": client.url, "api_key": client.api_key, "label": self.engine_session.backend or "attached"}
                ] if client is not None else []
        dialog = CompareDialog(CompareRun(self), here, self)
        dialog.show()
        return dialog

    def show_nodes(self) -> QWidget:
        """The model served (or last loaded) exported for vLLM over several nodes, with the commands."""
        from deepseek_desktop.widgets.nodes_dialog import NodesDialog

        model = self.engine_session.served_path or (self.engine_session.last_load or {}).get("path")
        dialog = NodesDialog(model, self)
        dialog.show()
        return dialog

    def show_diagnostics(self) -> QWidget:
        """``deepseek-engine doctor`` for the model served (or last loaded), with Copy."""
        from deepseek_desktop.widgets.diagnostics_dialog import DiagnosticsDialog

        model = self.engine_session.served_path or (self.engine_session.last_load or {}).get("path")
        dialog = DiagnosticsDialog(model, self)
        dialog.show()
        return dialog

    def _copy_address(self) -> None:
        client = self.engine_session.client
        if client is not None:
            QGuiApplication.clipboard().setText(f"{client.url}  API key: {client.api_key}")
            self.notifier.info("engine address and API key copied")

    def _on_alert(self, message: str, since: float) -> None:
        self.notifier.post("warning", f"{message} (since {time.strftime('%H:%M:%S', time.localtime(since))})",
                           source="alert")

    # ------------------------------------------------------------------ lifecycle
    def event(self, event) -> bool:
        if event.type() == QEvent.Type.Paint and not self._painted:
            self._painted = True
            self.first_painted.emit(time.time())
        return super().event(event)

    def closeEvent(self, event) -> None:
        self.save_settings()
        if "Tuning" in self._panels:  # a sweep under way puts back the settings it found
            self.tuning.shutdown()
        if "Search" in self._panels:  # an answer streaming stops, file previews close
            self.search.shutdown()
        self.session.stop()
        self.telemetry.stop()
        self.library.stop_job()
        self.engine_session.close()  # ends the event stream and stops the worker the app started
        self.store.close()
        if self._monitor_window is not None:
            self._monitor_window.close()
        super().closeEvent(event)
