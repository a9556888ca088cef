"""JobStatus: a library job's (demo fetch, GGUF import) progress on one line: a bar, measured
when the step reports a percentage and busy otherwise, and the step's text, elided."""

from __future__ import annotations

from typing import Optional

from PySide6.QtCore import Qt
from PySide6.QtWidgets import QHBoxLayout, QProgressBar, QWidget

from deepseek_desktop.widgets.labels import ElidedLabel

class JobStatus(QWidget):
    def __init__(self, parent=None):
        super().__init__(parent)
        row = QHBoxLayout(self)
        row.setContentsMargins(0, 0, 0, 0)
        self.bar = QProgressBar(maximum=0, maximumWidth=160)  # busy until a step reports a percentage
        self.bar.hide()
        self.label = ElidedLabel(elide=Qt.TextElideMode.ElideMiddle)  # a step can name a deep folder
        row.addWidget(self.bar)
        row.addWidget(self.label, 1)

    def show_step(self, line: str, percent: Optional[int] = None) -> None:
        """``percent``: the library's reading of the step (None: busy)."""
        self.bar.setMaximum(100 if percent is not None else 0)
        if percent is not None:
            self.bar.setValue(percent)
        self.bar.show()
        self.label.setText(line)

    def show_outcome(self, message: str) -> None:
        self.bar.hide()
        self.label.setText(message)
