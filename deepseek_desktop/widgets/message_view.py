"""MessageView: a conversation's messages in a scroll area. Streaming replies are re-rendered at
most every 50 ms; the view follows the end while the user has not scrolled up. Each message's
requests (edit, regenerate, open a source, a tool's result) come out as the view's signals."""

from __future__ import annotations

from PySide6.QtCore import Qt, QTimer, Signal
from PySide6.QtWidgets import QScrollArea, QVBoxLayout, QWidget

from deepseek_desktop.widgets.message import MessageWidget

RENDER_EVERY_MS = 50
FOLLOW_SLACK_PX = 40  # this close to the end counts as at the end


class MessageView(QScrollArea):
    edit_requested = Signal(dict)
    regenerate_requested = Signal()
    code_copied = Signal()
    open_requested = Signal(dict)             # a cited source
    tool_result_submitted = Signal(str, str)  # call id, the result the user pasted
    rendered = Signal()                       # streamed changes were drawn

    def __init__(self, theme: str = "dark", parent=None):
        super().__init__(parent, widgetResizable=True)
        self.theme = theme
        self.widgets: dict[str, MessageWidget] = {}
        self._dirty: set[str] = set()
        self._render_timer = QTimer(self, interval=RENDER_EVERY_MS, timeout=self._render_dirty)
        self.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        # Messages size themselves once laid out, after the scroll to the end was asked for: while
        # following the end, every growth of the range scrolls again (the user scrolling up stops it).
        self._follow_end = True
        self._scrolling = False
        bar = self.verticalScrollBar()
        bar.rangeChanged.connect(self._on_range_changed)
        bar.valueChanged.connect(self._on_scrolled)
        holder = QWidget()
        holder.setObjectName("transcript")
        self.message_layout = QVBoxLayout(holder)
        self.message_layout.addStretch(1)
        self.setWidget(holder)

    def set_theme(self, theme: str) -> None:
        """For code blocks drawn from now on (a drawn one keeps its colours)."""
        self.theme = theme
        for widget in self.widgets.values():
            widget.theme = theme

    def reset(self, messages: list) -> None:
        for widget in self.widgets.values():
            widget.deleteLater()
        self.widgets.clear()
        self._dirty.clear()
        for message in messages:
            self.add(message, scroll=False)
        QTimer.singleShot(0, self.scroll_to_end)

    def add(self, message: dict, scroll: bool = True) -> None:
        widget = MessageWidget(message, self.theme)
        widget.edit_requested.connect(self.edit_requested.emit)
        widget.regenerate_requested.connect(self.regenerate_requested.emit)
        widget.code_copied.connect(self.code_copied.emit)
        widget.open_requested.connect(self.open_requested.emit)
        widget.tool_result_submitted.connect(self.tool_result_submitted.emit)
        self.widgets[message["id"]] = widget
        self.message_layout.insertWidget(self.message_layout.count() - 1, widget)
        if scroll:
            QTimer.singleShot(0, self.scroll_to_end)

    def mark_dirty(self, message: dict) -> None:
        """``message`` changed: drawn with the next tick (at once when it stopped streaming)."""
        widget = self.widgets.get(message["id"])
        if widget is not None:
            widget.message = message
        self._dirty.add(message["id"])
        if not self._render_timer.isActive():
            self._render_timer.start()
        if message.get("status") != "streaming":
            self._render_dirty()

    def _render_dirty(self) -> None:
        if not self._dirty:
            self._render_timer.stop()
            return
        bar = self.verticalScrollBar()
        at_end = bar.value() >= bar.maximum() - FOLLOW_SLACK_PX
        for message_id in list(self._dirty):
            widget = self.widgets.get(message_id)
            if widget is not None:
                widget.refresh()
        self._dirty.clear()
        self.rendered.emit()
        if at_end:
            QTimer.singleShot(0, self.scroll_to_end)

    def set_actions(self, last_id, busy: bool, pending: dict) -> None:
        """Which buttons each message offers: Regenerate on the last reply, Edit while idle, a
        result box for each call in ``pending`` ({message id: [call id, …]})."""
        for message_id, widget in self.widgets.items():
            widget.set_actions(message_id == last_id, busy, pending.get(message_id, []))

    def scroll_to_end(self) -> None:
        self._follow_end = True
        bar = self.verticalScrollBar()
        self._scrolling = True
        bar.setValue(bar.maximum())
        self._scrolling = False

    def _on_range_changed(self, _minimum: int, _maximum: int) -> None:
        if self._follow_end:
            self.scroll_to_end()

    def _on_scrolled(self, value: int) -> None:
        if not self._scrolling:
            self._follow_end = value >= self.verticalScrollBar().maximum() - FOLLOW_SLACK_PX
