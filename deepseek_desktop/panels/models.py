"""ModelsPanel: the model library (catalog table, folders, demo fetch, GGUF import), the memory
estimate for the chosen options before anything loads, and load / cancel / unload with progress."""

from __future__ import annotations

import os
import re
from typing import Optional

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (
    QAbstractItemView, QCheckBox, QComboBox, QDialog, QDialogButtonBox, QDoubleSpinBox, QFileDialog,
    QFormLayout, QFrame, QGridLayout, QHBoxLayout, QHeaderView, QLabel, QListWidget, QProgressBar,
    QPushButton, QSpinBox, QSplitter, QTableWidget, QTableWidgetItem, QVBoxLayout, QWidget,
)

from deepseek_desktop.state.engine_session import EngineSession, progress_text
from deepseek_desktop.state.library import ModelLibrary
from deepseek_desktop.widgets.labels import ElidedLabel, WrapLabel
from engine.states import ModelState
from engine.memory import format_bytes

COLUMNS = ["Name", "Type", "Parameters", "Size", "Dtype", "Context", "Loadable", "Folder"]
LOADABLE_COLUMN, FOLDER_COLUMN = 6, 7
VERDICT_TEXT = {"fits": "Fits", "tight": "Tight", "will-not-fit": "Will not fit", "unknown": "Unknown"}


def format_params(n: Optional[int]) -> str:
    if not n:
        return "N/A"
    for unit, scale in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= scale:
            return f"{n / scale:.1f}{unit}"
    return str(n)


JOB_PERCENT = re.compile(r"\((\d{1,3})%\)$|(\d{1,3})%\|")


def same_path(a: Optional[str], b: Optional[str]) -> bool:
    """Without touching the disk (the GUI thread): "/m/x/" and "/m/x" are the same folder."""
    return bool(a and b) and os.path.normpath(a) == os.path.normpath(b)

class FoldersDialog(QDialog):
    def __init__(self, folders: list[str], hf_cache: bool, parent=None):
        super().__init__(parent)
        self.setWindowTitle("Model folders")
        layout = QVBoxLayout(self)
        self.list = QListWidget()
        self.list.addItems(folders)
        row = QHBoxLayout()
        add, remove = QPushButton("Add…"), QPushButton("Remove")
        add.clicked.connect(self._add)
        remove.clicked.connect(lambda: [self.list.takeItem(self.list.row(i)) for i in self.list.selectedItems()])
        row.addWidget(add)
        row.addWidget(remove)
        row.addStretch(1)
        self.hf_cache = QCheckBox("Also list the Hugging Face cache", checked=hf_cache)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel)
        buttons.accepted.connect(self.accept)
        buttons.rejected.connect(self.reject)
        for widget in (QLabel("Folders scanned for models (each folder and two levels below it):"), self.list):
            layout.addWidget(widget)
        layout.addLayout(row)
        layout.addWidget(self.hf_cache)
        layout.addWidget(buttons)

    def _add(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Add a model folder")
        if folder:
            self.list.addItem(folder)

    def folders(self) -> list[str]:
        return [self.list.item(i).text() for i in range(self.list.count())]


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
        self.loaded_path: Optional[str] = None
        self._loading_path: Optional[str] = None
        self.last_estimate = None
        self._outcome: Optional[tuple[str, str, str]] = None  # path, "loaded in …", predicted vs actual
        self._build()
        library.entries_changed.connect(self._fill_table)
        library.estimate_ready.connect(self._show_estimate)
        library.estimate_failed.connect(lambda m: self._set_verdict("unknown", m))
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
        self.job_bar = QProgressBar(maximum=0, maximumWidth=160)  # busy until a step reports a percentage
        self.job_bar.hide()
        self.job_label = ElidedLabel(elide=Qt.TextElideMode.ElideMiddle)  # a step can name a deep folder
        bar.addWidget(self.job_bar)
        bar.addWidget(self.job_label, 1)
        layout.addLayout(bar)

        splitter = QSplitter()
        self.table = QTableWidget(0, len(COLUMNS))
        self.table.setHorizontalHeaderLabels(COLUMNS)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.verticalHeader().hide()
        header = self.table.horizontalHeader()
        header.setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        # The folder tells two copies of a model apart; it takes the room left, elided in the middle.
        header.setSectionResizeMode(FOLDER_COLUMN, QHeaderView.ResizeMode.Stretch)
        header.setMinimumSectionSize(40)
        self.table.setTextElideMode(Qt.TextElideMode.ElideMiddle)
        self.table.setWordWrap(False)
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
        card = QFrame()
        card.setObjectName("card")
        layout = QVBoxLayout(card)
        self.name_label = ElidedLabel("Select a model")
        self.name_label.setObjectName("cta_title")
        self.path_label = ElidedLabel(elide=Qt.TextElideMode.ElideMiddle)  # the whole path in its tooltip
        self.path_label.setObjectName("hint")
        layout.addWidget(self.name_label)
        layout.addWidget(self.path_label)

        form = QFormLayout()
        self.dtype_box = QComboBox()
        self.dtype_box.addItems(["auto", "bfloat16", "float16", "float32"])
        self.device_box = QComboBox()
        self.device_box.addItems(self.library.devices)
        self.library.devices_changed.connect(self._set_devices)
        self.context_box = QSpinBox(minimum=16, maximum=1_048_576, singleStep=256, value=2048)
        self.batch_box = QSpinBox(minimum=1, maximum=256, value=1)
        self.chunk_box = QDoubleSpinBox(minimum=1, maximum=4096, value=64, suffix=" MB")
        self.timeout_box = QSpinBox(minimum=10, maximum=86400, value=1800, suffix=" s")
        for label, widget in (("Dtype", self.dtype_box), ("Device", self.device_box), ("Context", self.context_box),
                              ("Batch size", self.batch_box), ("Chunk size", self.chunk_box),
                              ("Load timeout", self.timeout_box)):
            form.addRow(label, widget)
        for box in (self.dtype_box, self.device_box):
            box.currentTextChanged.connect(self._estimate)
        for spin in (self.context_box, self.batch_box):
            spin.valueChanged.connect(self._estimate)
        layout.addLayout(form)

        self.verdict_label = WrapLabel("—")
        self.verdict_label.setObjectName("verdict")
        self.estimate_grid = QGridLayout()
        self.estimate_values: dict[str, QLabel] = {}
        for row, key in enumerate(["Weights", "KV cache", "Activations", "Reserve", "Total needed", "Free on device"]):
            self.estimate_grid.addWidget(QLabel(key), row, 0)
            value = QLabel("—")
            value.setAlignment(Qt.AlignmentFlag.AlignRight)
            self.estimate_values[key] = value
            self.estimate_grid.addWidget(value, row, 1)
        layout.addWidget(QLabel("Memory estimate"))
        layout.addWidget(self.verdict_label)
        layout.addLayout(self.estimate_grid)

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

    def _set_devices(self, devices: list) -> None:
        current = self.device_box.currentText()
        self.device_box.clear()
        self.device_box.addItems(devices)
        self.device_box.setCurrentText(current)

    # -- catalog
    def _fill_table(self, entries: list) -> None:
        previous = self.selected.path if self.selected else self.loaded_path
        self.table.setRowCount(len(entries))
        for row, entry in enumerate(entries):
            loadable = "yes" if entry.loadable else f"no: {entry.problem}"
            folder = os.path.dirname(os.path.normpath(entry.path))
            values = [entry.name, entry.model_type or entry.architecture or "?", format_params(entry.params),
                      format_bytes(entry.size_bytes), entry.dtype or "?",
                      f"{entry.context_length:,}" if entry.context_length else "?", loadable, folder]
            tips = {1: entry.architecture or "", LOADABLE_COLUMN: loadable, FOLDER_COLUMN: entry.path}
            for column, value in enumerate(values):
                item = QTableWidgetItem(value)
                item.setData(Qt.ItemDataRole.UserRole, entry)
                item.setToolTip(tips.get(column, ""))
                self.table.setItem(row, column, item)
            if same_path(entry.path, previous):
                self.table.selectRow(row)
        self._mark_loaded_row()
        self.empty_label.setVisible(not entries)

    def _mark_loaded_row(self) -> None:
        """The model the engine serves reads in bold (two copies of a model differ by folder)."""
        for row in range(self.table.rowCount()):
            loaded = same_path(self.table.item(row, 0).data(Qt.ItemDataRole.UserRole).path, self.loaded_path)
            for column in range(self.table.columnCount()):
                item = self.table.item(row, column)
                font = item.font()
                font.setBold(loaded)
                item.setFont(font)

    def select_path(self, path: str) -> bool:
        for row in range(self.table.rowCount()):
            if same_path(self.table.item(row, 0).data(Qt.ItemDataRole.UserRole).path, path):
                self.table.selectRow(row)
                return True
        return False

    def _on_select(self) -> None:
        items = self.table.selectedItems()
        self.selected = items[0].data(Qt.ItemDataRole.UserRole) if items else None
        entry = self.selected
        self.name_label.setText(entry.name if entry else "Select a model")
        self.path_label.setText(entry.path if entry else "")
        if entry and entry.context_length:
            self.context_box.setMaximum(entry.context_length)  # the engine caps at the model's own
            self.context_box.setValue(min(entry.context_length, 4096))
        self._show_load_outcome()
        self._update_buttons()
        self._estimate()

    def _estimate(self) -> None:
        if self.selected is None:
            return
        if not self.selected.loadable:
            self._set_verdict("will-not-fit", f"cannot load: {self.selected.problem}")
            return
        self.library.estimate(self.selected, self.dtype_box.currentText(), self.device_box.currentText(),
                              self.context_box.value(), self.batch_box.value())

    def _show_estimate(self, result) -> None:
        self.last_estimate = result
        values = {"Weights": result.weights_bytes, "KV cache": result.kv_cache_bytes,
                  "Activations": result.activation_bytes, "Reserve": result.reserve_bytes,
                  "Total needed": result.total_bytes, "Free on device": result.device_free_bytes}
        for key, value in values.items():
            self.estimate_values[key].setText(format_bytes(value))
        free = format_bytes(result.device_free_bytes)
        self._set_verdict(result.verdict, f"{format_bytes(result.total_bytes)} needed of {free} free on "
                                          f"{result.device} ({result.dtype}, {result.batch} × {result.context:,} tokens)")

    def _set_verdict(self, verdict: str, detail: str) -> None:
        self.verdict_label.setText(f"{VERDICT_TEXT.get(verdict, verdict)} — {detail}")
        self.verdict_label.setProperty("verdict", verdict)
        self.verdict_label.style().unpolish(self.verdict_label)
        self.verdict_label.style().polish(self.verdict_label)

    # -- load
    def load_body(self) -> dict:
        return {"path": self.selected.path, "dtype": self.dtype_box.currentText(),
                "device": self.device_box.currentText(), "chunk_size_mb": self.chunk_box.value(),
                "load_timeout_s": float(self.timeout_box.value()), "max_context": self.context_box.value()}

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
                self._mark_loaded_row()
                self._show_load_outcome()
            elif state in (ModelState.IDLE, ModelState.ERROR):
                # Unloaded (or failed): what the last load measured no longer describes anything.
                self.loaded_path, self._outcome = None, None
                self.progress.setValue(0)
                self.progress_label.setText("load cancelled" if event.get("cancelled") else
                                            (f"load failed: {event['error']}" if event.get("error") else ""))
                self.result_label.clear()
                self._mark_loaded_row()
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
        engine.loaded_path.connect(self.set_loaded_path)
        engine.load_refused.connect(self._on_load_refused)
        if engine.last_state_event is not None:
            self.on_engine_event(engine.last_state_event)
        self.set_engine_available(engine.available)
        if engine.served_path:
            self.set_loaded_path(engine.served_path)

    def _on_load_refused(self, message: str) -> None:
        self.loading = False
        self.progress.setMaximum(1000)
        self.progress.setValue(0)
        self.progress_label.setText(f"not loaded: {message}")
        self._update_buttons()

    def set_engine_available(self, available: bool) -> None:
        self.engine_available = available
        self._update_buttons()

    def set_loaded_path(self, path: Optional[str]) -> None:
        """What the engine says it serves (``/admin/status``), selected in the table."""
        self.loaded_path = path
        self._mark_loaded_row()
        if path:
            self.select_path(path)
        self._update_buttons()

    def _update_buttons(self) -> None:
        available = self.engine_available
        self.load_button.setEnabled(available and not self.loading and bool(self.selected and self.selected.loadable))
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

    def _job_progress(self, line: str) -> None:
        # "downloading …: 45.2 of 92.9 MB (49%)" or a tqdm bar ("… 64%|███▍ | 174/272"): a
        # measured bar; other steps: busy
        match = JOB_PERCENT.search(line)
        self.job_bar.setMaximum(100 if match else 0)
        if match:
            self.job_bar.setValue(int(match[1] or match[2]))
        self.job_bar.show()
        self.demo_button.setEnabled(False)
        self.import_button.setEnabled(False)
        self.job_label.setText(line)

    def _job_finished(self, ok: bool, message: str, path: str) -> None:
        self.job_bar.hide()
        self.demo_button.setEnabled(True)
        self.import_button.setEnabled(True)
        self.job_label.setText(message)
