"""ExportDialog: export the running engine's configuration, or a sweep point, to a file or folder.

    ExportDialog(source, notifier, parent=None)

Args:
    source: what to export, one of
        * an ``engine.export.ExportSource``, ready to render, e.g.
          ``ExportSource.from_sweep(record, index)``: point ``index`` of a sweep record (issue 11's
          JSON as a dict; ``index`` into its ``points``);
        * a callable returning an ``ExportSource``, run off the GUI thread when the dialog opens,
          e.g. ``lambda: engine.export.from_engine(url, api_key)`` for the running engine.
    notifier: the app's ``Notifier``: a finished export is posted as info, every failure as an
        error (and shown in the dialog, which stays open).

Shortcuts: ``ExportDialog.for_engine(url, api_key, notifier, parent)`` and
``ExportDialog.for_sweep_point(record, index, notifier, parent)``.

The dialog picks a format (``engine.export.FORMATS``), shows what the export will say did not map
before anything is written, and writes atomically off the GUI thread: a failed export leaves no
partial file. ``exported`` carries the written paths.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Optional, Union

from PySide6.QtCore import Signal
from PySide6.QtWidgets import (
    QComboBox, QDialog, QDialogButtonBox, QFileDialog, QFormLayout, QHBoxLayout, QLabel, QLineEdit, QPlainTextEdit,
    QPushButton, QVBoxLayout, QWidget,
)

from deepseek_desktop.notifier import Notifier
from deepseek_desktop.tasks import run_task

SourceLike = Union["ExportSource", Callable[[], "ExportSource"]]  # noqa: F821 (engine.export, imported lazily)


class ExportDialog(QDialog):
    exported = Signal(list)   # the written paths (str)
    source_ready = Signal()   # the source was read (tests wait on it)

    def __init__(self, source: SourceLike, notifier: Notifier, parent: Optional[QWidget] = None):
        super().__init__(parent)
        from engine.export import FORMATS

        self.setWindowTitle("Export configuration")
        self.notifier = notifier
        self.source = None
        self._formats = FORMATS
        self.origin = QLabel("reading the source…")
        self.origin.setWordWrap(True)
        self.format = QComboBox()
        for name, spec in FORMATS.items():
            self.format.addItem(f"{name} — {spec.description}", name)
        self.path = QLineEdit()
        browse = QPushButton("Browse…")
        browse.clicked.connect(self._browse)
        self.preview = QPlainTextEdit()
        self.preview.setReadOnly(True)
        self.preview.setMinimumHeight(220)
        self.error = QLabel()
        self.error.setObjectName("error")
        self.error.setWordWrap(True)
        self.buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Cancel)
        self.export_button = self.buttons.addButton("Export", QDialogButtonBox.ButtonRole.AcceptRole)
        self.export_button.setEnabled(False)
        self.export_button.clicked.connect(self.start_export)
        self.buttons.rejected.connect(self.reject)
        self._layout(browse)
        self.format.currentIndexChanged.connect(self._on_format)
        self._on_format()
        self._read(source)

    @classmethod
    def for_engine(cls, url: str, api_key: Optional[str], notifier: Notifier,
                   parent: Optional[QWidget] = None) -> "ExportDialog":
        """The configuration in force on the engine at ``url`` (ours, or another OpenAI-compatible server)."""
        from engine.export import from_engine

        return cls(lambda: from_engine(url, api_key), notifier, parent)

    @classmethod
    def for_sweep_point(cls, record: dict[str, Any], index: int, notifier: Notifier, parent: Optional[QWidget] = None,
                        engine_url: Optional[str] = None, api_key: Optional[str] = None) -> "ExportDialog":
        """Point ``index`` of a sweep record (``engine.tuning``'s JSON, as a dict). With ``engine_url``
        the running engine's configuration is the base (model path, server), since the record
        keeps only the run-time sections; an engine that cannot be read leaves the defaults."""
        from engine.export import ExportError, ExportSource, from_engine

        def load() -> "ExportSource":  # noqa: F821
            base = None
            if engine_url:
                try:
                    base = from_engine(engine_url, api_key).config
                except ExportError:
                    base = None
            return ExportSource.from_sweep(record, index, "sweep", base)

        return cls(load, notifier, parent)

    # ------------------------------------------------------------------ layout
    def _layout(self, browse: QPushButton) -> None:
        row = QHBoxLayout()
        row.addWidget(self.path, 1)
        row.addWidget(browse)
        form = QFormLayout()
        form.addRow("From", self.origin)
        form.addRow("Format", self.format)
        form.addRow("To", row)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addWidget(QLabel("What the export will say (its header):"))
        layout.addWidget(self.preview, 1)
        layout.addWidget(self.error)
        layout.addWidget(self.buttons)
        self.resize(760, 520)

    @property
    def chosen_format(self) -> str:
        return self.format.currentData()

    def set_format(self, name: str) -> None:
        self.format.setCurrentIndex(self.format.findData(name))

    # ------------------------------------------------------------------ source and preview
    def _read(self, source: SourceLike) -> None:
        if callable(source):
            run_task(lambda _: source(), self._on_source, self._on_failed)
        else:
            self._on_source(source)

    def _on_source(self, source) -> None:
        self.source = source
        self.origin.setText(source.origin)
        self.export_button.setEnabled(True)
        self._preview()
        self.source_ready.emit()

    def _on_format(self) -> None:
        from engine.paths import data_dir

        spec = self._formats[self.chosen_format]
        folder = Path(self.path.text()).parent if self.path.text() else data_dir() / "exports"
        self.path.setText(str(folder / spec.suggested))
        self._preview()

    def _preview(self) -> None:
        if self.source is None:
            return
        from engine.export import render

        source, fmt = self.source, self.chosen_format

        def work(_):
            rendered = render(source, fmt)
            main = rendered.files.get("compose.yaml") or next(iter(rendered.files.values()))
            return fmt, header_of(main)

        run_task(work, self._on_preview, self._on_preview_failed)

    def _on_preview(self, result) -> None:
        fmt, text = result
        if fmt == self.chosen_format:
            self.preview.setPlainText(text)
            self.error.clear()
            self.export_button.setEnabled(True)

    def _on_preview_failed(self, message: str) -> None:
        self.preview.setPlainText("")
        self.error.setText(message)
        self.export_button.setEnabled(False)

    def _browse(self) -> None:
        spec = self._formats[self.chosen_format]
        if spec.folder:
            chosen = QFileDialog.getExistingDirectory(self, "Export into folder", str(Path(self.path.text()).parent))
            chosen = str(Path(chosen) / spec.suggested) if chosen else ""
        else:
            chosen, _ = QFileDialog.getSaveFileName(self, "Export to", self.path.text())
        if chosen:
            self.path.setText(chosen)

    # ------------------------------------------------------------------ export
    def start_export(self) -> None:
        """Write the chosen format to the path (off the GUI thread); the dialog closes on success."""
        if self.source is None:
            return
        from engine.export import export

        source, fmt, out = self.source, self.chosen_format, Path(self.path.text()).expanduser()
        self.export_button.setEnabled(False)

        def work(_):
            from engine.paths import data_dir

            if out.parent == data_dir() / "exports":  # the suggested folder is made on first use
                out.parent.mkdir(parents=True, exist_ok=True)
            return export(source, fmt, out)

        run_task(work, self._on_exported, self._on_failed)

    def _on_exported(self, result) -> None:
        paths = [str(p) for p in result.paths]
        where = paths[0] if len(paths) == 1 else str(Path(paths[0]).parent)
        unmapped = f"; {len(result.notes)} settings did not map (listed in its header)" if result.notes else ""
        self.notifier.info(f"exported {self.chosen_format} to {where}{unmapped}")
        self.exported.emit(paths)
        self.accept()

    def _on_failed(self, message: str) -> None:
        self.error.setText(message)
        self.notifier.error(f"export failed: {message}")
        self.export_button.setEnabled(self.source is not None)


def header_of(text: str) -> str:
    """The comment block an export starts with (a run record's ``about`` lines)."""
    if text.lstrip().startswith("{"):
        import json

        return "\n".join(json.loads(text).get("about", []))
    lines = []
    for line in text.splitlines():
        if line.startswith("#!"):
            continue
        if not line.startswith("#"):
            break
        lines.append(line[2:] if line.startswith("# ") else line[1:])
    return "\n".join(lines)
