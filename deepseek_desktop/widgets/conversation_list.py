"""ConversationList: the chat's left column: "New chat", a search box and the conversations,
each with a menu to rename or delete it. It only draws and asks; the chat panel acts on its
signals."""

from __future__ import annotations

from typing import Optional

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import QInputDialog, QLineEdit, QListWidget, QListWidgetItem, QMenu, QPushButton, QVBoxLayout, QWidget


class ConversationList(QWidget):
    new_requested = Signal()
    query_changed = Signal(str)
    open_requested = Signal(object)          # the conversation's dict, as listed
    rename_requested = Signal(str, str)      # conversation id, new title
    delete_requested = Signal(str)           # conversation id

    def __init__(self, parent=None):
        super().__init__(parent)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        self.new_button = QPushButton("New chat")
        self.new_button.clicked.connect(self.new_requested.emit)
        self.search_box = QLineEdit(placeholderText="Search conversations…", clearButtonEnabled=True)
        self.search_box.textChanged.connect(self.query_changed.emit)
        self.list = QListWidget()
        self.list.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.list.setTextElideMode(Qt.TextElideMode.ElideRight)
        self.list.itemClicked.connect(lambda item: self.open_requested.emit(item.data(Qt.ItemDataRole.UserRole)))
        self.list.setContextMenuPolicy(Qt.ContextMenuPolicy.CustomContextMenu)
        self.list.customContextMenuRequested.connect(self._menu)
        for widget in (self.new_button, self.search_box, self.list):
            layout.addWidget(widget)

    def fill(self, conversations: list, current_id: Optional[str]) -> None:
        """List ``conversations`` (newest first, as the store gives them), the current one selected."""
        self.list.clear()
        for conversation in conversations:
            item = QListWidgetItem(conversation["title"])
            item.setData(Qt.ItemDataRole.UserRole, conversation)
            self.list.addItem(item)
            if conversation["id"] == current_id:
                item.setSelected(True)

    def _menu(self, pos) -> None:
        item = self.list.itemAt(pos)
        if item is None:
            return
        conversation = item.data(Qt.ItemDataRole.UserRole)
        menu = QMenu(self)
        menu.addAction("Rename…", lambda: self.rename(conversation))
        menu.addAction("Delete", lambda: self.delete_requested.emit(conversation["id"]))
        menu.popup(self.list.mapToGlobal(pos))

    def rename(self, conversation: dict) -> None:
        title, ok = QInputDialog.getText(self, "Rename conversation", "Title", text=conversation["title"])
        if ok:
            self.rename_requested.emit(conversation["id"], title)
