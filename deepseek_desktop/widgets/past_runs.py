"""PastRuns: the sweeps kept in the data folder, newest first, to reopen one (nothing is measured
again) or draw its front under the one shown (before / after a change)."""

from __future__ import annotations

from typing import Optional

from PySide6.QtCore import Signal
from PySide6.QtWidgets import QComboBox, QHBoxLayout, QLabel, QPushButton, QWidget


class PastRuns(QWidget):
    open_requested = Signal(str, bool)   # the run's path, overlay (True) or shown (False)
    clear_overlay_requested = Signal()

    def __init__(self, parent: Optional[QWidget] = None):
        super().__init__(parent)
        self.runs_box = QComboBox()
        self.runs_box.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
        self.runs_box.setMinimumContentsLength(30)
        self.open_button = QPushButton("Open")
        self.open_button.setToolTip("Show this kept run (nothing is measured again)")
        self.open_button.clicked.connect(lambda: self._open(overlay=False))
        self.overlay_button = QPushButton("Overlay")
        self.overlay_button.setToolTip("Draw this run's front under the one shown (before / after a change)")
        self.overlay_button.clicked.connect(lambda: self._open(overlay=True))
        self.clear_overlay_button = QPushButton("Clear overlay")
        self.clear_overlay_button.clicked.connect(self.clear_overlay_requested)
        row = QHBoxLayout(self)
        row.setContentsMargins(0, 0, 0, 0)
        row.addWidget(QLabel("Past runs"))
        row.addWidget(self.runs_box, 1)
        for button in (self.open_button, self.overlay_button, self.clear_overlay_button):
            row.addWidget(button)

    def show_runs(self, runs: list) -> None:
        """``runs``: [(path, title)]; the run chosen stays chosen where it is still listed."""
        current = self.runs_box.currentData()
        self.runs_box.blockSignals(True)
        self.runs_box.clear()
        for path, title in runs:
            self.runs_box.addItem(title, path)
        index = self.runs_box.findData(current)
        self.runs_box.setCurrentIndex(max(index, 0))
        self.runs_box.blockSignals(False)
        has = bool(runs)
        self.open_button.setEnabled(has)
        self.overlay_button.setEnabled(has)

    def _open(self, overlay: bool) -> None:
        path = self.runs_box.currentData()
        if path:
            self.open_requested.emit(path, overlay)
