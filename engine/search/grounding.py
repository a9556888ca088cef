"""Grounded answers: retrieved passages become numbered sources in the prompt, the answer's
``[n]`` point back at them, and a number that names no source given is reported.

The numbering is made once, here, and the same list goes into the prompt and out as
``citations``: source [1] in the prompt is ``citations[0]`` with ``n == 1``, always.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Optional, Sequence

from engine.search.retrieval import Hit

INSTRUCTIONS = ("Answer the user's question using the numbered sources below. Cite each source you use "
                "with its number in square brackets, like [1]. If the sources do not hold the answer, say so.")
SOURCE_CHARS = 1500
_CITATION = re.compile(r"\[(\d{1,4}(?:\s*,\s*\d{1,4})*)\]")


def source_label(hit: Hit) -> str:
    where = hit.heading or hit.title or ""
    place = f", page {hit.page}" if hit.page else (f", lines {hit.lines[0]}-{hit.lines[1]}" if hit.lines else "")
    return f"{Path(hit.path).name}{place}" + (f" — {where}" if where else "")


def sources_text(hits: Sequence[Hit], chars: int = SOURCE_CHARS) -> str:
    parts = [INSTRUCTIONS, ""]
    for n, hit in enumerate(hits, 1):
        text = hit.text if len(hit.text) <= chars else hit.text[:chars].rsplit(" ", 1)[0] + " …"
        parts.append(f"[{n}] {source_label(hit)}\n{text}\n")
    return "\n".join(parts).rstrip() + "\n"


def grounded_messages(messages: list[dict[str, str]], hits: Sequence[Hit], chars: int = SOURCE_CHARS) -> list[dict[str, str]]:
    """``messages`` with the sources in the system message (added first when there is none):
    chat templates expect the system message first, and many accept only one."""
    sources = sources_text(hits, chars)
    if messages and messages[0]["role"] == "system":
        first = {**messages[0], "content": f"{messages[0]['content']}\n\n{sources}".lstrip()}
        return [first, *messages[1:]]
    return [{"role": "system", "content": sources}, *messages]


def last_question(messages: list[dict[str, str]]) -> Optional[str]:
    for message in reversed(messages):
        if message["role"] == "user" and message["content"].strip():
            return message["content"]
    return None


def citations(hits: Sequence[Hit]) -> list[dict]:
    return [{"n": n, "collection": h.collection, "path": h.path, "title": h.title, "heading": h.heading,
             "page": h.page, "lines": h.lines, "snippet": h.snippet} for n, h in enumerate(hits, 1)]


def cited_numbers(answer: str) -> list[int]:
    """Every number cited as ``[n]`` or ``[n, m]``, in order of first use."""
    found: dict[int, None] = {}
    for match in _CITATION.finditer(answer):
        for part in match.group(1).split(","):
            found[int(part)] = None
    return list(found)


def unknown_citations(answer: str, sources: int) -> list[int]:
    """The bracketed numbers in ``answer`` that name none of the ``sources`` given (1..sources)."""
    return [n for n in cited_numbers(answer) if not 1 <= n <= sources]
