"""ModelsPanel: the model library (catalog table, folders, demo fetch, GGUF import), the memory
estimate for the chosen options before anything loads, and load / cancel / unload with progress.
The table, the options form, the estimate, the job line and the folders dialog are widgets of
their own (``deepseek_desktop.widgets``); the panel composes them and runs the load buttons."""

from __future__ import annotations

from typing import Optional

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (
    QFileDialog, QFrame, QHBoxLayout, QLabel, QProgressBar, QPushButton, QSplitter, QVBoxLayout, QWidget,
)

from deepseek_desktop.state.engine_session import EngineSession, progress_text
from deepseek_desktop.state.library import ModelLibrary
from deepseek_desktop.widgets.folders_dialog import FoldersDialog
from deepseek_desktop.widgets.job_status import JobStatus
from deepseek_desktop.widgets.labels import ElidedLabel, WrapLabel
from deepseek_desktop.widgets.load_options import LoadOptionsForm
from deepseek_desktop.widgets.memory_estimate import MemoryEstimateView
from deepseek_desktop.widgets.model_table import ModelTable, same_path
from engine.states import ModelState
from engine.memory import format_bytes


class ModelsPanel(QWidget):
    load_requested = Signal(dict)   # a LoadRequest body
    cancel_requested = Signal()
    unload_requested = Signal()

    def __init__(self, library: ModelLibrary, notifier, parent=None):
        super().__init__(parent)
        self.library = library
        self.notifier = notifier
        self.selected = None
        self.loading = False
        self.engine_available = False
        self.restart_loads = False  # vLLM: Load restarts the engine on the model (no /admin API)
        self.loaded_path: Optional[str] = None
        self._loading_path: Optional[str] = None
        self.last_estimate = None
        self.max_memory: Optional[dict] = None  # the engine's [load] max_memory (set_max_memory)
        self._outcome: Optional[tuple[str, str, str]] = None  # path, "loaded in …", predicted vs actual
        self._build()
        library.devices_changed.connect(self.options.set_devices)
        library.entries_changed.connect(self._fill_table)
        library.estimate_ready.connect(self._show_estimate)
        library.estimate_failed.connect(lambda m: self.estimate.set_verdict("unknown", m))
        library.job_progress.connect(self._job_progress)
        library.job_finished.connect(self._job_finished)
        if library.entries:  # scanned before this panel was first shown
            self._fill_table(library.entries)
        library.start()

    # -- layout
    def _build(self) -> None:
        layout = QVBoxLayout(self)
        bar = QHBoxLayout()
        self.demo_button = QPushButton("Fetch demo model")
        self.demo_button.clicked.connect(self.fetch_demo)
        self.import_button = QPushButton("Import GGUF…")
        self.import_button.clicked.connect(self.ask_gguf)
        folders = QPushButton("Folders…")
        folders.clicked.connect(self._edit_folders)
        refresh = QPushButton("Refresh")
        refresh.clicked.connect(self.library.scan)
        for button in (self.demo_button, self.import_button, folders, refresh):
            bar.addWidget(button)
        self.job = JobStatus()
        self.job_bar, self.job_label = self.job.bar, self.job.label
        bar.addWidget(self.job, 1)
        layout.addLayout(bar)

        splitter = QSplitter()
        self.table = ModelTable()
        self.table.itemSelectionChanged.connect(self._on_select)
        self.empty_label = QLabel("No models found yet. Fetch the demo model, import a GGUF file, or add a folder.")
        self.empty_label.setObjectName("hint")
        left = QWidget()
        left_layout = QVBoxLayout(left)
        left_layout.setContentsMargins(0, 0, 0, 0)
        left_layout.addWidget(self.table, 1)
        left_layout.addWidget(self.empty_label)
        splitter.addWidget(left)
        details = self._build_details()
        details.setMaximumWidth(440)
        splitter.addWidget(details)
        splitter.setStretchFactor(0, 1)
        splitter.setStretchFactor(1, 0)
        splitter.setSizes([800, 360])
        layout.addWidget(splitter, 1)

    def _build_details(self) -> QWidget:
        """The selected model's card: its name, the load options, the estimate, the load buttons."""
        card = QFrame()
        card.setObjectName("card")
        layout = QVBoxLayout(card)
        self.name_label = ElidedLabel("Select a model")
        self.name_label.setObjectName("cta_title")
        self.path_label = ElidedLabel(elide=Qt.TextElideMode.ElideMiddle)  # the whole path in its tooltip
        self.path_label.setObjectName("hint")
        self.options = LoadOptionsForm(self.library.devices)
        self.options.estimate_inputs_changed.connect(self._estimate)
        self.device_box = self.options.device_box
        self.estimate = MemoryEstimateView()
        self.verdict_label, self.estimate_values = self.estimate.verdict_label, self.estimate.values
        for widget in (self.name_label, self.path_label, self.options, self.estimate):
            layout.addWidget(widget)

        buttons = QHBoxLayout()
        self.load_button = QPushButton("Load", enabled=False)
        self.load_button.setObjectName("primary")
        self.load_button.clicked.connect(self.request_load)
        self.cancel_button = QPushButton("Cancel", enabled=False)
        self.cancel_button.clicked.connect(self.cancel_requested.emit)
        self.unload_button = QPushButton("Unload", enabled=False)
        self.unload_button.clicked.connect(self.unload_requested.emit)
        for button in (self.load_button, self.cancel_button, self.unload_button):
            buttons.addWidget(button)
        layout.addLayout(buttons)
        self.progress = QProgressBar(maximum=1000, textVisible=False)
        self.progress_label = ElidedLabel(elide=Qt.TextElideMode.ElideMiddle)
        self.result_label = WrapLabel()
        for widget in (self.progress, self.progress_label, self.result_label):
            layout.addWidget(widget)
        layout.addStretch(1)
        return card

    # -- catalog
    def _fill_table(self, entries: list) -> None:
        self.table.fill(entries, keep=self.selected.path if self.selected else self.loaded_path)
        self.table.mark_loaded(self.loaded_path)
        self.empty_label.setVisible(not entries)

    def select_path(self, path: str) -> bool:
        return self.table.select_path(path)

    def _on_select(self) -> None:
        self.selected = entry = self.table.selected_entry()
        self.name_label.setText(entry.name if entry else "Select a model")
        self.path_label.setText(entry.path if entry else "")
        if entry and entry.context_length:
            self.options.fit_context(entry.context_length)
        if entry:
            self.options.fit_quantization(entry)
        self._show_load_outcome()
        self._update_buttons()
        self._estimate()

    def _estimate(self) -> None:
        if self.selected is None:
            return
        if not self.selected.loadable:
            self.estimate.set_verdict("will-not-fit", f"cannot load: {self.selected.problem}")
            return
        options = self.options
        self.library.estimate(self.selected, options.dtype_box.currentText(), options.device_box.currentText(),
                              options.context_box.value(), options.batch_box.value(),
                              options.quantization_box.currentText(), self.max_memory)

    def set_max_memory(self, limits: Optional[dict]) -> None:
        """The engine's ``[load] max_memory`` ({"cuda:0": "20GiB", …}): the estimate then says which
        layers land on which of those devices, as the load will spread them."""
        if limits != self.max_memory:
            self.max_memory = dict(limits) if limits else None
            self._estimate()

    def _show_estimate(self, result) -> None:
        self.last_estimate = result
        self.estimate.show_estimate(result)

    # -- load
    def load_body(self) -> dict:
        return self.options.load_body(self.selected.path)

    def request_load(self) -> None:
        if self.selected is not None and self.selected.loadable:
            self.show_load_requested()
            self.load_requested.emit(self.load_body())

    def on_engine_event(self, event: dict) -> None:
        kind = event.get("type")
        if kind == "progress":
            total = event.get("bytes_total") or 0
            self.progress.setMaximum(1000)
            self.progress.setValue(int(1000 * event.get("bytes_done", 0) / total) if total else 0)
            self.progress_label.setText(progress_text(event))
        elif kind == "state":
            state = event.get("state")
            self.loading = state == ModelState.LOADING
            self.progress.setMaximum(1000)
            if state == ModelState.LOADING:
                self._loading_path = event.get("path")
                self._outcome = None
                self.progress.setValue(0)
                self.progress_label.setText(f"loading {event.get('path', '')}…")
                self.result_label.clear()
            elif state == ModelState.READY:
                self.loaded_path = event.get("path") or self._loading_path or self.loaded_path
                if event.get("memory_bytes") is not None:
                    self._outcome = (self.loaded_path, f"loaded in {event.get('load_s', 0):.1f} s on "
                                     f"{event.get('device')} ({event.get('dtype')})", self._predicted_vs_actual(event))
                self.table.mark_loaded(self.loaded_path)
                self._show_load_outcome()
            elif state in (ModelState.IDLE, ModelState.ERROR):
                # Unloaded (or failed): what the last load measured no longer describes anything.
                self.loaded_path, self._outcome = None, None
                self.progress.setValue(0)
                self.progress_label.setText("load cancelled" if event.get("cancelled") else
                                            (f"load failed: {event['error']}" if event.get("error") else ""))
                self.result_label.clear()
                self.table.mark_loaded(self.loaded_path)
            self._update_buttons()
        elif kind == "error":
            self.progress_label.setText(event.get("message", "load failed"))

    def _show_load_outcome(self) -> None:
        """"loaded in 3.4 s …" and predicted vs actual memory: only beside the model they describe."""
        if self.loading:
            return
        outcome = self._outcome
        mine = outcome is not None and self.selected is not None and same_path(self.selected.path, outcome[0])
        self.progress.setValue(1000 if mine else 0)
        self.progress_label.setText(outcome[1] if mine else "")
        self.result_label.setText(outcome[2] if mine else "")

    def show_load_requested(self) -> None:
        """At once, before the worker says "loading" (it takes a moment to start): a busy bar."""
        self.loading = True
        self.progress.setMaximum(0)
        self.progress_label.setText(f"asking the engine to load {self.selected.name}…")
        self.result_label.clear()
        self._update_buttons()

    @staticmethod
    def _predicted_vs_actual(event: dict) -> str:
        predicted, actual = event.get("estimated_bytes"), event.get("memory_bytes")
        ratio = f" ({actual / predicted:.2f}× the estimate)" if predicted and actual else ""
        return f"Weights in memory: predicted {format_bytes(predicted)}, actual {format_bytes(actual)}{ratio}"

    def follow(self, engine: EngineSession) -> None:
        """Load, cancel and unload go to ``engine``; its events drive the progress and the
        buttons, from now and as they are now."""
        self.load_requested.connect(engine.load)
        self.cancel_requested.connect(engine.cancel_load)
        self.unload_requested.connect(engine.unload)
        engine.engine_event.connect(self.on_engine_event)
        engine.available_changed.connect(self.set_engine_available)
        engine.available_changed.connect(lambda up: self._read_max_memory(engine) if up else None)
        engine.loaded_path.connect(self.set_loaded_path)
        engine.load_refused.connect(self._on_load_refused)
        if engine.last_state_event is not None:
            self.on_engine_event(engine.last_state_event)
        if not engine.admin_api:
            self.without_admin_api(engine.backend)
        self.set_engine_available(engine.available)
        if engine.available:
            self._read_max_memory(engine)
        if engine.served_path:
            self.set_loaded_path(engine.served_path)

    def _read_max_memory(self, engine: EngineSession) -> None:
        """The engine's ``[load] max_memory`` (GET /admin/config), for the estimate's layer placement."""
        if engine.admin_api and engine.client is not None:
            engine.admin("GET", "/admin/config", None,
                         lambda body: self.set_max_memory((body.get("load") or {}).get("max_memory")))

    def _on_load_refused(self, message: str) -> None:
        self.loading = False
        self.progress.setMaximum(1000)
        self.progress.setValue(0)
        self.progress_label.setText(f"not loaded: {message}")
        self._update_buttons()

    def without_admin_api(self, backend: str) -> None:
        """vLLM: Load restarts it on the selected model; cancel and unload need our /admin API."""
        self.restart_loads = True
        self.load_button.setToolTip(f"{backend} serves one model: Load restarts it on the selected one")
        for button in (self.cancel_button, self.unload_button):
            button.setToolTip(f"needs the built-in engine's /admin API; {backend} has none (Engine → Backend)")

    def set_engine_available(self, available: bool) -> None:
        self.engine_available = available
        self._update_buttons()

    def set_loaded_path(self, path: Optional[str]) -> None:
        """What the engine says it serves (``/admin/status``), selected in the table."""
        self.loaded_path = path
        if self.restart_loads and self.loading:  # vLLM sends no load events: serving it is the end
            self.loading = False
            self.progress.setMaximum(1000)
            self.progress_label.setText("")
        self.table.mark_loaded(self.loaded_path)
        if path:
            self.select_path(path)
        self._update_buttons()

    def _update_buttons(self) -> None:
        available = self.engine_available
        loadable = available or self.restart_loads
        self.load_button.setEnabled(loadable and not self.loading and bool(self.selected and self.selected.loadable))
        self.cancel_button.setEnabled(available and self.loading)
        selected_is_loaded = self.selected is not None and same_path(self.selected.path, self.loaded_path)
        self.unload_button.setEnabled(available and not self.loading and selected_is_loaded)

    # -- jobs
    def fetch_demo(self) -> None:
        self.library.fetch_demo()

    def ask_gguf(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Import a GGUF file", "", "GGUF files (*.gguf)")
        if path:
            self.library.import_gguf(path)

    def _edit_folders(self) -> None:
        dialog = FoldersDialog(self.library.folders, self.library.hf_cache, self)
        if dialog.exec():
            self.library.set_folders(dialog.folders(), dialog.hf_cache.isChecked())

    def _job_progress(self, line: str, percent: Optional[int]) -> None:
        self.job.show_step(line, percent)
        self.demo_button.setEnabled(False)
        self.import_button.setEnabled(False)

    def _job_finished(self, ok: bool, message: str, path: str) -> None:
        self.job.show_outcome(message)
        self.demo_button.setEnabled(True)
        self.import_button.setEnabled(True)
