"""A grounded answer's sources: snippets with their matching terms marked, the answer's [n]
markers as links, and ``CitationsView``, the list of sources under an answer (Search panel's
Ask, and each grounded chat reply) whose entries open to show the cited passage."""

from __future__ import annotations

import html
import re
from pathlib import Path
from typing import Iterable, Optional

from PySide6.QtCore import QUrl, Signal

from deepseek_desktop.widgets.markdown import MarkdownView

# The engine's snippets are HTML-escaped text with <mark> around matching terms; Qt's rich text
# knows no <mark>, so it becomes a span coloured for the theme.
MARK_STYLE = {"dark": "background-color:#7a6400; color:#ffffff;", "light": "background-color:#ffe066; color:#000000;"}
MUTED = {"dark": "#9aa3b2", "light": "#5f6673"}
LINK = {"dark": "#8ab4ff", "light": "#1f5fc4"}
# [3], [1, 2] and [1][2] (each bracket on its own): what models write when told to cite sources.
CITE_MARK = re.compile(r"\[(\d{1,3}(?:\s*,\s*\d{1,3})*)\]")
_PRE = re.compile(r"(<pre.*?</pre>)", re.DOTALL)


def marked(snippet: str, theme: str = "dark") -> str:
    """The snippet (already HTML-safe) with its <mark> tags drawn as highlights."""
    return snippet.replace("<mark>", f'<span style="{MARK_STYLE.get(theme, MARK_STYLE["dark"])}">').replace(
        "</mark>", "</span>")


def link_citations(rendered: str, known: Iterable[int], theme: str = "dark") -> str:
    """Rendered answer HTML with each [n] outside code blocks a ``cite:n`` link; a number that
    names no source given is struck through, with a tooltip saying so."""
    known = set(known)

    def one(n: str) -> str:
        if int(n) in known:
            return f'<a href="cite:{n}" style="color:{LINK.get(theme, LINK["dark"])}">{n}</a>'
        return f'<span style="text-decoration:line-through" title="no source [{n}] was given">{n}</span>'

    def bracket(match: re.Match) -> str:
        return "[" + ", ".join(one(n.strip()) for n in match[1].split(",")) + "]"
    parts = _PRE.split(rendered)
    return "".join(part if part.startswith("<pre") else CITE_MARK.sub(bracket, part) for part in parts)


def location(source: dict) -> str:
    """"guide.pdf, page 3", "notes.md, lines 10–24" or the file's name."""
    name = Path(source.get("path") or "?").name
    if source.get("page"):
        return f"{name}, page {source['page']}"
    lines = source.get("lines")
    if lines:
        return f"{name}, line {lines[0]}" if lines[0] == lines[1] else f"{name}, lines {lines[0]}–{lines[1]}"
    return name


def heading_below_title(source: dict) -> str:
    """The heading path without the title it starts with (a Markdown file's "# Title" is both)."""
    title, heading = source.get("title") or "", source.get("heading") or ""
    if title and (heading == title or heading.startswith(title + " › ")):
        return heading[len(title):].removeprefix(" › ")
    return heading


def heading_path(source: dict) -> str:
    """"Title › Heading › Sub-heading", whichever of them the source has, the title once."""
    return " › ".join(part for part in (source.get("title"), heading_below_title(source)) if part)


class CitationsView(MarkdownView):
    """The sources of one answer, numbered as the engine gave them to the model. ``cite:n`` (an
    entry's number, or a [n] in the answer through ``show_passage``) opens its passage;
    ``open:n`` asks for the file at its page or line."""

    open_requested = Signal(dict)  # the source

    def __init__(self, theme: str = "dark", parent=None):
        super().__init__(theme, parent)
        self.setObjectName("citations")
        self.sources: list[dict] = []
        self.unknown: list[int] = []
        self.shown: Optional[int] = None  # the source whose passage is open

    def set_sources(self, sources: list[dict], unknown: Iterable[int] = ()) -> None:
        self.sources, self.unknown = list(sources or []), list(unknown or [])
        if self.shown is not None and self.source(self.shown) is None:
            self.shown = None
        self._draw()

    def source(self, n: int) -> Optional[dict]:
        return next((s for s in self.sources if s.get("n") == n), None)

    def show_passage(self, n: Optional[int]) -> None:
        """Open source ``n``'s passage (None, or the open one again: close it)."""
        self.shown = None if n == self.shown else n
        self._draw()

    def _draw(self) -> None:
        theme, muted = self.renderer.theme, MUTED.get(self.renderer.theme, MUTED["dark"])
        link = LINK.get(theme, LINK["dark"])
        rows = []
        for s in self.sources:
            n = s.get("n")
            title = html.escape(heading_path(s) or Path(s.get("path") or "?").name)
            rows.append(f'<p style="margin:2px 0"><a href="cite:{n}" style="color:{link}">[{n}]</a> {title} '
                        f'<span style="color:{muted}">— {html.escape(location(s))}</span> '
                        f'<a href="open:{n}" style="color:{link}">Open</a></p>')
            if n == self.shown:
                rows.append(f'<table width="100%" cellpadding="6"><tr><td>{marked(s.get("snippet") or "", theme)}'
                            f'<br><span style="color:{muted}">{html.escape(s.get("path") or "")}</span>'
                            f'</td></tr></table>')
        if self.unknown:
            numbers = ", ".join(f"[{n}]" for n in self.unknown)
            rows.append(f'<p style="color:{muted}">{numbers}: cited by the answer, but no such source was given</p>')
        self.markdown = ""
        self.setHtml((f'<p style="color:{muted}; margin:0">Sources</p>' + "".join(rows)) if rows else "")
        self.setVisible(bool(rows))

    def _on_link(self, url: QUrl) -> None:
        if url.scheme() in ("cite", "open") and url.path().isdigit():
            n = int(url.path())
            if url.scheme() == "cite":
                self.show_passage(n)
            elif self.source(n) is not None:
                self.open_requested.emit(self.source(n))
        else:
            super()._on_link(url)


def cited_number(url: QUrl) -> Optional[int]:
    """n of a ``cite:n`` link in an answer, else None."""
    return int(url.path()) if url.scheme() == "cite" and url.path().isdigit() else None
