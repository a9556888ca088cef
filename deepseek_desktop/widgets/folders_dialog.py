"""FoldersDialog: edits the folders the model library scans, and whether it lists the Hugging
Face cache too. It only collects the choice; the caller hands it to the library."""

from __future__ import annotations

from PySide6.QtWidgets import (
    QCheckBox, QDialog, QDialogButtonBox, QFileDialog, QHBoxLayout, QLabel, QListWidget, QPushButton, QVBoxLayout,
)


class FoldersDialog(QDialog):
    def __init__(self, folders: list[str], hf_cache: bool, parent=None):
        super().__init__(parent)
        self.setWindowTitle("Model folders")
        layout = QVBoxLayout(self)
        self.list = QListWidget()
        self.list.addItems(folders)
        row = QHBoxLayout()
        add, remove = QPushButton("Add…"), QPushButton("Remove")
        add.clicked.connect(self._add)
        remove.clicked.connect(lambda: [self.list.takeItem(self.list.row(i)) for i in self.list.selectedItems()])
        row.addWidget(add)
        row.addWidget(remove)
        row.addStretch(1)
        self.hf_cache = QCheckBox("Also list the Hugging Face cache", checked=hf_cache)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel)
        buttons.accepted.connect(self.accept)
        buttons.rejected.connect(self.reject)
        for widget in (QLabel("Folders scanned for models (each folder and two levels below it):"), self.list):
            layout.addWidget(widget)
        layout.addLayout(row)
        layout.addWidget(self.hf_cache)
        layout.addWidget(buttons)

    def _add(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Add a model folder")
        if folder:
            self.list.addItem(folder)

    def folders(self) -> list[str]:
        return [self.list.item(i).text() for i in range(self.list.count())]
