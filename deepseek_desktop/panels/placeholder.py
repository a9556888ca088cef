"""Panels whose capability comes with its own issue: Tuning and Search. They say what will be
there and what works today, so the navigation is complete from the first release."""

from __future__ import annotations

from PySide6.QtCore import Qt
from PySide6.QtWidgets import QFrame, QLabel, QVBoxLayout, QWidget

TEXT = {
    "Tuning": ("Tune batching and the KV cache",
               "Visual tuning with a benchmark sweep and config export is coming. Today the engine already "
               "applies batching and cache settings without reloading weights: <code>PUT /admin/config</code>, "
               "and <code>deepseek-engine bench</code> measures a setting (see the README)."),
    "Search": ("Search your documents with the model",
               "Document search (SQLite FTS5 with the model's answers) is coming. Conversations can already be "
               "searched in the Chat panel."),
}


class PlaceholderPanel(QWidget):
    def __init__(self, name: str, parent=None):
        super().__init__(parent)
        title, text = TEXT[name]
        layout = QVBoxLayout(self)
        layout.addStretch(1)
        card = QFrame()
        card.setObjectName("card")
        card.setFixedWidth(640)  # a word-wrapped label in a centred card otherwise gets squeezed
        inner = QVBoxLayout(card)
        heading = QLabel(title)
        heading.setObjectName("cta_title")
        body = QLabel(text)
        body.setWordWrap(True)
        body.setTextFormat(Qt.TextFormat.RichText)
        inner.addWidget(heading)
        inner.addWidget(body)
        layout.addWidget(card, 0, Qt.AlignmentFlag.AlignHCenter)
        layout.addStretch(2)
