"""Files → text with its structure: sections that carry their heading path and where they sit
(a PDF page, or the 1-based line the section starts on). A file that cannot give text raises
``ExtractError`` whose message is the reason the user sees ("encrypted PDF", "not UTF-8 text" …)."""

from __future__ import annotations

import re
import threading
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

MARKDOWN = {".md", ".markdown"}
RST = {".rst"}
HTML = {".html", ".htm"}
PDF = {".pdf"}
PLAIN = {".txt", ".text"}
CODE = {".py", ".js", ".ts", ".tsx", ".jsx", ".c", ".h", ".cc", ".cpp", ".hpp", ".rs", ".go", ".java",
        ".kt", ".swift", ".rb", ".php", ".cs", ".sh", ".bash", ".sql", ".toml", ".yaml", ".yml", ".json",
        ".ini", ".cfg", ".css", ".scala", ".lua", ".r", ".m", ".pl", ".tex"}
SUPPORTED = MARKDOWN | RST | HTML | PDF | PLAIN | CODE
# Bigger text files are rarely documents (logs, dumps); they are listed with this reason.
MAX_TEXT_BYTES = 20 * 1024 * 1024


class ExtractError(Exception):
    """The file gives no text; ``str(exc)`` is the reason shown in the file list."""


@dataclass
class Section:
    text: str
    headings: tuple[str, ...] = ()
    page: Optional[int] = None        # PDF, 1-based
    first_line: Optional[int] = None  # text formats: the 1-based line ``text`` starts on


@dataclass
class Document:
    title: Optional[str]
    sections: list[Section] = field(default_factory=list)

    @property
    def characters(self) -> int:
        return sum(len(s.text) for s in self.sections)


def is_supported(path: Path) -> bool:
    return path.suffix.lower() in SUPPORTED


def extract(path: Path, data: Optional[bytes] = None) -> Document:
    """Read ``path`` (or its already-read bytes) into sections.

    Raises:
        ExtractError: with the reason (file vanished, permission denied, not UTF-8 text,
            encrypted PDF, no text layer: needs OCR, damaged PDF …).
    """
    if data is None:
        data = read_bytes(path)
    suffix = path.suffix.lower()
    if suffix in PDF:
        return _pdf(data)
    text = decode_text(data)
    if suffix in MARKDOWN:
        return _markdown(text)
    if suffix in RST:
        return _rst(text)
    if suffix in HTML:
        return _html(text)
    return Document(title=None, sections=[Section(text, (), None, 1)] if text.strip() else [])


def read_bytes(path: Path) -> bytes:
    try:
        size = path.stat().st_size
        if size > MAX_TEXT_BYTES and path.suffix.lower() not in PDF:
            raise ExtractError(f"too large for a text document ({size / 1e6:.0f} MB; the limit is "
                               f"{MAX_TEXT_BYTES / 1e6:.0f} MB)")
        return path.read_bytes()
    except FileNotFoundError:
        raise ExtractError("file vanished") from None
    except PermissionError:
        raise ExtractError("unreadable: permission denied") from None
    except IsADirectoryError:
        raise ExtractError("not a file") from None
    except OSError as exc:
        raise ExtractError(f"unreadable: {exc.strerror or exc}") from None


def decode_text(data: bytes) -> str:
    # NUL bytes never occur in text a person wrote: a binary file with a text name.
    if b"\x00" in data[:8192]:
        raise ExtractError("not UTF-8 text")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise ExtractError("not UTF-8 text") from None


# ---------------------------------------------------------------------------------- Markdown
_ATX = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")
_FENCE = re.compile(r"^\s*(```|~~~)")


def _markdown(text: str) -> Document:
    lines = text.splitlines()
    headings: list[tuple[int, str]] = []
    sections: list[Section] = []
    start, body, in_fence = 1, [], False

    def close():
        if "".join(body).strip():
            sections.append(Section("\n".join(body), tuple(h for _, h in headings), None, start))

    for number, line in enumerate(lines, 1):
        if _FENCE.match(line):
            in_fence = not in_fence
        match = None if in_fence else _ATX.match(line)
        if match:
            close()
            level = len(match[1])
            headings = [h for h in headings if h[0] < level] + [(level, match[2])]
            start, body = number, [line]
        else:
            body.append(line)
    close()
    title = next((s.headings[0] for s in sections if s.headings), None)
    return Document(title, sections)


# ---------------------------------------------------------------------------------- reStructuredText
_RST_ADORNMENT = re.compile(r"^([=\-~^\"'`#*+_.:])\1{2,}\s*$")


def _rst(text: str) -> Document:
    lines = text.splitlines()
    levels: list[str] = []  # adornment characters in the order first seen: the document's levels
    headings: list[str] = []
    sections: list[Section] = []
    start, body = 1, []
    i = 0
    while i < len(lines):
        line = lines[i]
        nxt = lines[i + 1] if i + 1 < len(lines) else ""
        over = _RST_ADORNMENT.match(line) and i + 2 < len(lines) and _RST_ADORNMENT.match(lines[i + 2])
        if over and lines[i + 1].strip():
            title, char, skip = lines[i + 1].strip(), "o" + line.strip()[0], 3
        elif line.strip() and _RST_ADORNMENT.match(nxt) and len(nxt.strip()) >= len(line.strip()):
            title, char, skip = line.strip(), nxt.strip()[0], 2
        else:
            body.append(line)
            i += 1
            continue
        if "".join(body).strip():
            sections.append(Section("\n".join(body), tuple(headings), None, start))
        if char not in levels:
            levels.append(char)
        level = levels.index(char)
        headings = headings[:level] + [title]
        # The adornment lines stay in the text: its lines are then the file's lines, one for one.
        start, body = i + 1, lines[i:i + skip]
        i += skip
    if "".join(body).strip():
        sections.append(Section("\n".join(body), tuple(headings), None, start))
    title = next((s.headings[0] for s in sections if s.headings), None)
    return Document(title, sections)


# ---------------------------------------------------------------------------------- HTML
_SKIP_TAGS = {"script", "style", "noscript", "template", "svg", "head", "title"}
_BLOCK_TAGS = {"p", "div", "br", "li", "tr", "pre", "table", "ul", "ol", "dl", "dt", "dd", "section",
               "article", "blockquote", "hr", "h1", "h2", "h3", "h4", "h5", "h6"}
_HEADINGS = {"h1": 1, "h2": 2, "h3": 3, "h4": 4, "h5": 5, "h6": 6}


def _html(text: str) -> Document:
    """Text between headings becomes a section; its line is the source line of its heading.

    lxml (libxml2's HTML parser) reads tag soup as browsers do; the text is taken in C
    (``tostring(method="text")``) with a marker put in each heading to cut it into sections afterwards: walking
    every element in Python took 5 times as long on the Debian manuals.
    """
    import lxml.etree

    # lxml.etree's parser, not lxml.html's: that one makes a Python object per element (a third of the time).
    parser = lxml.etree.HTMLParser(encoding="utf-8", remove_comments=True, remove_pis=True)
    try:
        root = lxml.etree.fromstring(text.encode("utf-8"), parser=parser)
    except (lxml.etree.ParserError, lxml.etree.XMLSyntaxError, ValueError):
        root = None
    if root is None:  # nothing but whitespace or comments
        return Document(None, [])
    title = " ".join((root.findtext(".//title") or "").split()) or None
    for element in list(root.iter(*_SKIP_TAGS)):
        _drop(element)
    for element in root.iter(*_BLOCK_TAGS):
        element.tail = "\n" + (element.tail or "")
    found = []
    for number, heading in enumerate(root.iter(*_HEADINGS)):
        found.append((_HEADINGS[heading.tag], " ".join("".join(heading.itertext()).split()), heading.sourceline or 1))
        heading.text = f"\ue000{number}\ue001" + (heading.text or "")  # private-use marks: XML text takes no NUL
    # The whole text in C: three times as fast as joining itertext()'s strings, the same text.
    parts = _MARKER.split(lxml.etree.tostring(root, method="text", encoding=str, with_tail=False))
    sections: list[Section] = []
    headings: list[tuple[int, str]] = []
    pieces = [(None, parts[0])] + [(int(parts[i]), parts[i + 1]) for i in range(1, len(parts) - 1, 2)]
    for number, body in pieces:
        start = 1
        if number is not None:
            level, heading, start = found[number]
            headings = [h for h in headings if h[0] < level] + ([(level, heading)] if heading else [])
        joined = _BLANK_LINES.sub("\n\n", "\n".join(" ".join(line.split()) for line in body.split("\n"))).strip()
        if joined:
            sections.append(Section(joined, tuple(h for _, h in headings), None, start))
    title = title or next((s.headings[0] for s in sections if s.headings), None)
    return Document(title, sections)


def _drop(element) -> None:
    """Remove ``element`` and what it holds, keeping the text after it (its tail)."""
    parent = element.getparent()
    if parent is None:
        return
    if element.tail:
        previous = element.getprevious()
        if previous is not None:
            previous.tail = (previous.tail or "") + element.tail
        else:
            parent.text = (parent.text or "") + element.tail
    parent.remove(element)


_MARKER = re.compile("\ue000(\\d+)\ue001")
_BLANK_LINES = re.compile(r"\n{3,}")


# ---------------------------------------------------------------------------------- PDF
def _pdf(data: bytes) -> Document:
    import io
    import logging

    from pypdf import PdfReader
    from pypdf.errors import DependencyError, FileNotDecryptedError, PdfReadError

    logging.getLogger("pypdf").setLevel(logging.ERROR)  # damaged-but-readable files warn per object
    try:
        reader = PdfReader(io.BytesIO(data))
        if reader.is_encrypted:
            # Many PDFs are "encrypted" with an empty user password (print/copy restrictions only):
            # those open; one that needs a password is reported.
            try:
                if not reader.decrypt(""):
                    raise ExtractError("encrypted PDF")
            except (FileNotDecryptedError, DependencyError, NotImplementedError):
                raise ExtractError("encrypted PDF") from None
        sections = []
        outline = _page_headings(reader)
        fast = _pdfium_texts(data, len(reader.pages))
        for number, page in enumerate(reader.pages, 1):
            raw = fast[number - 1] if fast is not None else page.extract_text() or ""
            # NFKC: PDFs set "file" with the ligature "ﬁ" (U+FB01), which no query word matches.
            text = unicodedata.normalize("NFKC", raw).strip()
            if text:
                sections.append(Section(text, outline.get(number, ()), number, None))
        title = (reader.metadata or {}).get("/Title") if reader.metadata else None
    except ExtractError:
        raise
    except FileNotDecryptedError:
        raise ExtractError("encrypted PDF") from None
    except (PdfReadError, ValueError, KeyError, TypeError, AttributeError, IndexError, RecursionError) as exc:
        raise ExtractError(f"damaged PDF: {exc}") from None
    if not sections:
        raise ExtractError("no text layer: needs OCR")
    return Document(str(title) if title else None, sections)


# PDFium is not thread-safe: one page at a time in a process (several collections may index at once).
_PDFIUM_LOCK = threading.Lock()
_PDFIUM_NOISE = str.maketrans({"\r": None, "\x02": None, "\ufffe": None})  # CRLF ends, soft hyphens


def _pdfium_texts(data: bytes, pages: int) -> Optional[list[str]]:
    """Each page's text through PDFium (pypdfium2): 0.3 s for docbook-xsl's 95-page reference
    where pypdf's extract_text took 2.2. pypdf still opens the file (encryption, outline, title, the
    damaged-file reasons); None, and pypdf extracts, when PDFium cannot read it or counts other pages."""
    try:
        import pypdfium2
    except ImportError:
        return None
    with _PDFIUM_LOCK:
        try:
            document = pypdfium2.PdfDocument(data)
        except Exception:  # pypdfium2's PdfiumError, or a password pypdf's decrypt("") got past
            return None
        try:
            if len(document) != pages:
                return None
            texts = []
            for index in range(pages):
                page = document[index]
                textpage = page.get_textpage()
                texts.append(textpage.get_text_range().translate(_PDFIUM_NOISE))
                textpage.close()
                page.close()
            return texts
        except Exception:
            return None
        finally:
            document.close()


def _page_headings(reader) -> dict[int, tuple[str, ...]]:
    """The outline (bookmarks) entry in force on each page, as a heading path; {} without one."""
    starts: list[tuple[int, tuple[str, ...]]] = []

    def walk(items, path):
        last = None
        for item in items:
            if isinstance(item, list):
                if last is not None:
                    walk(item, last)
                continue
            try:
                page = reader.get_destination_page_number(item) + 1
            except Exception:  # a bookmark to nowhere: skip it, keep the rest
                continue
            last = path + (str(item.title).strip(),)
            starts.append((page, last))

    try:
        walk(reader.outline, ())
    except Exception:
        return {}
    starts.sort(key=lambda s: s[0])
    headings: dict[int, tuple[str, ...]] = {}
    current: tuple[str, ...] = ()
    index = 0
    for page in range(1, len(reader.pages) + 1):
        while index < len(starts) and starts[index][0] <= page:
            current = starts[index][1]
            index += 1
        if current:
            headings[page] = current
    return headings
