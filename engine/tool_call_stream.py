"""A reply's tool calls read as it streams (torch-free): its text goes out until a call may be
starting, then each call goes out in pieces, its name once known and its arguments as they grow,
in the formats of ``engine.tool_calls``.
"""

from __future__ import annotations

from typing import NamedTuple, Optional

from engine.tool_calls import ToolCall, ToolFormat


class CallPiece(NamedTuple):
    """A piece of a streamed call: the first names it (``id``, ``name``), the rest add argument text."""

    index: int  # the call's place in the reply
    arguments: str
    id: Optional[str] = None
    name: Optional[str] = None


class StreamStep(NamedTuple):
    text: str                 # reply text that can go out now
    calls: list[CallPiece]    # call pieces that can go out now


class ToolCallStream:
    """Streams a reply's text until a call may be starting, then holds the text back; a call goes
    out in pieces as it is written: its name once known, then its arguments as they grow (the
    text that may close them held back). ``finish`` gives what is left. ``single_call``: calls
    after the first are not read (``parallel_tool_calls: false``).

    Streamed arguments are the text the model wrote, as OpenAI streams them (JSON a schema-forced
    call always is; a call the model wrote by itself may be cut off by ``max_tokens``)."""

    def __init__(self, fmt: ToolFormat, single_call: bool = False):
        self.fmt = fmt
        self.single_call = single_call
        self.calls: list[ToolCall] = []  # the calls streamed so far, arguments as written
        self._text: list[str] = []
        self._sent = 0  # characters of the joined text already streamed
        self._holding = False
        self._scan = 0  # where the next call's head is looked for
        self._arguments_at: Optional[int] = None  # where the open call's arguments begin

    def push(self, text: str) -> StreamStep:
        self._text.append(text)
        whole = "".join(self._text)
        if self._holding:
            return StreamStep("", self._read_calls(whole))
        out = self._text_before_calls(whole)
        return StreamStep(out, self._read_calls(whole) if self._holding else [])

    def _text_before_calls(self, whole: str) -> str:
        if self.fmt.start == "{":  # Llama 3.1: a call is the whole reply
            if "<|python_tag|>".startswith(whole.strip()):  # nothing yet, or the tag's beginning
                return ""
            if whole.lstrip().startswith(("{", "<|python_tag|>")):
                self._holding = True
                return ""
            self.fmt = _NoCalls()
        start = whole.find(self.fmt.start, self._sent)
        if start >= 0:
            self._holding = True
            out, self._sent = whole[self._sent:start], start
            self._scan = start
            return out
        keep = _partial_suffix(whole, self.fmt.start, self._sent)
        out, self._sent = whole[self._sent:len(whole) - keep], len(whole) - keep
        return out

    def _read_calls(self, whole: str) -> list[CallPiece]:
        pieces: list[CallPiece] = []
        while True:
            if self._arguments_at is None:
                if self.single_call and self.calls:
                    return pieces
                head = self.fmt.call_head.search(whole, self._scan)
                if head is None:
                    return pieces
                call = ToolCall(self.fmt.call_name(head), "")
                self.calls.append(call)
                pieces.append(CallPiece(len(self.calls) - 1, "", call.id, call.name))
                self._arguments_at = head.end()
            call = self.calls[-1]
            # Everything up to a (possibly still partial) closing is arguments; at the end of the
            # reply an unclosed call's arguments are all that was written.
            end = self.fmt.call_end.search(whole, self._arguments_at, partial=True)
            closed = end is not None and not end.partial
            stop = end.start() if end is not None else len(whole)
            new = whole[self._arguments_at + len(call.arguments):stop]
            if new:
                call.arguments += new
                if pieces and pieces[-1].index == len(self.calls) - 1:  # one piece per call per step
                    last = pieces.pop()
                    pieces.append(last._replace(arguments=last.arguments + new))
                else:
                    pieces.append(CallPiece(len(self.calls) - 1, new))
            if not closed:
                return pieces
            self._scan, self._arguments_at = end.end(), None

    def finish(self) -> StreamStep:
        """What is left: the calls' last pieces; or, when no call could be read as it streamed,
        the reply's calls whole (a format written unusually: arguments before the name) or the
        held text (no call after all)."""
        whole = "".join(self._text)
        if self.calls:
            return StreamStep("", self._read_calls(whole))
        content, calls = self.fmt.parse(whole)
        if not calls:
            return StreamStep(whole[self._sent:], [])
        calls = calls[:1] if self.single_call else calls
        self.calls = calls
        pieces = [CallPiece(index, call.arguments, call.id, call.name) for index, call in enumerate(calls)]
        return StreamStep(content[self._sent:] if len(content) > self._sent else "", pieces)


class _NoCalls(ToolFormat):
    start = "\0never"

    def parse(self, text: str) -> tuple[str, list[ToolCall]]:
        return text, []


def _partial_suffix(text: str, marker: str, floor: int) -> int:
    """How many characters at the end of ``text`` (past ``floor``) could begin ``marker``."""
    for size in range(min(len(marker) - 1, len(text) - floor), 0, -1):
        if marker.startswith(text[-size:]):
            return size
    return 0
