"""Search hits: each with its title and heading path (a link that opens the file at its page or
line), where it is, the score of each method, and the snippet with the matching terms marked."""

from __future__ import annotations

import html
from pathlib import Path
from typing import Optional

from PySide6.QtCore import QUrl, Signal
from PySide6.QtWidgets import QTextBrowser

from deepseek_desktop.widgets.citations import LINK, MUTED, heading_below_title, location, marked


def score_text(hit: dict) -> str:
    """"score 0.032 (lexical 7.1 · semantic 0.61)": what each method gave, where it ran."""
    scores = hit.get("scores") or {}
    each = [f"{name} {value:.3g}" for name, value in scores.items() if value is not None]
    return f"score {hit.get('score', 0):.3g}" + (f" ({' · '.join(each)})" if each else "")


def results_summary(results: dict) -> str:
    """"12 results · hybrid · 14 ms" (or why there are none)."""
    if results.get("mode") is None:
        return ""
    count = len(results.get("hits") or [])
    took = results.get("took_ms")
    return " · ".join([f"{count} result{'s' if count != 1 else ''}" if count else "no results",
                       results["mode"]] + ([f"{took:.0f} ms"] if took is not None else []))


class ResultsView(QTextBrowser):
    open_requested = Signal(dict)  # the hit whose title was clicked

    def __init__(self, theme: str = "dark", parent=None):
        super().__init__(parent)
        self.theme = theme
        self.hits: list[dict] = []
        self.setObjectName("search_results")
        self.setOpenLinks(False)
        self.anchorClicked.connect(self._on_link)

    def show_results(self, results: dict, empty_text: str = "") -> None:
        self.hits = list(results.get("hits") or [])
        muted, link = MUTED.get(self.theme, MUTED["dark"]), LINK.get(self.theme, LINK["dark"])
        blocks = []
        for i, hit in enumerate(self.hits):
            title = html.escape(hit.get("title") or Path(hit.get("path") or "?").name)
            heading = html.escape(heading_below_title(hit))
            where = html.escape(f"{location(hit)} · {hit.get('collection', '')} · {score_text(hit)}")
            blocks.append(
                f'<p style="margin-bottom:10px"><a href="open:{i}" style="color:{link}; font-weight:600">{title}</a>'
                + (f' <span style="color:{muted}">› {heading}</span>' if heading else "")
                + f'<br><span style="color:{muted}">{where}</span>'
                + f'<br>{marked(hit.get("snippet") or "", self.theme)}</p>')
        if not blocks and empty_text:
            blocks.append(f'<p style="color:{muted}">{html.escape(empty_text)}</p>')
        self.setHtml("".join(blocks))

    def _on_link(self, url: QUrl) -> None:
        index: Optional[int] = int(url.path()) if url.scheme() == "open" and url.path().isdigit() else None
        if index is not None and index < len(self.hits):
            self.open_requested.emit(self.hits[index])
