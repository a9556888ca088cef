"""ModelTable: the library's catalog, one row per model found, each row holding its
``ModelEntry``; the model the engine serves reads in bold."""

from __future__ import annotations

import os
from typing import Optional

from PySide6.QtCore import Qt
from PySide6.QtWidgets import QAbstractItemView, QHeaderView, QTableWidget, QTableWidgetItem

from engine.memory import format_bytes

COLUMNS = ["Name", "Type", "Parameters", "Size", "Dtype", "Context", "Loadable", "Folder"]
LOADABLE_COLUMN, FOLDER_COLUMN = 6, 7


def format_params(n: Optional[int]) -> str:
    if not n:
        return "N/A"
    for unit, scale in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= scale:
            return f"{n / scale:.1f}{unit}"
    return str(n)


def same_path(a: Optional[str], b: Optional[str]) -> bool:
    """Without touching the disk (the GUI thread): "/m/x/" and "/m/x" are the same folder."""
    return bool(a and b) and os.path.normpath(a) == os.path.normpath(b)


class ModelTable(QTableWidget):
    def __init__(self, parent=None):
        super().__init__(0, len(COLUMNS), parent)
        self.setHorizontalHeaderLabels(COLUMNS)
        self.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.verticalHeader().hide()
        header = self.horizontalHeader()
        header.setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        # The folder tells two copies of a model apart; it takes the room left, elided in the middle.
        header.setSectionResizeMode(FOLDER_COLUMN, QHeaderView.ResizeMode.Stretch)
        header.setMinimumSectionSize(40)
        self.setTextElideMode(Qt.TextElideMode.ElideMiddle)
        self.setWordWrap(False)

    def fill(self, entries: list, keep: Optional[str]) -> None:
        """One row per entry; the row of the model at ``keep`` (a path) is selected again."""
        self.setRowCount(len(entries))
        for row, entry in enumerate(entries):
            loadable = "yes" if entry.loadable else f"no: {entry.problem}"
            folder = os.path.dirname(os.path.normpath(entry.path))
            values = [entry.name, entry.model_type or entry.architecture or "?", format_params(entry.params),
                      format_bytes(entry.size_bytes), entry.dtype or "?",
                      f"{entry.context_length:,}" if entry.context_length else "?", loadable, folder]
            tips = {1: entry.architecture or "", LOADABLE_COLUMN: loadable, FOLDER_COLUMN: entry.path}
            for column, value in enumerate(values):
                item = QTableWidgetItem(value)
                item.setData(Qt.ItemDataRole.UserRole, entry)
                item.setToolTip(tips.get(column, ""))
                self.setItem(row, column, item)
            if same_path(entry.path, keep):
                self.selectRow(row)

    def entry(self, row: int):
        return self.item(row, 0).data(Qt.ItemDataRole.UserRole)

    def selected_entry(self):
        items = self.selectedItems()
        return items[0].data(Qt.ItemDataRole.UserRole) if items else None

    def mark_loaded(self, path: Optional[str]) -> None:
        """The model at ``path`` reads in bold (two copies of a model differ by folder)."""
        for row in range(self.rowCount()):
            loaded = same_path(self.entry(row).path, path)
            for column in range(self.columnCount()):
                item = self.item(row, column)
                font = item.font()
                font.setBold(loaded)
                item.setFont(font)

    def select_path(self, path: str) -> bool:
        for row in range(self.rowCount()):
            if same_path(self.entry(row).path, path):
                self.selectRow(row)
                return True
        return False
