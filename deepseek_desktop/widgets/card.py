"""Card: a framed block of a panel (the theme styles ``#card``), and the heading it opens with."""

from __future__ import annotations

from typing import Optional, Union

from PySide6.QtWidgets import QFrame, QLabel, QLayout, QVBoxLayout, QWidget


class Card(QFrame):
    def __init__(self, *items: Union[QWidget, QLayout], parent: Optional[QWidget] = None):
        """``items`` stacked top to bottom; none: the caller sets its own layout."""
        super().__init__(parent)
        self.setObjectName("card")
        if items:
            self.stack(*items)

    def stack(self, *items: Union[QWidget, QLayout]) -> None:
        layout = QVBoxLayout(self)
        for item in items:
            (layout.addWidget if isinstance(item, QWidget) else layout.addLayout)(item)


def heading(text: str) -> QLabel:
    label = QLabel(text)
    label.setObjectName("cta_title")
    return label
