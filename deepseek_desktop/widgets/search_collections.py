"""The Search panel's collections: one row each with its state, counts and, while it indexes, a
progress bar with files, bytes, speed and ETA; "All collections" first. The per-file problems
of the selected collection are listed by ``ProblemsView``."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

from PySide6.QtCore import QSize, Qt, Signal
from PySide6.QtWidgets import (
    QAbstractItemView, QFrame, QHeaderView, QLabel, QListWidget, QListWidgetItem, QProgressBar, QTableWidget,
    QTableWidgetItem, QVBoxLayout,
)

from deepseek_desktop.state.search import collection_summary, progress_percent, progress_text
from deepseek_desktop.widgets.labels import ElidedLabel

ALL = ""  # the "All collections" row's key


class CollectionRow(QFrame):
    def __init__(self, collection: dict, parent=None):
        super().__init__(parent)
        self.setObjectName("collection_row")
        self.name = collection["name"]
        layout = QVBoxLayout(self)
        layout.setContentsMargins(8, 6, 8, 6)
        layout.setSpacing(2)
        self.title = QLabel(self.name or "All collections")
        self.title.setStyleSheet("font-weight: 600")
        self.summary = ElidedLabel()
        self.summary.setObjectName("hint")
        self.bar = QProgressBar(textVisible=False, maximum=1000)
        self.bar.setFixedHeight(8)
        self.detail = ElidedLabel(elide=Qt.TextElideMode.ElideMiddle)  # names the current file: a deep path
        self.detail.setObjectName("hint")
        for widget in (self.title, self.summary, self.bar, self.detail):
            layout.addWidget(widget)
        self.update_collection(collection)

    def update_collection(self, collection: dict, eta: Optional[float] = None) -> None:
        if not self.name:
            self.summary.setText(collection.get("summary", ""))
            self.bar.hide()
            self.detail.hide()
            return
        self.summary.setText(collection_summary(collection))
        self.summary.detail = "\n".join(collection.get("folders") or [])
        progress = collection.get("progress")
        if collection.get("state") == "indexing" and progress:
            self.show_progress(progress, eta)
        else:
            self.bar.setVisible(collection.get("state") == "indexing")  # 202, first event not yet here
            self.bar.setRange(0, 0 if collection.get("state") == "indexing" else 1000)
            self.detail.setVisible(False)

    def show_progress(self, progress: dict, eta: Optional[float]) -> None:
        running = progress.get("state", "indexing") == "indexing"
        self.bar.setVisible(running)
        self.detail.setVisible(running)
        if not running:
            return
        self.bar.setRange(0, 1000)
        self.bar.setValue(int(10 * progress_percent(progress)))
        current = progress.get("current_file")
        text = progress_text(progress, eta)
        self.detail.setText(f"{text} · {Path(current).name}" if current else text)
        self.detail.detail = f"{text}\n{current or ''}"


class CollectionList(QListWidget):
    """Selecting a row chooses what the query box searches (and what Ask asks about)."""

    chosen = Signal(object)  # a collection's name, or None for all

    def __init__(self, parent=None):
        super().__init__(parent)
        self.rows: dict[str, CollectionRow] = {}
        self.setObjectName("collections")
        self.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.setResizeMode(QListWidget.ResizeMode.Adjust)
        self.currentItemChanged.connect(lambda item, _previous: self.chosen.emit(self._key(item) or None))

    @staticmethod
    def _key(item: Optional[QListWidgetItem]) -> Optional[str]:
        return None if item is None else item.data(Qt.ItemDataRole.UserRole)

    def current_name(self) -> Optional[str]:
        return self._key(self.currentItem()) or None

    def set_collections(self, collections: list[dict], etas: Optional[dict] = None) -> None:
        """Rows for ``collections`` (an update keeps the selection and each row's widgets)."""
        names = [ALL] + [c["name"] for c in collections]
        if names != list(self.rows):
            selected = self.current_name()
            self.blockSignals(True)
            self.clear()
            self.rows = {}
            for name in names:
                self._add_row({"name": name})
            self.blockSignals(False)
            self.select(selected)
        by_name = {c["name"]: c for c in collections}
        total = sum(c.get("files", 0) for c in collections)
        count = len(collections)
        plural = ("s" if count != 1 else "", "s" if total != 1 else "")
        self.rows[ALL].update_collection({"summary": f"{count} collection{plural[0]} · {total:,} file{plural[1]}"})
        for name, collection in by_name.items():
            self.rows[name].update_collection(collection, (etas or {}).get(name))
        self._fit_rows()

    def _add_row(self, collection: dict) -> None:
        item = QListWidgetItem()
        item.setData(Qt.ItemDataRole.UserRole, collection["name"])
        row = CollectionRow(collection)
        self.addItem(item)
        self.setItemWidget(item, row)
        self.rows[collection["name"]] = row

    def _fit_rows(self) -> None:
        for i in range(self.count()):
            item = self.item(i)
            row = self.rows.get(self._key(item))
            if row is not None:  # the height it needs; its width is the list's (long texts elide)
                item.setSizeHint(QSize(1, row.sizeHint().height()))

    def show_progress(self, name: str, progress: dict, eta: Optional[float]) -> None:
        row = self.rows.get(name)
        if row is not None:
            row.show_progress(progress, eta)
            self._fit_rows()

    def select(self, name: Optional[str]) -> None:
        key = name or ALL
        for i in range(self.count()):
            if self._key(self.item(i)) == key:
                self.setCurrentRow(i)
                return
        self.setCurrentRow(0)


class ProblemsView(QTableWidget):
    """The files of a collection that could not be indexed, each with its reason."""

    def __init__(self, parent=None):
        super().__init__(0, 2, parent)
        self.setHorizontalHeaderLabels(["File", "Why it was not indexed"])
        self.horizontalHeader().setSectionResizeMode(0, QHeaderView.ResizeMode.Interactive)
        self.horizontalHeader().setStretchLastSection(True)
        self.verticalHeader().hide()
        self.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.setWordWrap(False)

    def show_files(self, files: list[dict]) -> None:
        self.setRowCount(len(files))
        for i, f in enumerate(files):
            path = f.get("path") or "?"
            name = QTableWidgetItem(Path(path).name)
            name.setToolTip(path)
            reason = QTableWidgetItem(f.get("error") or f.get("status") or "")
            reason.setToolTip(f.get("error") or "")
            self.setItem(i, 0, name)
            self.setItem(i, 1, reason)
        self.resizeColumnToContents(0)
        self.setColumnWidth(0, min(self.columnWidth(0), 220))

    def reasons(self) -> dict[str, str]:
        """path -> reason, as shown (tests read it)."""
        return {self.item(i, 0).toolTip(): self.item(i, 1).text() for i in range(self.rowCount())}
