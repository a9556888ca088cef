"""ToolCallCard: one call a reply made: the function's name, its arguments (indented JSON), and
while it waits for a result, a box to paste the result in (the built-in ``search_documents``
runs by itself). The card tells its message through ``result_submitted``."""

from __future__ import annotations

from PySide6.QtCore import Signal
from PySide6.QtGui import QFontDatabase
from PySide6.QtWidgets import QFrame, QHBoxLayout, QLabel, QPlainTextEdit, QPushButton, QVBoxLayout

from deepseek_desktop.state.chat_tools import SEARCH_TOOL_NAME, pretty_json
from deepseek_desktop.widgets.labels import WrapLabel


class ToolCallCard(QFrame):
    result_submitted = Signal(str, str)  # call id, result text

    def __init__(self, call: dict, parent=None):
        super().__init__(parent)
        self.call = call
        self.setObjectName("tool_call")
        layout = QVBoxLayout(self)
        layout.setContentsMargins(8, 6, 8, 6)
        self.title = QLabel()
        self.title.setObjectName("tool_call_title")
        self.arguments = QPlainTextEdit(readOnly=True)
        self.arguments.setFont(QFontDatabase.systemFont(QFontDatabase.SystemFont.FixedFont))
        self.arguments.setMaximumHeight(110)
        self.waiting = WrapLabel()
        self.waiting.setObjectName("tool_call_waiting")
        self.result_box = QPlainTextEdit(placeholderText=f"Paste what {call['name'] or 'the tool'} returned; "
                                                         "the model goes on from it")
        self.result_box.setMaximumHeight(80)
        self.send_button = QPushButton("Send result")
        self.send_button.clicked.connect(self._submit)
        row = QHBoxLayout()
        row.addWidget(self.result_box, 1)
        row.addWidget(self.send_button)
        for widget in (self.title, self.arguments, self.waiting):
            layout.addWidget(widget)
        layout.addLayout(row)
        self.update_call(call)
        self.set_pending(False, False)

    def update_call(self, call: dict) -> None:
        """The call as it grows while its arguments stream."""
        self.call = call
        self.title.setText(f"Calls {call['name'] or '…'}")
        text = pretty_json(call["arguments"]) or call["arguments"]
        if self.arguments.toPlainText() != text:
            self.arguments.setPlainText(text)

    def set_pending(self, pending: bool, busy: bool) -> None:
        """Waiting for its result (the box shows), or answered / no longer the conversation's end."""
        built_in = self.call["name"] == SEARCH_TOOL_NAME
        self.waiting.setText("Searching your documents through the engine…" if pending and built_in else "")
        self.waiting.setVisible(pending and built_in)
        for widget in (self.result_box, self.send_button):
            widget.setVisible(pending and not built_in)
        self.send_button.setEnabled(not busy)

    def _submit(self) -> None:
        text = self.result_box.toPlainText().strip()
        if not text:
            self.result_box.setPlaceholderText("Paste the tool's result first (any text; JSON is usual)")
            return
        self.result_submitted.emit(self.call["id"], text)
