"""Markdown to the HTML subset Qt's rich text understands, with highlighted code blocks (Pygments,
inline styles) and a Copy link above each block, and a viewer that grows to fit its text."""

from __future__ import annotations

import html
from typing import Callable, Optional

from markdown_it import MarkdownIt
from pygments import highlight
from pygments.formatters import HtmlFormatter
from pygments.lexers import TextLexer, get_lexer_by_name
from pygments.util import ClassNotFound
from PySide6.QtCore import QUrl, Signal
from PySide6.QtGui import QGuiApplication
from PySide6.QtWidgets import QSizePolicy, QTextBrowser

_CODE_STYLE = {"dark": "monokai", "light": "friendly"}
_CODE_BG = {"dark": "#272822", "light": "#f4f4f4"}
# Qt draws links in the palette's link colour (dark blue) whatever the theme: named here, readable
# on each code background.
_LINK = {"dark": "#8ab4ff", "light": "#1f5fc4"}


class MarkdownRenderer:
    def __init__(self, theme: str = "dark"):
        self.theme = theme
        self.code_blocks: list[str] = []
        self._md = MarkdownIt("commonmark", {"html": False, "linkify": False}).enable("table")
        # markdown-it calls a render rule as a method of its renderer, hence the closure.
        def fence(_renderer, tokens, idx, _options, _env) -> str:
            token = tokens[idx]
            return self._highlight(token.content, (token.info or "").split(" ")[0].strip())
        self._md.add_render_rule("fence", fence)
        self._md.add_render_rule("code_block", fence)

    def _highlight(self, code: str, lang: str) -> str:
        index = len(self.code_blocks)
        self.code_blocks.append(code)
        try:
            lexer = get_lexer_by_name(lang) if lang else TextLexer()
        except ClassNotFound:
            lexer = TextLexer()
        formatter = HtmlFormatter(noclasses=True, nowrap=True, style=_CODE_STYLE[self.theme])
        body = highlight(code, lexer, formatter)
        label = html.escape(lang or "code")
        # A table cell is the one block Qt's rich text paints a background behind.
        return (f'<table width="100%" cellpadding="8" cellspacing="0" bgcolor="{_CODE_BG[self.theme]}">'
                f'<tr><td><span style="color:#888">{label}</span> &nbsp; <a href="copy:{index}" style="color:{_LINK[self.theme]}">Copy</a>'
                f'<pre style="margin:0">{body}</pre></td></tr></table>')

    def render(self, text: str) -> str:
        self.code_blocks = []
        return self._md.render(text)


class MarkdownView(QTextBrowser):
    """Read-only Markdown that sizes itself to its content (messages stack in a scroll area)."""

    copied = Signal(str)
    link_clicked = Signal(QUrl)  # a link of another scheme than copy: or http(s): (a citation's cite:n)

    def __init__(self, theme: str = "dark", parent=None):
        super().__init__(parent)
        self.renderer = MarkdownRenderer(theme)
        self.setOpenLinks(False)
        self.setFrameShape(QTextBrowser.Shape.NoFrame)
        self.setVerticalScrollBarPolicy(self.verticalScrollBarPolicy().ScrollBarAlwaysOff)
        self.setHorizontalScrollBarPolicy(self.horizontalScrollBarPolicy().ScrollBarAlwaysOff)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Fixed)
        self.anchorClicked.connect(self._on_link)
        self.document().documentLayout().documentSizeChanged.connect(self._fit)
        self.markdown = ""
        # Applied to the rendered HTML before it is shown (a grounded answer links its [n] markers).
        self.html_filter: Optional[Callable[[str], str]] = None

    def set_markdown(self, text: str) -> None:
        self.markdown = text
        rendered = self.renderer.render(text)
        self.setHtml(self.html_filter(rendered) if self.html_filter is not None else rendered)

    def _fit(self, *_) -> None:
        self.setFixedHeight(int(self.document().size().height()) + 6)

    def resizeEvent(self, event) -> None:
        super().resizeEvent(event)
        self.document().setTextWidth(self.viewport().width())
        self._fit()

    def _on_link(self, url: QUrl) -> None:
        if url.scheme() == "copy":
            self.copy_block(int(url.path()))
        elif url.scheme() in ("http", "https"):
            from PySide6.QtGui import QDesktopServices

            QDesktopServices.openUrl(url)
        else:
            self.link_clicked.emit(url)

    def copy_block(self, index: int) -> Optional[str]:
        if 0 <= index < len(self.renderer.code_blocks):
            code = self.renderer.code_blocks[index]
            QGuiApplication.clipboard().setText(code)
            self.copied.emit(code)
            return code
        return None
