"""Help → Diagnostics: ``deepseek-engine doctor`` in a dialog, run off the GUI thread, with Copy
(for a bug report). The model checked is the one served or last loaded."""

from __future__ import annotations

from typing import Optional

from PySide6.QtGui import QFontDatabase, QGuiApplication
from PySide6.QtWidgets import QDialog, QDialogButtonBox, QLabel, QPlainTextEdit, QPushButton, QVBoxLayout, QWidget

from deepseek_desktop.tasks import run_task


def _diagnose(model: Optional[str]) -> tuple[str, bool]:
    from engine import doctor

    findings = doctor.diagnose(doctor.read_machine(model))
    return doctor.report(findings), doctor.blocking(findings)


class DiagnosticsDialog(QDialog):
    def __init__(self, model: Optional[str] = None, parent: Optional[QWidget] = None):
        super().__init__(parent)
        self.setWindowTitle("Diagnostics")
        self.resize(820, 480)
        self.model = model
        self.verdict = QLabel("checking…")
        self.text = QPlainTextEdit(readOnly=True)
        self.text.setFont(QFontDatabase.systemFont(QFontDatabase.SystemFont.FixedFont))
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Close)
        self.copy_button = QPushButton("Copy")
        self.copy_button.clicked.connect(self.copy)
        self.again_button = QPushButton("Check again")
        self.again_button.clicked.connect(self.run)
        buttons.addButton(self.copy_button, QDialogButtonBox.ButtonRole.ActionRole)
        buttons.addButton(self.again_button, QDialogButtonBox.ButtonRole.ActionRole)
        buttons.rejected.connect(self.reject)
        layout = QVBoxLayout(self)
        for widget in (self.verdict, self.text, buttons):
            layout.addWidget(widget)
        self.done_once = False
        self.run()

    def run(self) -> None:
        self.again_button.setEnabled(False)
        self.verdict.setText("checking…")
        run_task(lambda _signals: _diagnose(self.model), self._show, self._failed)

    def _show(self, result: tuple[str, bool]) -> None:
        text, blocks = result
        self.text.setPlainText(text)
        self.verdict.setText("Something blocks a model from running here: see FAIL." if blocks
                             else "Nothing blocks a model from running here.")
        self.again_button.setEnabled(True)
        self.done_once = True

    def _failed(self, message: str) -> None:
        self.text.setPlainText(f"the checks failed: {message}")
        self.verdict.setText("Diagnostics could not run.")
        self.again_button.setEnabled(True)
        self.done_once = True

    def copy(self) -> None:
        QGuiApplication.clipboard().setText(self.text.toPlainText())
