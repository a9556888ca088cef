"""PresetsDialog: save, list, load, rename, delete and export named presets (engine settings +
sampling defaults; ``engine.presets``, files in ``<data>/presets``).

    PresetsDialog(store, notifier, read_config, apply_preset, current_sampling, parent=None)

Args:
    store: an ``engine.presets.PresetStore``.
    notifier: the app's ``Notifier`` (every outcome and failure is posted there).
    read_config: ``read_config(on_done, on_failed)`` fetches the configuration in force
        (``GET /admin/config``) off the GUI thread; None when no engine runs.
    apply_preset: ``apply_preset(config, sampling)``: the window applies what can change at run time.
    current_sampling: returns the chat's sampling defaults now (saved with the preset).
"""

from __future__ import annotations

from typing import Callable, Optional

from PySide6.QtCore import Qt
from PySide6.QtWidgets import (
    QDialog, QDialogButtonBox, QHBoxLayout, QInputDialog, QLabel, QListWidget, QPushButton, QVBoxLayout, QWidget,
)

from deepseek_desktop.notifier import Notifier


class PresetsDialog(QDialog):
    def __init__(self, store, notifier: Notifier, read_config: Optional[Callable], apply_preset: Callable,
                 current_sampling: Callable[[], dict], parent: Optional[QWidget] = None):
        super().__init__(parent)
        self.setWindowTitle("Presets")
        self.store, self.notifier = store, notifier
        self._read_config, self._apply, self._sampling = read_config, apply_preset, current_sampling
        self.list = QListWidget()
        self.message = QLabel()
        self.message.setWordWrap(True)
        buttons = QVBoxLayout()
        self.buttons: dict[str, QPushButton] = {}
        for label, slot in (("Save current…", self.ask_save), ("Load", self.load_selected),
                            ("Rename…", self.ask_rename), ("Delete", self.delete_selected),
                            ("Export…", self.export_selected)):
            button = QPushButton(label)
            button.clicked.connect(slot)
            buttons.addWidget(button)
            self.buttons[label.rstrip("…")] = button
        buttons.addStretch(1)
        row = QHBoxLayout()
        row.addWidget(self.list, 1)
        row.addLayout(buttons)
        close = QDialogButtonBox(QDialogButtonBox.StandardButton.Close)
        close.rejected.connect(self.reject)
        layout = QVBoxLayout(self)
        layout.addLayout(row, 1)
        layout.addWidget(self.message)
        layout.addWidget(close)
        self.list.currentRowChanged.connect(lambda _row: self._enable())
        self.refresh()

    @property
    def selected(self) -> Optional[str]:
        item = self.list.currentItem()
        return item.text() if item is not None else None

    def refresh(self, select: Optional[str] = None) -> None:
        self.list.clear()
        self.list.addItems(self.store.names())
        matches = self.list.findItems(select, Qt.MatchFlag.MatchExactly) if select else []
        if matches:
            self.list.setCurrentItem(matches[0])
        self._enable()

    def _enable(self) -> None:
        chosen = self.selected is not None
        for name in ("Load", "Rename", "Delete", "Export"):
            self.buttons[name].setEnabled(chosen)
        self.buttons["Save current"].setEnabled(self._read_config is not None)

    def _fail(self, message: str) -> None:
        self.message.setText(message)
        self.notifier.error(message)

    # ------------------------------------------------------------------ actions
    def ask_save(self) -> None:
        name, ok = QInputDialog.getText(self, "Save preset", "Name:")
        if ok and name.strip():
            self.save_current(name)

    def save_current(self, name: str) -> None:
        """Read the configuration in force and save it with the chat's sampling defaults as ``name``."""
        from engine.config import ConfigError, EngineConfig
        from engine.presets import PresetError

        if self._read_config is None:
            self._fail("no engine is running: there is no configuration to save")
            return

        def on_config(public: dict) -> None:
            data = {section: dict(values) for section, values in public.items()}
            data.get("server", {}).pop("keys", None)
            try:
                self.store.save(name, EngineConfig.from_dict(data), self._sampling())
            except (ConfigError, PresetError) as exc:
                self._fail(f"preset not saved: {exc}")
                return
            self.message.setText(f"saved preset {name!r}")
            self.notifier.info(f"saved preset {name!r} in {self.store.folder}")
            self.refresh(select=name.strip())

        self._read_config(on_config, lambda message: self._fail(f"preset not saved: {message}"))

    def load_selected(self) -> None:
        from engine.presets import PresetError

        name = self.selected
        if name is None:
            return
        try:
            config, sampling = self.store.load(name)
        except PresetError as exc:
            self._fail(str(exc))
            return
        self._apply(config, sampling)
        self.message.setText(f"loaded preset {name!r}")

    def ask_rename(self) -> None:
        name = self.selected
        if name is None:
            return
        new, ok = QInputDialog.getText(self, "Rename preset", "New name:", text=name)
        if ok and new.strip():
            self.rename(name, new)

    def rename(self, old: str, new: str) -> None:
        from engine.presets import PresetError

        try:
            self.store.rename(old, new)
        except (PresetError, OSError) as exc:
            self._fail(f"preset not renamed: {exc}")
            return
        self.refresh(select=new.strip())

    def delete_selected(self) -> None:
        from engine.presets import PresetError

        name = self.selected
        if name is None:
            return
        try:
            self.store.delete(name)
        except (PresetError, OSError) as exc:
            self._fail(f"preset not deleted: {exc}")
            return
        self.notifier.info(f"deleted preset {name!r}")
        self.refresh()

    def export_selected(self) -> Optional[QDialog]:
        from engine.export import from_file

        from deepseek_desktop.widgets.export_dialog import ExportDialog

        name = self.selected
        if name is None:
            return None
        path = str(self.store.path(name))
        dialog = ExportDialog(lambda: from_file(path), self.notifier, self)
        dialog.open()
        return dialog
