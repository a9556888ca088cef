"""KnobsSection: the Tuning panel's run-time settings, two a row (``KnobRow``: name, editor, the
value in force, the engine's refusal), with Apply and Revert. It draws ``TuningModel``'s settings
in force and edits, and sends the edits to it; applying settings over the memory budget waits for
a yes."""

from __future__ import annotations

from typing import Callable, Optional

from PySide6.QtWidgets import QGridLayout, QHBoxLayout, QLabel, QPushButton, QWidget

from deepseek_desktop.state.tuning import TuningModel
from deepseek_desktop.widgets.card import Card, heading
from deepseek_desktop.widgets.knob_row import KnobRow
from engine import tuning

PER_ROW = 2


class KnobsSection(Card):
    def __init__(self, model: TuningModel, confirm: Callable[[str, str], bool], parent: Optional[QWidget] = None):
        """``confirm(title, question)``: the user's yes or no (the panel asks it)."""
        super().__init__(parent=parent)
        self.model, self.confirm = model, confirm
        self.knobs: dict[str, KnobRow] = {}
        grid = self._build_grid()
        self.general_refusal = QLabel("")
        self.general_refusal.setObjectName("refusal")  # red in each theme
        self.general_refusal.setWordWrap(True)
        self.general_refusal.hide()
        self.apply_button = QPushButton("Apply")
        self.apply_button.setObjectName("primary")
        self.apply_button.setToolTip("PUT /admin/config: in force for new requests; running ones finish as they began")
        self.apply_button.clicked.connect(self.apply)
        self.revert_button = QPushButton("Revert")
        self.revert_button.clicked.connect(self.model.revert)
        head = QHBoxLayout()
        head.addWidget(heading("Run-time settings"))
        hint = QLabel("edited ones in bold · grey: in force")
        hint.setObjectName("hint")
        head.addWidget(hint)
        head.addStretch(1)
        head.addWidget(self.revert_button)
        head.addWidget(self.apply_button)
        self.stack(head, grid, self.general_refusal)
        model.engine_changed.connect(self.show_engine)
        model.config_changed.connect(self.show_config)
        model.refused.connect(self.show_refusals)
        model.applied.connect(lambda _: self.show_refusals({}))
        self.show_engine()
        self.show_config()

    def _build_grid(self) -> QGridLayout:
        """Two settings a row: name (its trade-off in the tooltip), editor, the value in force;
        the engine's refusal under them."""
        grid = QGridLayout()
        grid.setHorizontalSpacing(6)
        grid.setVerticalSpacing(2)
        for i, (dotted, description) in enumerate(tuning.runtime_fields().items()):
            knob = KnobRow(dotted, description, self.model.set_edit)
            self.knobs[dotted] = knob
            row, col = 2 * (i // PER_ROW), 3 * (i % PER_ROW)
            grid.addWidget(knob.name, row, col)
            grid.addWidget(knob.editor, row, col + 1)
            grid.addWidget(knob.in_force, row, col + 2)
            grid.addWidget(knob.refusal, row + 1, col, 1, 3)
        for col in range(PER_ROW):
            grid.setColumnStretch(3 * col + 1, 1)
        return grid

    def show_config(self) -> None:
        for dotted, knob in self.knobs.items():
            knob.show_value(self.model.in_force.get(dotted), self.model.value(dotted), dotted in self.model.edits)
        self.update_buttons()

    def show_engine(self) -> None:
        for knob in self.knobs.values():
            knob.editor.setEnabled(self.model.engine.admin)
        self.update_buttons()

    def update_buttons(self) -> None:
        self.apply_button.setEnabled(bool(self.model.edits) and self.model.engine.admin)
        self.revert_button.setEnabled(bool(self.model.edits))

    def show_refusals(self, refused: dict) -> None:
        for dotted, knob in self.knobs.items():
            knob.set_refusal(refused.get(dotted, ""))
        general = refused.get("", "")
        self.general_refusal.setText(general)
        self.general_refusal.setVisible(bool(general))

    def apply(self) -> None:
        if self.model.over_budget() and not self.confirm(
                "Over the memory budget", "These settings need more memory than the device has left "
                "(Will not fit). Apply them all the same?"):
            return
        self.model.apply(confirmed=True)
