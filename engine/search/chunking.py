"""Sections → chunks. A section (the text under one heading, or one PDF page) that fits is one
chunk; a longer one is cut at paragraph, then line, then sentence or word boundaries into pieces of
about ``size`` characters, each repeating the last ~``overlap`` characters of the one before, so a
passage cut in two is still found whole in one of them. Each chunk keeps its heading path and its
page or 1-based line range."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Iterable, Optional

from engine.search.extract import Section

CHUNK_SIZE = 1000
OVERLAP = 150
# A short section is merged into the next one under the same heading path rather than kept as a
# chunk of a few words (a heading alone finds nothing useful).
MIN_CHUNK = 200
HEADING_SEPARATOR = " › "


@dataclass
class Chunk:
    text: str
    headings: tuple[str, ...]
    page: Optional[int]
    lines: Optional[tuple[int, int]]

    @property
    def heading(self) -> Optional[str]:
        return HEADING_SEPARATOR.join(self.headings) if self.headings else None


def chunk_sections(sections: Iterable[Section], size: int = CHUNK_SIZE, overlap: int = OVERLAP) -> list[Chunk]:
    chunks: list[Chunk] = []
    for section in sections:
        text = section.text.strip("\n")
        if not text.strip():
            continue
        first = (section.first_line or 1) + _leading_newlines(section.text)
        counted, newlines = 0, 0  # newlines before offset ``counted``: counted on as pieces advance
        for start, piece in _split(text, size, overlap):
            lines = None
            if section.first_line is not None:
                newlines += text.count("\n", counted, start)
                counted = start
                begin = first + newlines
                lines = (begin, begin + piece.count("\n"))
            chunks.append(Chunk(piece, section.headings, section.page, lines))
    return _merge_small(chunks, size)


def _leading_newlines(text: str) -> int:
    return len(text) - len(text.lstrip("\n"))


_BREAKS = (re.compile(r"\n\s*\n"), re.compile(r"\n"), re.compile(r"(?<=[.!?;:])\s+"), re.compile(r"\s+"))


def _split(text: str, size: int, overlap: int) -> list[tuple[int, str]]:
    """(offset, piece) pairs; pieces end at the strongest boundary found in their last half."""
    if len(text) <= size * 1.25:
        return [(0, text)]
    pieces, start = [], 0
    while start < len(text):
        end = min(len(text), start + size)
        if end < len(text):
            end = _boundary(text, start + size // 2, end) or end
        piece = text[start:end].strip("\n")
        if piece.strip():
            pieces.append((start + _leading_newlines(text[start:end]), piece))
        if end >= len(text):
            break
        nxt = max(end - overlap, start + 1)
        # Start the overlap at a word, not inside one.
        space = text.find(" ", nxt, end)
        start = space + 1 if space != -1 and space + 1 < end else nxt
    return pieces


def _boundary(text: str, lo: int, hi: int) -> Optional[int]:
    for pattern in _BREAKS:
        last = None
        for match in pattern.finditer(text, lo, hi):
            last = match.end()
        if last:
            return last
    return None


def _merge_small(chunks: list[Chunk], size: int) -> list[Chunk]:
    merged: list[Chunk] = []
    for chunk in chunks:
        prev = merged[-1] if merged else None
        if (prev is not None and len(prev.text) < MIN_CHUNK and prev.page == chunk.page
                and len(prev.text) + len(chunk.text) <= size * 1.25
                and chunk.headings[:len(prev.headings)] == prev.headings):
            lines = None
            if prev.lines and chunk.lines:
                lines = (prev.lines[0], chunk.lines[1])
            merged[-1] = Chunk(prev.text + "\n\n" + chunk.text, chunk.headings, chunk.page, lines)
        else:
            merged.append(chunk)
    return merged
