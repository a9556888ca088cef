"""Labels for texts of any length (a path, a worker's error, a fetch step) that never ask for more
width than their layout gives: a long text must not widen a card past its view, a panel past the
window, or the window past the screen (issue 19)."""

from __future__ import annotations

import re

from PySide6.QtCore import QSize, Qt
from PySide6.QtWidgets import QLabel, QSizePolicy, QWidget

MIN_WIDTH = 40
# Where a long "word" (a path, an exception's text) may break, besides spaces: after a separator.
# A zero-width space marks the spot for Qt's line breaking and is not drawn.
_BREAK_AFTER = re.compile(r"([/\\_.,:;=&?-])(?=\S)")
ZWSP = "\u200b"


def breakable(text: str) -> str:
    return _BREAK_AFTER.sub(lambda m: m[1] + ZWSP, text)


class ElidedLabel(QLabel):
    """One line, elided where it does not fit (in the middle for a path), the whole text in its
    tooltip (or ``detail``, when one is set). ``text()`` returns the whole text."""

    def __init__(self, text: str = "", elide: Qt.TextElideMode = Qt.TextElideMode.ElideRight,
                 parent: QWidget | None = None):
        super().__init__(parent)
        self._full = ""
        self._elide = elide
        self.detail = ""  # a longer tooltip (a crash's stderr), when there is one
        self.setSizePolicy(QSizePolicy.Policy.Preferred, QSizePolicy.Policy.Fixed)
        self.setText(text)

    def setText(self, text: str) -> None:  # noqa: N802 (Qt's name)
        self._full = " · ".join(line.strip() for line in (text or "").splitlines() if line.strip())
        self._fit()
        self.updateGeometry()

    def text(self) -> str:
        return self._full

    def clear(self) -> None:
        self.setText("")

    def _overhead(self) -> int:
        """Margins, frame and the theme's padding: what QLabel adds around its text."""
        return max(0, super().sizeHint().width() - self.fontMetrics().horizontalAdvance(super().text()))

    def _fit(self) -> None:
        room = max(self.width() - self._overhead(), 1)
        shown = self.fontMetrics().elidedText(self._full, self._elide, room)
        super().setText(shown)
        self.setToolTip(self.detail or (self._full if shown != self._full else ""))

    def resizeEvent(self, event) -> None:
        super().resizeEvent(event)
        self._fit()

    def sizeHint(self) -> QSize:
        width = self.fontMetrics().horizontalAdvance(self._full) + self._overhead() + 1
        return QSize(width, super().sizeHint().height())

    def minimumSizeHint(self) -> QSize:
        return QSize(min(MIN_WIDTH, self.sizeHint().width()), super().minimumSizeHint().height())


class WrapLabel(QLabel):
    """Word-wrapped, and a long word (a path) breaks after its separators: its minimum width is
    small, whatever the text. ``text()`` returns the text as given."""

    def __init__(self, text: str = "", parent: QWidget | None = None):
        super().__init__(parent)
        self._full = ""
        self.setWordWrap(True)
        self.setText(text)

    def setText(self, text: str) -> None:  # noqa: N802 (Qt's name)
        self._full = text or ""
        super().setText(breakable(self._full) if self.textFormat() != Qt.TextFormat.RichText else self._full)

    def text(self) -> str:
        return self._full

    def clear(self) -> None:
        self.setText("")

    def minimumSizeHint(self) -> QSize:
        return QSize(MIN_WIDTH, super().minimumSizeHint().height())
