"""MemoryBar: one device's memory as a stacked bar (weights, KV cache, prefix cache, activations,
reserve, other processes, free), with its legend; painted by hand, no plotting library."""

from __future__ import annotations

from typing import Optional

from PySide6.QtCore import QRectF, QSize, Qt
from PySide6.QtGui import QBrush, QColor, QPainter, QPen
from PySide6.QtWidgets import QSizePolicy, QWidget

from engine.memory import format_bytes
from engine.memory_budget import DeviceBudget

PART_STYLE = {  # key: (legend, colour)
    "weights": ("weights", "#4d8bf5"),
    "kv_cache": ("KV cache", "#ffb74d"),
    "prefix_cache": ("prefix RAM", "#ba68c8"),
    "activations": ("activations", "#81c784"),
    "reserve": ("reserve", "#4fc3f7"),
    "other": ("others", "#7d8594"),
    "free": ("free", None),
}
LONG_NAMES = {"prefix_cache": "prefix cache (RAM tier, its cap)", "other": "other processes",
              "reserve": "reserve (the runtime's own)"}
OVER = "#e5534b"
BAR_HEIGHT = 22
LEGEND_ROW = 18
LEGEND_COLUMNS = 2


class MemoryBar(QWidget):
    """Redrawn by ``set_budget``; the parts whose size is estimated (not read from the engine or the
    OS) are marked in the legend with ``≈``."""

    def __init__(self, theme: str = "dark", parent: Optional[QWidget] = None):
        super().__init__(parent)
        self.budget: Optional[DeviceBudget] = None
        self.theme = theme
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Fixed)
        self.setFixedHeight(BAR_HEIGHT + 4 * LEGEND_ROW + 10)

    def sizeHint(self) -> QSize:  # noqa: N802 (Qt's name)
        return QSize(320, self.height())

    def set_budget(self, budget: Optional[DeviceBudget]) -> None:
        self.budget = budget
        self.setToolTip(self.describe())
        self.update()

    def set_theme(self, theme: str) -> None:
        self.theme = theme
        self.update()

    def segments(self) -> list[tuple[str, int]]:
        """(key, bytes) drawn left to right; the engine's need beyond the device is ``over``."""
        b = self.budget
        if b is None:
            return []
        out = [(p.key, p.bytes or 0) for p in b.parts if p.bytes]
        if b.available_bytes is not None and b.need_bytes > b.available_bytes:
            out.append(("over", b.need_bytes - b.available_bytes))
        return out

    def describe(self) -> str:
        b = self.budget
        if b is None:
            return ""
        lines = [f"{b.device}: {format_bytes(b.total_bytes)} in all; the engine needs {format_bytes(b.need_bytes)} "
                 f"of {format_bytes(b.available_bytes)} left by other processes"]
        for part in b.parts:
            legend = LONG_NAMES.get(part.key, PART_STYLE[part.key][0])
            lines.append(f"{legend}: {'' if part.measured else '≈ '}{format_bytes(part.bytes)}")
        return "\n".join(lines)

    def paintEvent(self, event) -> None:  # noqa: N802 (Qt's name)
        painter = QPainter(self)
        painter.setRenderHint(QPainter.RenderHint.Antialiasing)
        text = QColor("#e6e8ec" if self.theme == "dark" else "#1f2328")
        track = QColor("#2c313c" if self.theme == "dark" else "#e3e6ea")
        bar = QRectF(0.5, 0.5, self.width() - 1, BAR_HEIGHT)
        painter.setPen(Qt.PenStyle.NoPen)
        painter.setBrush(track)
        painter.drawRoundedRect(bar, 4, 4)
        b = self.budget
        if b is None:
            painter.setPen(text)
            painter.drawText(bar, Qt.AlignmentFlag.AlignCenter, "N/A")
            return
        self._paint_segments(painter, bar)
        self._paint_legend(painter, text)

    def _paint_segments(self, painter: QPainter, bar: QRectF) -> None:
        segments = self.segments()
        scale = max(self.budget.total_bytes or 0, sum(n for _, n in segments)) or 1
        x = bar.left()
        for key, n in segments:
            width = bar.width() * n / scale
            colour = OVER if key == "over" else PART_STYLE[key][1]
            if colour is not None:
                painter.setBrush(QBrush(QColor(colour), Qt.BrushStyle.BDiagPattern if key == "over"
                                        else Qt.BrushStyle.SolidPattern))
                painter.drawRect(QRectF(x, bar.top(), max(width, 1.0), bar.height()))
            x += width
        painter.setBrush(Qt.BrushStyle.NoBrush)
        painter.setPen(QPen(QColor("#5d6470"), 1))
        painter.drawRoundedRect(bar, 4, 4)

    def _paint_legend(self, painter: QPainter, text: QColor) -> None:
        parts = [p for p in self.budget.parts]
        column = (self.width() - 4) / LEGEND_COLUMNS
        for i, part in enumerate(parts):
            legend, colour = PART_STYLE[part.key]
            x = 2 + (i % LEGEND_COLUMNS) * column
            y = BAR_HEIGHT + 6 + (i // LEGEND_COLUMNS) * LEGEND_ROW
            painter.setPen(QPen(QColor("#5d6470"), 1))
            painter.setBrush(QColor(colour) if colour else Qt.BrushStyle.NoBrush)
            painter.drawRect(QRectF(x, y + 4, 9, 9))
            painter.setPen(text)
            value = f"{'' if part.measured else '≈'}{format_bytes(part.bytes)}"
            painter.drawText(QRectF(x + 14, y, column - 16, LEGEND_ROW),
                             Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignVCenter, f"{legend} {value}")
