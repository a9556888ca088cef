"""Panels whose capability comes with its own issue (today: Search). They say what will be
there and what works today, so the navigation is complete from the first release."""

from __future__ import annotations

from PySide6.QtCore import Qt
from PySide6.QtWidgets import QFrame, QHBoxLayout, QLabel, QSizePolicy, QVBoxLayout, QWidget

TEXT = {
    "Search": ("Search your documents with the model",
               "Document search (SQLite FTS5 with the model's answers) is coming. Conversations can already be "
               "searched in the Chat panel."),
}


class PlaceholderPanel(QWidget):
    def __init__(self, name: str, parent=None):
        super().__init__(parent)
        title, text = TEXT[name]
        card = QFrame()
        card.setObjectName("card")
        # At most 720 px wide, centred by stretches (not an alignment flag: an aligned item gets its
        # size hint's height, which clipped the wrapped text) so the text's height follows its width.
        card.setMaximumWidth(720)
        card.setSizePolicy(QSizePolicy.Policy.Preferred, QSizePolicy.Policy.Maximum)
        inner = QVBoxLayout(card)
        heading = QLabel(title)
        heading.setObjectName("cta_title")
        self.body = QLabel(text)
        self.body.setWordWrap(True)
        self.body.setTextFormat(Qt.TextFormat.RichText)
        inner.addWidget(heading)
        inner.addWidget(self.body)
        row = QHBoxLayout()
        row.addStretch(1)
        row.addWidget(card, 4)
        row.addStretch(1)
        layout = QVBoxLayout(self)
        layout.addStretch(1)
        layout.addLayout(row)
        layout.addStretch(2)
