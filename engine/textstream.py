"""Turning a stream of token ids into text a client can show (torch-free).

Three stages, each fed the previous one's output:

* ``IncrementalDetokenizer``: token ids -> text, never emitting half a UTF-8 character
  (byte-level tokens can split one; the replacement character is held back until it completes).
* ``StopMatcher``: cuts the text at the first stop string and holds back a tail that might be
  the start of one, so a stop string is never sent to a client.
* ``ReasoningSplitter``: DeepSeek-R1 style ``<think>…</think>`` goes to ``reasoning_content``,
  the rest to ``content``; partial tags are held back until they are decided.
"""

from __future__ import annotations

from typing import Protocol, Sequence

THINK_OPEN = "<think>"
THINK_CLOSE = "</think>"


class Decoder(Protocol):
    def decode(self, ids: Sequence[int], skip_special_tokens: bool = ...) -> str: ...


class IncrementalDetokenizer:
    """Decode token by token with a sliding window (as TGI and vLLM do).

    Decoding a window that starts a few tokens back keeps the tokenizer's handling of leading
    spaces and merges right; only the part past the previous read offset is emitted.
    """

    def __init__(self, tokenizer: Decoder, skip_special_tokens: bool = True):
        self._tokenizer = tokenizer
        self._skip = skip_special_tokens
        self._ids: list[int] = []
        self._prefix_offset = 0
        self._read_offset = 0

    def _decode(self, ids: Sequence[int]) -> str:
        return self._tokenizer.decode(ids, skip_special_tokens=self._skip)

    def add(self, token_id: int) -> str:
        self._ids.append(token_id)
        prefix_text = self._decode(self._ids[self._prefix_offset : self._read_offset])
        new_text = self._decode(self._ids[self._prefix_offset :])
        if len(new_text) > len(prefix_text) and not new_text.endswith("\ufffd"):
            self._prefix_offset = self._read_offset
            self._read_offset = len(self._ids)
            return new_text[len(prefix_text) :]
        return ""

    def flush(self) -> str:
        """Whatever is held back at the end (an incomplete character is emitted as U+FFFD)."""
        prefix_text = self._decode(self._ids[self._prefix_offset : self._read_offset])
        new_text = self._decode(self._ids[self._prefix_offset :])
        self._prefix_offset = self._read_offset = len(self._ids)
        return new_text[len(prefix_text) :] if len(new_text) > len(prefix_text) else ""


def _partial_suffix_len(text: str, patterns: Sequence[str]) -> int:
    """Length of the longest suffix of ``text`` that is a proper prefix of one of ``patterns``."""
    best = 0
    for pattern in patterns:
        for size in range(min(len(pattern) - 1, len(text)), best, -1):
            if text.endswith(pattern[:size]):
                best = size
                break
    return best


class StopMatcher:
    """Finds stop strings across chunk boundaries."""

    def __init__(self, stops: Sequence[str]):
        self._stops = [s for s in stops if s]
        self._pending = ""
        self.stopped = False

    def push(self, text: str) -> str:
        """Return the text that is safe to emit; sets ``stopped`` when a stop string appears."""
        if self.stopped:
            return ""
        if not self._stops:
            return text
        self._pending += text
        hits = [(self._pending.find(s), s) for s in self._stops if s in self._pending]
        if hits:
            index = min(hits)[0]
            emit, self._pending = self._pending[:index], ""
            self.stopped = True
            return emit
        keep = _partial_suffix_len(self._pending, self._stops)
        emit = self._pending[: len(self._pending) - keep]
        self._pending = self._pending[len(self._pending) - keep :]
        return emit

    def flush(self) -> str:
        emit, self._pending = ("" if self.stopped else self._pending), ""
        return emit


class ReasoningSplitter:
    """Splits ``<think>…</think>`` from the answer.

    Args:
        starts_in_reasoning: the prompt already opened a ``<think>`` block (DeepSeek-R1's chat
            template ends the generation prompt with ``<think>\\n``).
    """

    def __init__(self, starts_in_reasoning: bool = False):
        self._state = "reasoning" if starts_in_reasoning else "start"
        self._buffer = ""
        self._strip_content_start = False

    def push(self, text: str) -> tuple[str, str]:
        """Return ``(reasoning, content)`` that is safe to emit now."""
        self._buffer += text
        reasoning, content = "", ""
        while self._buffer:
            if self._state == "start":
                stripped = self._buffer.lstrip()
                if stripped.startswith(THINK_OPEN):
                    self._buffer = stripped[len(THINK_OPEN) :]
                    self._state = "reasoning"
                    continue
                if not stripped or THINK_OPEN.startswith(stripped):
                    break  # undecided: whitespace or a partial "<think>"
                self._state = "content"
                continue
            if self._state == "reasoning":
                index = self._buffer.find(THINK_CLOSE)
                if index >= 0:
                    reasoning += self._buffer[:index]
                    self._buffer = self._buffer[index + len(THINK_CLOSE) :]
                    self._state = "content"
                    self._strip_content_start = True
                    continue
                keep = _partial_suffix_len(self._buffer, [THINK_CLOSE])
                reasoning += self._buffer[: len(self._buffer) - keep]
                self._buffer = self._buffer[len(self._buffer) - keep :]
                break
            # content
            if self._strip_content_start:
                self._buffer = self._buffer.lstrip()
                if not self._buffer:
                    break
                self._strip_content_start = False
            content += self._buffer
            self._buffer = ""
        return reasoning, content

    def flush(self) -> tuple[str, str]:
        rest, self._buffer = self._buffer, ""
        if self._state == "reasoning":
            return rest, ""
        if self._state == "content" and self._strip_content_start:
            rest = rest.lstrip()
        return "", rest


def prompt_opens_reasoning(prompt_text: str) -> bool:
    """True when the rendered prompt leaves a ``<think>`` block open for the model to continue."""
    return prompt_text.rstrip().endswith(THINK_OPEN)
