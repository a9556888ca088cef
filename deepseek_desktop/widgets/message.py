"""MessageWidget: one message of a conversation, its text drawn as Markdown in chunks, with Copy,
Edit or Regenerate, the reasoning folded away, and its stats. It tells its panel what the user
asked for through signals."""

from __future__ import annotations

from typing import TYPE_CHECKING, Optional

from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QGuiApplication
from PySide6.QtWidgets import QFrame, QHBoxLayout, QLabel, QToolButton, QVBoxLayout

from deepseek_desktop.state.chat import stats_text
from deepseek_desktop.state.chat_tools import pretty_json
from deepseek_desktop.widgets.labels import WrapLabel

if TYPE_CHECKING:  # markdown-it and Pygments are imported with the first message, not at start-up
    from deepseek_desktop.widgets.citations import CitationsView
    from deepseek_desktop.widgets.markdown import MarkdownView
    from deepseek_desktop.widgets.tool_calls import ToolCallCard

STATUS_TEXT = {
    "streaming": "", "done": "", "stopped": "stopped",
    "interrupted": "interrupted — the engine stopped mid-reply; the text so far is kept",
    "error": "not answered",
}


CHUNK_CHARS = 2000


def chunk_end(text: str, start: int, size: int = CHUNK_CHARS) -> Optional[int]:
    """Where the chunk starting at ``start`` can end, once the text runs past ``start + size``:
    the last paragraph break in it outside a code block; failing that, the last line break, then
    the last space (a very long paragraph is drawn as two: cheaper than redrawing it whole for
    every token). None while the text is shorter, or inside one long code block."""
    if len(text) - start <= size:
        return None
    for separator in ("\n\n", "\n", " "):
        cut = text.rfind(separator, start + 1, start + size)
        while cut > start:
            if text.count("```", 0, cut) % 2 == 0:
                return cut + len(separator)
            cut = text.rfind(separator, start + 1, cut)
    return None


class MessageWidget(QFrame):
    """One message. It tells its panel what the user asked for through signals."""

    edit_requested = Signal(dict)    # the message, to be edited in the composer
    regenerate_requested = Signal()
    code_copied = Signal()
    open_requested = Signal(dict)    # a cited source, to be opened at its page or line
    tool_result_submitted = Signal(str, str)  # a call's id, the result pasted for it

    def __init__(self, message: dict, theme: str = "dark"):
        super().__init__()
        self.message = message
        self.theme = theme
        self.setObjectName("message_user" if message["role"] == "user" else "message_assistant")
        layout = QVBoxLayout(self)
        layout.setContentsMargins(12, 8, 12, 8)
        header = QHBoxLayout()
        role = {"user": "You", "tool": f"Result of {(message.get('stats') or {}).get('tool') or 'a tool'}"}
        self.role_label = QLabel(role.get(message["role"], "Model"))
        self.role_label.setObjectName("message_role")
        # The status (an interrupted reply's cause can be long) wraps on its own line under the
        # header: the buttons stay where they are and the card never grows wider than the view.
        self.status_label = WrapLabel()
        self.status_label.setObjectName("message_status")
        self.status_label.hide()
        header.addWidget(self.role_label)
        header.addStretch(1)
        self.copy_button = QToolButton(text="Copy", autoRaise=True)
        self.copy_button.clicked.connect(lambda: QGuiApplication.clipboard().setText(self.message["content"]))
        header.addWidget(self.copy_button)
        self.edit_button = self.regenerate_button = None
        if message["role"] == "user":
            self.edit_button = QToolButton(text="Edit", autoRaise=True)
            self.edit_button.clicked.connect(lambda: self.edit_requested.emit(self.message))
            header.addWidget(self.edit_button)
        elif message["role"] == "assistant":
            self.regenerate_button = QToolButton(text="Regenerate", autoRaise=True)
            self.regenerate_button.clicked.connect(lambda: self.regenerate_requested.emit())
            header.addWidget(self.regenerate_button)
        layout.addLayout(header)
        layout.addWidget(self.status_label)
        self.reasoning_toggle = QToolButton(checkable=True, autoRaise=True)
        self.reasoning_toggle.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonTextBesideIcon)
        self.reasoning_toggle.setArrowType(Qt.ArrowType.RightArrow)
        self.reasoning_toggle.toggled.connect(self._show_reasoning)
        from deepseek_desktop.widgets.markdown import MarkdownView

        self.reasoning_view = MarkdownView(theme)
        self.reasoning_view.setObjectName("reasoning")
        self.reasoning_view.hide()
        layout.addWidget(self.reasoning_toggle)
        layout.addWidget(self.reasoning_view)
        # The text is drawn in chunks split at paragraph breaks: while a reply streams only its
        # last chunk is re-rendered, so a long reply costs no more per update than a short one.
        self.body_layout = QVBoxLayout()
        self.body_layout.setSpacing(0)
        layout.addLayout(self.body_layout)
        self.chunks: list[MarkdownView] = []
        self.citations_view: Optional[CitationsView] = None  # a grounded reply's sources, under it
        self.call_cards: dict[str, ToolCallCard] = {}  # the reply's tool calls, by call id, under it
        self._pending: list[str] = []
        self._busy = False
        self.settled = 0  # characters of the content drawn in chunks that no longer change
        self._new_chunk()
        self.stats_label = WrapLabel()
        self.stats_label.setObjectName("message_stats")
        layout.addWidget(self.stats_label)
        self.refresh()

    def _new_chunk(self) -> MarkdownView:
        from deepseek_desktop.widgets.markdown import MarkdownView

        view = MarkdownView(self.theme)
        view.copied.connect(lambda _: self.code_copied.emit())
        view.html_filter = self._link_citations
        view.link_clicked.connect(self._on_cite_link)
        self.body_layout.addWidget(view)
        self.chunks.append(view)
        return view

    def _link_citations(self, rendered: str) -> str:
        """A grounded reply's [n] markers as links that open the cited passage below it."""
        sources = self.message.get("citations") or []
        if not sources and not (self.message.get("stats") or {}).get("unknown_citations"):
            return rendered
        from deepseek_desktop.widgets.citations import link_citations

        return link_citations(rendered, [s.get("n") for s in sources], self.theme)

    def _on_cite_link(self, url) -> None:
        from deepseek_desktop.widgets.citations import cited_number

        n = cited_number(url)
        if n is not None and self.citations_view is not None:
            self.citations_view.show_passage(n)

    def _show_citations(self) -> None:
        sources = self.message.get("citations") or []
        unknown = (self.message.get("stats") or {}).get("unknown_citations") or []
        if not sources and not unknown and self.citations_view is None:
            return
        if self.citations_view is None:
            from deepseek_desktop.widgets.citations import CitationsView

            self.citations_view = CitationsView(self.theme)
            self.citations_view.open_requested.connect(self.open_requested.emit)
            self.layout().insertWidget(self.layout().indexOf(self.stats_label), self.citations_view)
        if (self.citations_view.sources, self.citations_view.unknown) != (sources, unknown):
            self.citations_view.set_sources(sources, unknown)

    def _show_tool_calls(self) -> None:
        calls = self.message.get("tool_calls") or []
        for place, call in enumerate(calls):
            card = self.call_cards.get(call["id"])
            if card is None:
                from deepseek_desktop.widgets.tool_calls import ToolCallCard

                card = self.call_cards[call["id"]] = ToolCallCard(call)
                card.result_submitted.connect(self.tool_result_submitted.emit)
                card.set_pending(call["id"] in self._pending, self._busy)
                self.layout().insertWidget(self.layout().indexOf(self.stats_label), card)
            card.update_call(call)

    def set_actions(self, last: bool, busy: bool, pending: list[str]) -> None:
        """Regenerate on the last reply while idle, Edit while idle, a result box on each call
        still waiting (``pending``: their ids)."""
        self._pending, self._busy = list(pending), busy
        if self.regenerate_button is not None:
            self.regenerate_button.setVisible(last and not busy)
        if self.edit_button is not None:
            self.edit_button.setEnabled(not busy)
        for call_id, card in self.call_cards.items():
            card.set_pending(call_id in self._pending, busy)

    def _content_to_draw(self) -> str:
        m = self.message
        content = m.get("content") or ("…" if m.get("status") == "streaming" and not m.get("tool_calls") else "")
        if (m.get("stats") or {}).get("json_schema") and m.get("status") != "streaming":
            formatted = pretty_json(content)  # a structured reply, drawn as indented JSON once whole
            if formatted is not None:
                return f"```json\n{formatted}\n```"
        return content

    def rendered_markdown(self) -> str:
        return "".join(view.markdown for view in self.chunks)

    def _show_reasoning(self, shown: bool) -> None:
        """Collapsed by default; rendered only while open."""
        self.reasoning_toggle.setArrowType(Qt.ArrowType.DownArrow if shown else Qt.ArrowType.RightArrow)
        self.reasoning_view.setVisible(shown)
        if shown:
            self.reasoning_view.set_markdown(self.message.get("reasoning") or "")

    def refresh(self) -> None:
        m = self.message
        reasoning = m.get("reasoning") or ""
        self.reasoning_toggle.setVisible(bool(reasoning))
        if reasoning:
            thinking = m.get("status") == "streaming" and not m.get("content")
            self.reasoning_toggle.setText("Thinking…" if thinking else f"Reasoning ({len(reasoning.split())} words)")
            if self.reasoning_toggle.isChecked() and self.reasoning_view.markdown != reasoning:
                self.reasoning_view.set_markdown(reasoning)
        content = self._content_to_draw()
        if content[:self.settled] != self.rendered_markdown()[:self.settled]:  # replaced, not grown: start over
            for view in self.chunks[1:]:
                view.deleteLater()
            self.chunks, self.settled = self.chunks[:1], 0
        while (cut := chunk_end(content, self.settled)) is not None:
            self.chunks[-1].set_markdown(content[self.settled:cut])
            self.settled = cut
            self._new_chunk()
        tail = content[self.settled:]
        if self.chunks[-1].markdown != tail:
            self.chunks[-1].set_markdown(tail)
        status = STATUS_TEXT.get(m.get("status", "done"), "")
        error = (m.get("stats") or {}).get("error")
        self.status_label.setText(f"{status}: {error}" if status and error else status)
        self.status_label.setVisible(bool(status))
        self.status_label.setProperty("status", m.get("status"))
        self._show_citations()
        self._show_tool_calls()
        self.stats_label.setText(stats_text(m.get("stats") or {}) if m["role"] == "assistant" else "")
        self.stats_label.setVisible(bool(self.stats_label.text()))
