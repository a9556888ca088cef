"""Log-probabilities in OpenAI's two shapes: chat's list of entries, and the legacy completions'
parallel lists (plain dicts: they go out in stream chunks as well as in whole bodies)."""

from __future__ import annotations

from typing import Optional

from engine.requests import TokenLogprob


class LogprobFormatter:
    """Token ids to the text clients see. ``as_ids`` (vLLM's ``return_tokens_as_token_ids``)
    names each token ``token_id:<id>``, so a client can tell tokens apart that decode alike."""

    def __init__(self, tokenizer, as_ids: bool = False):
        self.tokenizer = tokenizer
        self.as_ids = as_ids
        self._texts: dict[int, str] = {}
        self._byte_level = _byte_level(tokenizer)

    def token_bytes(self, token_id: int, text: str) -> list[int]:
        """The token's own bytes: a byte-level token may hold part of a character, which its
        text shows as U+FFFD; its bytes let a client join the pieces (as OpenAI's do)."""
        if self._byte_level:
            piece = self.tokenizer.convert_ids_to_tokens(token_id)
            if piece and all(char in _UNICODE_TO_BYTE for char in piece):
                return [_UNICODE_TO_BYTE[char] for char in piece]
        return list(text.encode("utf-8", "replace"))

    def token(self, token_id: int) -> str:
        if self.as_ids:
            return f"token_id:{token_id}"
        text = self._texts.get(token_id)
        if text is None:
            text = self._texts[token_id] = self.tokenizer.decode([token_id])
        return text

    # ------------------------------------------------------------------ chat
    def _top(self, token_id: int, logprob: float) -> dict:
        text = self.token(token_id)
        return {"token": text, "logprob": logprob,
                "bytes": self.token_bytes(token_id, self.tokenizer.decode([token_id]) if self.as_ids else text)}

    def chat_content(self, entries: list[TokenLogprob]) -> list[dict]:
        return [{**self._top(e.token_id, e.logprob), "top_logprobs": [self._top(i, lp) for i, lp in e.top]}
                for e in entries]

    def chat(self, entries: Optional[list[TokenLogprob]]) -> Optional[dict]:
        return None if entries is None else {"content": self.chat_content(entries), "refusal": None}

    # ------------------------------------------------------------------ completions
    def completion(self, entries: list[Optional[TokenLogprob]], offset: int = 0,
                   prompt_ids: Optional[list[int]] = None) -> dict:
        """``entries``: one per token; a None entry (the prompt's first token) needs its id from
        ``prompt_ids``. ``offset``: where the first token's text starts in the choice's text."""
        body: dict = {"tokens": [], "token_logprobs": [], "top_logprobs": [], "text_offset": []}
        for place, entry in enumerate(entries):
            token_id = entry.token_id if entry is not None else prompt_ids[place]
            text = self.token(token_id)
            body["tokens"].append(text)
            body["token_logprobs"].append(entry.logprob if entry is not None else None)
            body["top_logprobs"].append(None if entry is None else {self.token(i): lp for i, lp in entry.top})
            body["text_offset"].append(offset)
            offset += len(text)
        return body


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2's byte-level alphabet: each byte as the printable character its vocabulary uses."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(
        range(ord("®"), ord("ÿ") + 1))
    characters = printable[:]
    extra = 0
    for byte in range(256):
        if byte not in printable:
            printable.append(byte)
            characters.append(256 + extra)
            extra += 1
    return dict(zip(printable, map(chr, characters)))


_UNICODE_TO_BYTE = {char: byte for byte, char in _bytes_to_unicode().items()}


def _byte_level(tokenizer) -> bool:
    backend = getattr(tokenizer, "backend_tokenizer", None)
    decoder = getattr(backend, "decoder", None)
    return type(decoder).__name__ == "ByteLevel"
