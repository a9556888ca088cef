"""Opening a search hit or a citation at its page or line.

Desktop "open this file" (``QDesktopServices``, xdg-open) cannot say where in the file, so:
- a text file with a line range (Markdown, text, reStructuredText, source code) opens in
  ``FilePreview``, the app's own read-only view, scrolled to those lines with them highlighted,
  and a button to open it in the user's own application;
- a PDF with a page opens in the first viewer found that takes a page on its command line
  (Okular, Evince, Atril, Xreader, zathura, qpdfview); failing one, in the default application,
  and the Logs name the page to go to;
- anything else opens in its default application.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Optional

from PySide6.QtCore import QProcess, QUrl
from PySide6.QtGui import QColor, QDesktopServices, QTextCursor, QTextFormat
from PySide6.QtWidgets import QDialog, QHBoxLayout, QLabel, QPlainTextEdit, QPushButton, QTextEdit, QVBoxLayout

from deepseek_desktop.notifier import Notifier
from deepseek_desktop.tasks import run_task
from deepseek_desktop.widgets.citations import location

PREVIEW_MAX_BYTES = 4_000_000  # a longer file opens in its own application
# A viewer's arguments to open PATH at PAGE (1-based).
PDF_VIEWERS = {
    "okular": ["-p", "{page}", "{path}"],
    "evince": ["-i", "{page}", "{path}"],
    "atril": ["-i", "{page}", "{path}"],
    "xreader": ["-i", "{page}", "{path}"],
    "zathura": ["-P", "{page}", "{path}"],
    "qpdfview": ["{path}#{page}"],
}
HIGHLIGHT = QColor(255, 214, 64, 90)


def open_in_default_app(path: str) -> bool:
    return QDesktopServices.openUrl(QUrl.fromLocalFile(path))


def pdf_viewer_command(path: str, page: int) -> Optional[list[str]]:
    """The first installed viewer that opens at a page, as a command line; None if there is none."""
    for name, args in PDF_VIEWERS.items():
        program = shutil.which(name)
        if program:
            return [program, *(a.format(path=path, page=page) for a in args)]
    return None


def open_location(source: dict, notifier: Notifier, parent=None) -> Optional["FilePreview"]:
    """Open a hit's or citation's file where its passage is; the preview when one is shown."""
    path, page, lines = source.get("path") or "", source.get("page"), source.get("lines")
    if path.lower().endswith(".pdf") and page:
        command = pdf_viewer_command(path, int(page))
        if command and QProcess.startDetached(command[0], command[1:])[0]:
            return None
        if open_in_default_app(path):
            notifier.info(f"opened {Path(path).name}: the passage is on page {page}")
        else:
            notifier.error(f"could not open {path}")
        return None
    if lines:
        preview = FilePreview(path, lines, notifier, parent)
        preview.show()
        return preview
    if not open_in_default_app(path):
        notifier.error(f"could not open {path}")
    return None


def _read_text(path: str) -> str:
    with open(path, "rb") as f:
        data = f.read(PREVIEW_MAX_BYTES + 1)
    if len(data) > PREVIEW_MAX_BYTES:
        raise ValueError(f"{Path(path).name} is over {PREVIEW_MAX_BYTES // 1_000_000} MB: "
                         "open it in its own application")
    return data.decode("utf-8", errors="replace")


class FilePreview(QDialog):
    """A text file, read-only, scrolled to ``lines`` (1-based, inclusive) with them highlighted.
    The file is read off the GUI thread; one that is gone or unreadable says why."""

    def __init__(self, path: str, lines: list[int], notifier: Notifier, parent=None):
        super().__init__(parent)
        self.path, self.lines, self.notifier = path, (int(lines[0]), int(lines[1])), notifier
        self.setWindowTitle(f"{location({'path': path, 'lines': lines})} — {path}")
        self.resize(860, 640)
        self.text = QPlainTextEdit(readOnly=True)
        self.text.setLineWrapMode(QPlainTextEdit.LineWrapMode.NoWrap)
        self.text.setPlainText("reading…")
        self.status = QLabel(path)
        self.status.setObjectName("hint")
        self.status.setWordWrap(True)
        open_button = QPushButton("Open in its application")
        open_button.clicked.connect(lambda: open_in_default_app(path) or notifier.error(f"could not open {path}"))
        row = QHBoxLayout()
        row.addWidget(self.status, 1)
        row.addWidget(open_button)
        layout = QVBoxLayout(self)
        layout.addWidget(self.text, 1)
        layout.addLayout(row)
        self.loaded = False
        run_task(lambda _: _read_text(path), self._show_text, self._failed)

    def _show_text(self, text: str) -> None:
        self.text.setPlainText(text)
        document = self.text.document()
        first, last = self.lines
        start = document.findBlockByNumber(max(first - 1, 0))
        end = document.findBlockByNumber(min(last, document.blockCount()) - 1)
        cursor = QTextCursor(start)
        cursor.setPosition(end.position() + end.length() - 1, QTextCursor.MoveMode.KeepAnchor)
        selection = QTextEdit.ExtraSelection()
        selection.format.setBackground(HIGHLIGHT)
        selection.format.setProperty(QTextFormat.Property.FullWidthSelection, True)
        selection.cursor = cursor
        self.text.setExtraSelections([selection])
        self.text.setTextCursor(QTextCursor(start))
        self.text.centerCursor()
        self.loaded = True

    def _failed(self, message: str) -> None:
        self.text.setPlainText("")
        self.status.setText(f"could not read {self.path}: {message}")
        self.status.setObjectName("refusal")
        self.notifier.error(f"could not read {self.path}: {message}")

    def first_visible_line(self) -> int:
        """1-based: what a test reads to see the view was scrolled to the passage."""
        return self.text.firstVisibleBlock().blockNumber() + 1
