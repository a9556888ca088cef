"""KnobRow: one run-time setting of the engine in the Tuning panel: its name (its trade-off in the
tooltip), an editor fitting its type, the value in force beside it, and the engine's refusal
under them."""

from __future__ import annotations

import typing
from typing import Any, Callable

from PySide6.QtWidgets import QCheckBox, QComboBox, QLabel, QLineEdit, QWidget

from deepseek_desktop.state.tuning_settings import TRADE_OFFS, parse_value
from deepseek_desktop.widgets.labels import ElidedLabel


class KnobRow:
    """One run-time setting: its name (tooltip: the trade-off), the value in force, the editor and
    the engine's refusal under them."""

    def __init__(self, dotted: str, description: str, on_edit: Callable[[str, Any], None]):
        self.dotted = dotted
        section, _, name = dotted.partition(".")
        self.name = QLabel(name if section == "batching" else f"cache.{name}")
        tip = TRADE_OFFS.get(dotted, "")
        self.name.setToolTip(f"{dotted}: {tip or description}")
        self.in_force = ElidedLabel("—")
        self.in_force.setObjectName("hint")
        self.in_force.setToolTip("the value in force")
        self.in_force.setMinimumWidth(60)
        annotation = _field_annotation(dotted)
        choices = typing.get_args(annotation) if typing.get_origin(annotation) is typing.Literal else None
        if choices:
            self.editor: QWidget = QComboBox()
            self.editor.addItems([str(c) for c in choices])
            self.editor.currentTextChanged.connect(lambda text: on_edit(dotted, text))
        elif annotation is bool:
            self.editor = QCheckBox()
            self.editor.toggled.connect(lambda on: on_edit(dotted, on))
        else:
            self.editor = QLineEdit()
            self.editor.setPlaceholderText("default")
            self.editor.textEdited.connect(lambda text: on_edit(dotted, parse_value(text)))
        self.editor.setToolTip(tip or description)
        self.editor.setMinimumWidth(104 if choices else 60)
        self.editor.setMaximumWidth(104 if choices else 84)
        self.refusal = QLabel("")
        self.refusal.setObjectName("refusal")  # red in each theme
        self.refusal.setWordWrap(True)
        self.refusal.hide()

    def show_value(self, in_force: Any, value: Any, edited: bool) -> None:
        self.in_force.setText(_shown(in_force))
        self.editor.blockSignals(True)  # writing the model's value back must not echo as an edit
        if isinstance(self.editor, QComboBox):
            self.editor.setCurrentText(str(value))
        elif isinstance(self.editor, QCheckBox):
            self.editor.setChecked(bool(value))
        elif not self.editor.hasFocus() or not edited:
            self.editor.setText("" if value is None else _shown(value))
        self.editor.blockSignals(False)
        font = self.name.font()
        font.setBold(edited)
        self.name.setFont(font)

    def set_refusal(self, message: str) -> None:
        self.refusal.setText(message)
        self.refusal.setVisible(bool(message))


def _shown(value: Any) -> str:
    """A setting as a person types it: 1024 rather than 1024.0; None is the engine's default."""
    if value is None:
        return "default"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _field_annotation(dotted: str):
    from engine.config import BatchingConfig, CacheConfig

    section, _, name = dotted.partition(".")
    annotation = (BatchingConfig if section == "batching" else CacheConfig).model_fields[name].annotation
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    return args[0] if typing.get_origin(annotation) is typing.Union and len(args) == 1 else annotation
