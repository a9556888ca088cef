"""ChatSession: the chat's view model. It owns the conversation being shown, streams replies
through the engine client and writes every change to the store; the panel only draws it."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Callable, Optional

from PySide6.QtCore import QObject, QTimer, Signal

from deepseek_desktop.notifier import Notifier
from deepseek_desktop.state.chat_store import StoreThread, new_id
from deepseek_desktop.state.chat_tools import (
    SEARCH_TOOL_NAME, SEARCH_TOOL_TOP_K, SettingsProblem, history_entry, joined_tool_calls, offered_tools,
    search_query, search_result_text,
)
from deepseek_desktop.state.settings import read_json, write_json

if TYPE_CHECKING:  # httpx comes with the engine session's first attach, not at start-up
    from deepseek_desktop.client import EngineClient, StreamHandle

# None: not sent, so the engine samples with the model's own settings (its generation_config.json),
# else the API's defaults; 0 max tokens: what the context leaves.
DEFAULT_SETTINGS = {"temperature": None, "top_p": None, "max_tokens": 0}
# What every conversation was given before the model's own settings were used: read as "not chosen".
OLD_DEFAULTS = {"temperature": 0.7, "top_p": 0.95}


def conversation_settings(stored: Optional[dict]) -> dict:
    settings = {**DEFAULT_SETTINGS, **(stored or {})}
    if all(settings.get(key) == value for key, value in OLD_DEFAULTS.items()):
        settings.update(dict.fromkeys(OLD_DEFAULTS))
    return settings
SAVE_EVERY_MS = 1000  # a streaming reply is written this often, and when it ends
SEARCH_TOP_K = 5      # passages a grounded reply is given (the search extension's default)


def stats_text(stats: dict) -> str:
    """"TTFT 210 ms · 14.2 tok/s · 31 → 96 tokens" from what is known."""
    parts = []
    if stats.get("ttft_ms") is not None:
        parts.append(f"TTFT {stats['ttft_ms']:.0f} ms")
    if stats.get("tokens_per_s") is not None:
        parts.append(f"{stats['tokens_per_s']:.1f} tok/s")
    if stats.get("completion_tokens") is not None:
        about = "≈" if stats.get("approximate") else ""
        if stats.get("prompt_tokens") is not None:
            parts.append(f"{stats['prompt_tokens']} → {about}{stats['completion_tokens']} tokens")
        else:  # stopped before the engine's usage came: the prompt's count is not known here
            parts.append(f"{about}{stats['completion_tokens']} tokens")
    return " · ".join(parts)


class ChatSession(QObject):
    # ``object``, not ``dict``/``list``: the panel must get the very dicts the session updates,
    # and a Signal(dict) may hand over a converted copy.
    conversations_changed = Signal(object)
    messages_reset = Signal(object)      # the whole conversation (open, truncate)
    message_added = Signal(object)
    message_updated = Signal(object)     # a streaming reply grew or a message changed state
    busy_changed = Signal(bool)
    generating = Signal(float)           # while a reply streams, about once a second: its tokens/s so far

    def __init__(self, store: StoreThread, notifier: Notifier, client: Callable[[], Optional[EngineClient]],
                 model_id: Callable[[], Optional[str]], parent=None):
        super().__init__(parent)
        self.store = store
        self.notifier = notifier
        self._client = client
        self._model_id = model_id
        self.current: Optional[dict] = None
        self.messages: list[dict] = []
        self.reply: Optional[dict] = None
        self.handle: Optional[StreamHandle] = None
        self.query = ""
        # The conversation shown when the app was last closed: opened again once the list comes.
        self._reopen: Optional[str] = read_json("chat/last_conversation", None)
        self._save_timer = QTimer(self, interval=SAVE_EVERY_MS, timeout=self._save_reply)
        self._first_piece_at: Optional[float] = None
        self._pieces = 0
        # Messages whose last write failed (a full disk): written again with the next save.
        self._unsaved: dict[str, dict] = {}

    @property
    def busy(self) -> bool:
        return self.reply is not None

    # -- conversations
    def refresh(self, query: Optional[str] = None) -> None:
        if query is not None:
            self.query = query
        self.store.conversations(self.query, on_done=self._on_conversations)

    def _on_conversations(self, conversations: list) -> None:
        wanted, self._reopen = self._reopen, None
        if wanted and self.current is None:
            match = next((c for c in conversations if c["id"] == wanted), None)
            if match is not None:
                self.open(match)
        self.conversations_changed.emit(conversations)

    def new_conversation(self, title: str = "New chat") -> dict:
        conversation = {"id": new_id(), "title": title, "system_prompt": "", "settings": dict(DEFAULT_SETTINGS)}
        self.store.create_conversation(conversation["id"], title, "", conversation["settings"])
        self._show(conversation, [])
        self.refresh()
        return conversation

    def open(self, conversation: dict) -> None:
        if self.busy:
            self.notifier.warning("stop the reply in progress before switching conversations")
            return
        self.store.messages(conversation["id"], on_done=lambda messages: self._show(conversation, messages))

    def _show(self, conversation: Optional[dict], messages: list[dict]) -> None:
        if (conversation or {}).get("id") != (self.current or {}).get("id"):
            write_json("chat/last_conversation", conversation["id"] if conversation else None)
        self.current = conversation
        if conversation is not None:
            conversation.setdefault("settings", dict(DEFAULT_SETTINGS))
        self.messages = messages
        self.messages_reset.emit(messages)

    def rename(self, conversation_id: str, title: str) -> None:
        title = title.strip() or "Untitled"
        self.store.update_conversation(conversation_id, title=title)
        if self.current and self.current["id"] == conversation_id:
            self.current["title"] = title
        self.refresh()

    def delete(self, conversation_id: str) -> None:
        if self.current and self.current["id"] == conversation_id:
            if self.busy:
                self.stop()
            self._show(None, [])
        self._forget_unsaved(conversation_id)
        self.store.delete_conversation(conversation_id)
        self.refresh()

    def configure(self, system_prompt: str, settings: dict) -> None:
        if self.current is None:
            self.new_conversation()
        self.current["system_prompt"] = system_prompt
        # Choices made elsewhere than the settings form (the documents used) stay as they are.
        kept = {k: v for k, v in (self.current.get("settings") or {}).items() if k not in DEFAULT_SETTINGS}
        self.current["settings"] = {**DEFAULT_SETTINGS, **kept, **settings}
        self.store.update_conversation(self.current["id"], system_prompt=system_prompt,
                                       settings=self.current["settings"])

    def use_documents(self, collection: Optional[str]) -> None:
        """Ground this conversation's replies in a document collection (None: in nothing): each
        request then carries the ``search`` extension and each reply keeps its citations."""
        if self.current is None:
            self.new_conversation()
        settings = self.current.setdefault("settings", dict(DEFAULT_SETTINGS))
        if settings.get("documents") == collection:
            return
        settings["documents"] = collection
        self.store.update_conversation(self.current["id"], settings=settings)

    def configure_structured(self, json_schema: Optional[dict], tools: list[dict], search_tool: bool,
                             tool_choice: str = "auto") -> None:
        """This conversation's reply format and tools (checked by ``state.chat_tools`` first):
        ``json_schema`` {"name", "schema"} or None; ``tools`` the user's definitions;
        ``search_tool``: offer ``search_documents`` over its documents; ``tool_choice`` "auto" or
        "required" (a call after each message of yours; after a tool's result the model may answer).

        Raises:
            SettingsProblem: a schema together with tools (the engine serves one or the other).
        """
        if json_schema and (tools or search_tool):
            raise SettingsProblem("A JSON schema and tools cannot be used together: the reply is either "
                                  "JSON of the schema or may call a tool. Clear one of them.")
        if self.current is None:
            self.new_conversation()
        settings = self.current.setdefault("settings", dict(DEFAULT_SETTINGS))
        settings.update(json_schema=json_schema, tools=tools, search_tool=search_tool, tool_choice=tool_choice)
        self.store.update_conversation(self.current["id"], settings=settings)

    @property
    def documents(self) -> Optional[str]:
        """The collection this conversation's replies are grounded in, if any."""
        return ((self.current or {}).get("settings") or {}).get("documents")

    # -- messages
    def send(self, text: str, edit_position: Optional[int] = None) -> bool:
        """Send ``text`` (replacing the message at ``edit_position`` and all after it)."""
        text = text.strip()
        if not text or not self._ready_to_send():
            return False
        if self.current is None:
            self.new_conversation(title=text[:48])
        elif not self.messages and self.current["title"] == "New chat":
            self.rename(self.current["id"], text[:48])
        if edit_position is not None:
            self._truncate(edit_position)
        self._add({"role": "user", "content": text, "status": "done"})
        self._start_reply()
        return True

    def regenerate(self) -> bool:
        if not self.messages or not self._ready_to_send():
            return False
        if self.messages[-1]["role"] == "assistant":
            self._truncate(self.messages[-1]["position"])
        self._start_reply()
        return True

    def stop(self) -> None:
        if self.handle is not None:
            self.handle.stop()

    def interrupt(self, why: str) -> None:
        """The engine went away: keep what arrived and mark it, without waiting for the stream."""
        if self.reply is not None:
            self._finish("interrupted", {"error": why})

    def _ready_to_send(self) -> bool:
        if self.busy:
            self.notifier.warning("a reply is still streaming; stop it first")
            return False
        if self._client() is None or not self._model_id():
            self.notifier.warning("no model is loaded: load one in the Models panel first")
            return False
        return True

    def _truncate(self, position: int) -> None:
        self.messages = [m for m in self.messages if m["position"] < position]
        self._forget_unsaved(self.current["id"], position)
        self.store.truncate(self.current["id"], position)
        self.messages_reset.emit(self.messages)

    def _add(self, fields: dict) -> dict:
        message = {"id": new_id(), "conversation_id": self.current["id"], "position": len(self.messages),
                   "content": "", "reasoning": "", "stats": {}, "created": time.time(), **fields}
        self.messages.append(message)
        self._save(message)
        self.message_added.emit(message)
        return message

    def request_body(self) -> dict:
        settings = conversation_settings(self.current.get("settings"))
        history = [history_entry(m) for m in self._answered_turns()]
        if self.current.get("system_prompt"):
            history.insert(0, {"role": "system", "content": self.current["system_prompt"]})
        body = {"model": self._model_id(), "messages": history}
        for key in ("temperature", "top_p"):  # only what the user chose
            if settings.get(key) is not None:
                body[key] = settings[key]
        if settings.get("max_tokens"):
            body["max_tokens"] = int(settings["max_tokens"])
        tools = offered_tools(settings)
        if settings.get("documents") and not settings.get("search_tool"):
            body["search"] = {"collection": settings["documents"], "top_k": SEARCH_TOP_K}
        if settings.get("json_schema"):
            body["response_format"] = {"type": "json_schema", "json_schema": {**settings["json_schema"], "strict": True}}
        elif tools:
            body["tools"] = tools
            # "required" forces a call after the user's message; after a tool's result the model
            # may answer (or it would call tools for ever).
            after_result = bool(history) and history[-1]["role"] == "tool"
            body["tool_choice"] = "auto" if after_result else settings.get("tool_choice") or "auto"
        return body

    def _answered_turns(self) -> list[dict]:
        """The conversation as the model should see it: a turn the engine refused (too long a
        prompt…) stays on screen but is not sent again, or every later message would fail too."""
        turns = []
        for i, m in enumerate(self.messages):
            refused = i + 1 < len(self.messages) and self.messages[i + 1]["status"] == "error"
            said = m["content"] or m.get("tool_calls") or m["role"] == "tool"
            if said and m is not self.reply and not refused:
                turns.append(m)
        return turns

    def _start_reply(self) -> None:
        stats = {"model": self._model_id()}
        schema = (self.current.get("settings") or {}).get("json_schema")
        if schema:  # the reply is JSON of this schema: drawn formatted
            stats["json_schema"] = schema["name"]
        self.reply = self._add({"role": "assistant", "status": "streaming", "stats": stats})
        self._first_piece_at, self._pieces = None, 0
        self.busy_changed.emit(True)
        body = self.request_body()
        reply = self.reply
        self.handle = self._client().chat_stream(
            body, on_piece=lambda piece: self._on_piece(reply, piece),
            on_done=lambda result: self._on_done(reply, result),
            on_failed=lambda message: self._on_failed(reply, message))
        self._save_timer.start()

    def _on_piece(self, reply: dict, piece: tuple) -> None:
        if reply is not self.reply:
            return  # a late piece of a reply already marked interrupted
        kind, text = piece
        if kind == "citations":  # a grounded reply's sources: kept with it, written with it
            reply["citations"] = text
            self.message_updated.emit(reply)
            return
        if kind == "tool_calls":  # the calls so far, joined from their streamed pieces
            reply["tool_calls"] = joined_tool_calls(text)
            self.message_updated.emit(reply)
            return
        now = time.monotonic()
        self._first_piece_at = self._first_piece_at or now
        self._pieces += 1
        reply["reasoning" if kind == "reasoning" else "content"] += text
        self.message_updated.emit(reply)

    def _on_done(self, reply: dict, result: dict) -> None:
        if reply is not self.reply:
            return
        stats = {}
        usage = result.get("usage") or {}
        if result.get("ttft_s") is not None:
            stats["ttft_ms"] = result["ttft_s"] * 1000
        if usage:
            stats["prompt_tokens"] = usage.get("prompt_tokens")
            stats["completion_tokens"] = usage.get("completion_tokens")
        else:  # stopped or cut off before the usage chunk: count the pieces that came
            stats["completion_tokens"] = result.get("pieces", 0)
            stats["approximate"] = True
        if result.get("decode_s") and (stats.get("completion_tokens") or 0) > 1:
            stats["tokens_per_s"] = (stats["completion_tokens"] - 1) / result["decode_s"]
        stats["finish_reason"] = result.get("finish_reason")
        if result.get("unknown_citations"):  # [n] in the reply that name no source it was given
            stats["unknown_citations"] = result["unknown_citations"]
        if result.get("interrupted"):
            self._finish("interrupted", {**stats, "error": result["interrupted"]})
            self.notifier.error(f"the reply was cut off: {result['interrupted']}")
            if result.get("interrupted_detail"):
                self.notifier.info(f"the reply's stream ended with {result['interrupted_detail']}")
        else:
            if result.get("tool_calls"):
                reply["tool_calls"] = joined_tool_calls(result["tool_calls"])
            self._finish("stopped" if result.get("stopped") else "done", stats)
            if reply.get("tool_calls") and not result.get("stopped"):
                self._run_built_in_tools(reply)

    def _on_failed(self, reply: dict, message: str) -> None:
        """The engine refused the request (too long a prompt, no model…)."""
        if reply is not self.reply:
            return
        self._finish("error", {"error": message})
        self.notifier.error(f"chat: {message}")

    def _finish(self, status: str, stats: dict) -> None:
        reply, self.reply, self.handle = self.reply, None, None
        self._save_timer.stop()
        reply["status"] = status
        reply["stats"] = {**reply.get("stats", {}), **stats}
        self._save(reply)
        self.message_updated.emit(reply)
        self.busy_changed.emit(False)
        self.refresh()

    # -- tool calls
    def pending_calls(self, message: dict) -> list[dict]:
        """``message``'s calls that have no result yet (a tool message after it answers one)."""
        answered = {m.get("tool_call_id") for m in self.messages[message["position"] + 1:] if m["role"] == "tool"}
        return [call for call in message.get("tool_calls") or [] if call["id"] not in answered]

    def submit_tool_result(self, call_id: str, result: str) -> bool:
        """The result of the last reply's call ``call_id`` (pasted by the user, or the built-in
        tool's); once every call of that reply has one, the conversation continues.

        Returns False (and says why) when there is no such call waiting."""
        calling = next((m for m in reversed(self.messages) if m.get("tool_calls")), None)
        call = next((c for c in self.pending_calls(calling) if c["id"] == call_id), None) if calling else None
        if call is None or calling is not self.last_reply():
            self.notifier.warning("that tool call is no longer waiting for a result")
            return False
        if self.busy:
            self.notifier.warning("a reply is still streaming; stop it first")
            return False
        self._add({"role": "tool", "content": result, "status": "done", "tool_call_id": call_id,
                   "stats": {"tool": call["name"]}})
        if not self.pending_calls(calling) and self._ready_to_send():
            self._start_reply()
        return True

    def last_reply(self) -> Optional[dict]:
        """The last assistant message, when only tool results came after it."""
        for message in reversed(self.messages):
            if message["role"] == "assistant":
                return message
            if message["role"] != "tool":
                return None
        return None

    def _run_built_in_tools(self, reply: dict) -> None:
        """Run the reply's ``search_documents`` calls through the engine's search API (off the
        GUI thread); each result goes back as the call's tool message."""
        collection = self.documents
        for call in reply["tool_calls"]:
            if call["name"] != SEARCH_TOOL_NAME or not collection or self._client() is None:
                continue
            try:
                query = search_query(call["arguments"])
            except SettingsProblem as exc:
                self.submit_tool_result(call["id"], f"error: {exc}")
                continue
            self._client().request(
                "POST", "/v1/search",
                lambda body, call_id=call["id"]: self.submit_tool_result(call_id, search_result_text(body)),
                lambda message, call_id=call["id"]: self.submit_tool_result(call_id, f"the search failed: {message}"),
                {"query": query, "collection": collection, "top_k": SEARCH_TOOL_TOP_K})

    def _save_reply(self) -> None:
        if self.reply is not None:
            self._save(self.reply)
            if self._first_piece_at and self._pieces > 1:  # the engine sends about a token a piece
                elapsed = time.monotonic() - self._first_piece_at
                self.generating.emit((self._pieces - 1) / elapsed if elapsed > 0 else 0.0)

    def _save(self, message: dict) -> None:
        """Write ``message`` and any earlier one whose write failed (the store reports each
        failure: "chat history: database or disk is full"), so what is on screen reaches the disk
        once there is room again."""
        self._unsaved[message["id"]] = dict(message)
        for snapshot in list(self._unsaved.values()):
            self.store.save_message(snapshot, on_done=lambda _, s=snapshot: self._written(s))

    def _written(self, snapshot: dict) -> None:
        if self._unsaved.get(snapshot["id"]) is snapshot:  # no newer version waiting
            del self._unsaved[snapshot["id"]]

    def _forget_unsaved(self, conversation_id: str, from_position: int = 0) -> None:
        """Deleted or truncated messages are not to come back with a retry."""
        self._unsaved = {k: m for k, m in self._unsaved.items()
                         if m["conversation_id"] != conversation_id or m["position"] < from_position}
