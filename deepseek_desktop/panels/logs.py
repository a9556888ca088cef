"""LogsPanel: everything the notifier posts (app errors, alerts) and the worker's JSON log lines,
newest last, with a level filter and a text filter."""

from __future__ import annotations

import time

from PySide6.QtGui import QColor
from PySide6.QtWidgets import (
    QAbstractItemView, QComboBox, QHBoxLayout, QHeaderView, QLineEdit, QPushButton, QTableWidget,
    QTableWidgetItem, QVBoxLayout, QWidget,
)

from deepseek_desktop.notifier import Notice, Notifier

LEVELS = ["all", "info", "warning", "error"]
RANK = {"debug": 0, "info": 1, "warning": 2, "error": 3, "critical": 3}
COLORS = {"warning": "#e0a030", "error": "#e05050", "critical": "#e05050"}
MAX_ROWS = 5000


class LogsPanel(QWidget):
    def __init__(self, notifier: Notifier, parent=None):
        super().__init__(parent)
        layout = QVBoxLayout(self)
        bar = QHBoxLayout()
        self.level_box = QComboBox()
        self.level_box.addItems(LEVELS)
        self.level_box.currentTextChanged.connect(self._apply_filter)
        self.filter_box = QLineEdit(placeholderText="Filter…", clearButtonEnabled=True)
        self.filter_box.textChanged.connect(self._apply_filter)
        clear = QPushButton("Clear")
        clear.clicked.connect(lambda: self.table.setRowCount(0))
        bar.addWidget(self.level_box)
        bar.addWidget(self.filter_box, 1)
        bar.addWidget(clear)
        layout.addLayout(bar)
        self.table = QTableWidget(0, 4)
        self.table.setHorizontalHeaderLabels(["Time", "Source", "Level", "Message"])
        self.table.verticalHeader().hide()
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.horizontalHeader().setSectionResizeMode(3, QHeaderView.ResizeMode.Stretch)
        layout.addWidget(self.table, 1)
        for notice in notifier.history:
            self.add(notice)
        notifier.posted.connect(self.add)

    def add(self, notice: Notice) -> None:
        row = self.table.rowCount()
        if row >= MAX_ROWS:
            self.table.removeRow(0)
            row -= 1
        self.table.insertRow(row)
        stamp = time.strftime("%H:%M:%S", time.localtime(notice.time))
        for column, text in enumerate([stamp, notice.source, notice.level, notice.text]):
            item = QTableWidgetItem(text)
            if notice.level in COLORS:
                item.setForeground(QColor(COLORS[notice.level]))
            self.table.setItem(row, column, item)
        self.table.setRowHidden(row, not self._matches(row))
        if self.isVisible():
            self.table.scrollToBottom()

    def rows(self) -> list[tuple[str, str, str]]:
        """(source, level, message) of the visible rows, oldest first."""
        return [tuple(self.table.item(r, c).text() for c in (1, 2, 3))
                for r in range(self.table.rowCount()) if not self.table.isRowHidden(r)]

    def _matches(self, row: int) -> bool:
        level = self.level_box.currentText()
        text = self.filter_box.text().lower()
        row_level = self.table.item(row, 2).text()
        if level != "all" and RANK.get(row_level, 1) < RANK[level]:
            return False
        return not text or any(text in self.table.item(row, c).text().lower() for c in (1, 3))

    def _apply_filter(self, *_) -> None:
        for row in range(self.table.rowCount()):
            self.table.setRowHidden(row, not self._matches(row))
