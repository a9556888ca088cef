"""ReplyFormatForm: a conversation's JSON-schema mode and tools, edited as pasted JSON. It shows
what the conversation keeps, reads back what the user wrote (checked by ``state.chat_tools``),
and says what is wrong in place, leaving the text as it was typed."""

from __future__ import annotations

import json
from typing import Optional

from PySide6.QtCore import Signal
from PySide6.QtGui import QFontDatabase
from PySide6.QtWidgets import QCheckBox, QComboBox, QFormLayout, QFrame, QPlainTextEdit, QPushButton

from deepseek_desktop.state.chat_tools import SEARCH_TOOL_NAME, parse_json_schema, parse_tools
from deepseek_desktop.widgets.labels import WrapLabel

SCHEMA_HINT = ('A JSON schema for every reply, e.g. {"type": "object", "properties": {"name": {"type": "string"}}, '
               '"required": ["name"]} (or OpenAI\'s {"name": ..., "schema": {...}}). Empty: free text.')
TOOLS_HINT = ('Tools the model may call, a JSON list: [{"type": "function", "function": {"name": "get_weather", '
              '"description": "...", "parameters": {"type": "object", "properties": {...}}}}]')
CHOICES = [("The model decides when to call (auto)", "auto"),
           ("A call after each of my messages (required)", "required")]


def _monospace(edit: QPlainTextEdit) -> QPlainTextEdit:
    edit.setFont(QFontDatabase.systemFont(QFontDatabase.SystemFont.FixedFont))
    edit.setFixedHeight(90)
    return edit


class ReplyFormatForm(QFrame):
    apply_requested = Signal()

    def __init__(self, parent=None):
        super().__init__(parent)
        self.setObjectName("card")
        form = QFormLayout(self)
        self.schema_edit = _monospace(QPlainTextEdit(placeholderText=SCHEMA_HINT))
        self.tools_edit = _monospace(QPlainTextEdit(placeholderText=TOOLS_HINT))
        self.search_tool_box = QCheckBox(f"Offer {SEARCH_TOOL_NAME} (the model searches this conversation's documents)")
        self.tool_choice = QComboBox()
        for text, value in CHOICES:
            self.tool_choice.addItem(text, value)
        self.problem = WrapLabel()
        self.problem.setObjectName("refusal")  # the themes draw it red
        self.problem.hide()
        apply = QPushButton("Apply to this conversation")
        apply.clicked.connect(self.apply_requested.emit)
        form.addRow("JSON schema", self.schema_edit)
        form.addRow("Tools", self.tools_edit)
        form.addRow("", self.search_tool_box)
        form.addRow("Tool calls", self.tool_choice)
        form.addRow(self.problem)
        form.addRow(apply)
        self.set_documents(None)
        self._shown: tuple = self._texts()

    def set_documents(self, collection: Optional[str]) -> None:
        """The built-in search tool is offered only for a conversation that uses documents."""
        self.search_tool_box.setEnabled(collection is not None)
        self.search_tool_box.setToolTip(f"Searches the collection {collection!r}" if collection
                                        else "Choose documents for this conversation first (Use documents)")

    def show_settings(self, settings: dict) -> None:
        """What the conversation keeps, as editable text."""
        schema = settings.get("json_schema")
        self.schema_edit.setPlainText(json.dumps(schema if schema and schema.get("name") != "reply"
                                                 else (schema or {}).get("schema"), indent=2) if schema else "")
        tools = settings.get("tools") or []
        self.tools_edit.setPlainText(json.dumps(tools, indent=2) if tools else "")
        self.search_tool_box.setChecked(bool(settings.get("search_tool")))
        self.tool_choice.setCurrentIndex(max(0, self.tool_choice.findData(settings.get("tool_choice") or "auto")))
        self.show_problem("")
        self._shown = self._texts()

    def _texts(self) -> tuple:
        return (self.schema_edit.toPlainText(), self.tools_edit.toPlainText(), self.search_tool_box.isChecked(),
                self.tool_choice.currentData())

    @property
    def changed(self) -> bool:
        """Edited since the conversation's settings were shown or applied."""
        return self._texts() != self._shown

    def read(self) -> tuple[Optional[dict], list[dict], bool, str]:
        """(json_schema, tools, search tool, tool choice) as written.

        Raises:
            SettingsProblem: what is wrong (the text stays as typed).
        """
        return (parse_json_schema(self.schema_edit.toPlainText()), parse_tools(self.tools_edit.toPlainText()),
                self.search_tool_box.isChecked() and self.search_tool_box.isEnabled(), self.tool_choice.currentData())

    def show_problem(self, text: str) -> None:
        self.problem.setText(text)
        self.problem.setVisible(bool(text))

    def summary(self) -> str:
        """For the header's button: what the conversation's replies are held to."""
        schema, tools, search = self._shown[0].strip(), self._shown[1].strip(), self._shown[2]
        if schema:
            return "JSON schema"
        count = (len(json.loads(tools)) if tools.startswith("[") else 1 if tools else 0) + (1 if search else 0)
        return f"Tools ({count})" if count else "Format && tools"  # "&&": a button shows one &
