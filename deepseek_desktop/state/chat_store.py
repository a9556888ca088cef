"""Conversations in SQLite (WAL): a reply is written while it streams, so nothing typed or
received is lost when the worker or the app dies mid-reply.

``ChatStore`` is plain and synchronous (tests use it directly); ``StoreThread`` runs its calls in
order on one background thread so the GUI thread never touches the disk.
"""

from __future__ import annotations

import json
import sqlite3
import time
import uuid
from pathlib import Path
from typing import Any, Callable, Optional

from PySide6.QtCore import QObject, QThreadPool, Signal

from deepseek_desktop.tasks import run_task

SCHEMA = """
CREATE TABLE IF NOT EXISTS conversations (
    id TEXT PRIMARY KEY,
    title TEXT NOT NULL,
    system_prompt TEXT NOT NULL DEFAULT '',
    settings TEXT NOT NULL DEFAULT '{}',
    created REAL NOT NULL,
    updated REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS messages (
    id TEXT PRIMARY KEY,
    conversation_id TEXT NOT NULL REFERENCES conversations(id) ON DELETE CASCADE,
    position INTEGER NOT NULL,
    role TEXT NOT NULL,
    content TEXT NOT NULL DEFAULT '',
    reasoning TEXT NOT NULL DEFAULT '',
    status TEXT NOT NULL DEFAULT 'done',   -- done | streaming | stopped | interrupted | error
    stats TEXT NOT NULL DEFAULT '{}',
    created REAL NOT NULL,
    citations TEXT NOT NULL DEFAULT '[]',  -- a grounded reply's sources, as the engine numbered them
    tool_calls TEXT NOT NULL DEFAULT '[]', -- an assistant's calls: [{"id", "name", "arguments"}]
    tool_call_id TEXT NOT NULL DEFAULT ''  -- a tool message: the call it answers
);
CREATE INDEX IF NOT EXISTS messages_by_conversation ON messages(conversation_id, position);
"""


def new_id() -> str:
    return uuid.uuid4().hex


# Columns added after the first release: a history written before them gets them, empty.
ADDED_COLUMNS = {"citations": "TEXT NOT NULL DEFAULT '[]'", "tool_calls": "TEXT NOT NULL DEFAULT '[]'",
                 "tool_call_id": "TEXT NOT NULL DEFAULT ''"}


def _add_missing_columns(db: sqlite3.Connection) -> None:
    have = {row[1] for row in db.execute("PRAGMA table_info(messages)")}
    for name, declaration in ADDED_COLUMNS.items():
        if name not in have:
            db.execute(f"ALTER TABLE messages ADD COLUMN {name} {declaration}")
    db.commit()


class ChatStore:
    def __init__(self, path: Path):
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.set_aside: Optional[Path] = None  # where an unreadable history file was moved
        try:
            self.db = self._open(path)
        except sqlite3.DatabaseError:
            # Not a database (or damaged past reading): keep it for the user, start a new one.
            self.set_aside = path.with_name(f"{path.name}.unreadable-{time.strftime('%Y%m%d-%H%M%S')}")
            path.rename(self.set_aside)
            for suffix in ("-wal", "-shm"):
                Path(f"{path}{suffix}").unlink(missing_ok=True)
            self.db = self._open(path)
        self._mark_interrupted()

    @staticmethod
    def _open(path: Path) -> sqlite3.Connection:
        db = sqlite3.connect(str(path))
        try:
            db.row_factory = sqlite3.Row
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA foreign_keys=ON")
            db.executescript(SCHEMA)
            _add_missing_columns(db)
        except sqlite3.DatabaseError:
            db.close()
            raise
        return db

    def _mark_interrupted(self) -> None:
        # A reply still marked streaming was cut off by a crash of the app itself: keep it, say so.
        self.db.execute("UPDATE messages SET status='interrupted' WHERE status='streaming'")
        self.db.commit()

    def close(self) -> None:
        self.db.close()

    # -- conversations
    def create_conversation(self, conversation_id: str, title: str, system_prompt: str = "",
                            settings: Optional[dict] = None) -> None:
        now = time.time()
        with self.db:
            self.db.execute("INSERT INTO conversations VALUES (?,?,?,?,?,?)",
                            (conversation_id, title, system_prompt, json.dumps(settings or {}), now, now))

    def update_conversation(self, conversation_id: str, **fields: Any) -> None:
        allowed = {"title", "system_prompt", "settings"}
        if not set(fields) <= allowed:
            raise ValueError(f"unknown fields {set(fields) - allowed}")
        if "settings" in fields:
            fields["settings"] = json.dumps(fields["settings"])
        sets = ", ".join(f"{k}=?" for k in fields)
        with self.db:
            self.db.execute(f"UPDATE conversations SET {sets}, updated=? WHERE id=?",
                            (*fields.values(), time.time(), conversation_id))

    def delete_conversation(self, conversation_id: str) -> None:
        with self.db:
            self.db.execute("DELETE FROM conversations WHERE id=?", (conversation_id,))

    def conversations(self, query: str = "") -> list[dict]:
        """Newest first; ``query`` matches titles and message text (case-insensitive)."""
        if query:
            like = f"%{query}%"
            rows = self.db.execute(
                "SELECT * FROM conversations c WHERE c.title LIKE ? OR EXISTS (SELECT 1 FROM messages m "
                "WHERE m.conversation_id=c.id AND m.content LIKE ?) ORDER BY updated DESC", (like, like))
        else:
            rows = self.db.execute("SELECT * FROM conversations ORDER BY updated DESC")
        return [{**dict(r), "settings": json.loads(r["settings"])} for r in rows]

    # -- messages
    def messages(self, conversation_id: str) -> list[dict]:
        rows = self.db.execute("SELECT * FROM messages WHERE conversation_id=? ORDER BY position", (conversation_id,))
        return [{**dict(r), "stats": json.loads(r["stats"]), "citations": json.loads(r["citations"]),
                 "tool_calls": json.loads(r["tool_calls"])} for r in rows]

    def save_message(self, message: dict) -> None:
        """Insert or replace one message (the whole row: a streaming reply is rewritten as it grows)."""
        with self.db:
            self.db.execute(
                "INSERT OR REPLACE INTO messages (id, conversation_id, position, role, content, reasoning, status, "
                "stats, created, citations, tool_calls, tool_call_id) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
                (message["id"], message["conversation_id"], message["position"], message["role"],
                 message.get("content", ""), message.get("reasoning", ""), message.get("status", "done"),
                 json.dumps(message.get("stats") or {}), message.get("created") or time.time(),
                 json.dumps(message.get("citations") or []), json.dumps(message.get("tool_calls") or []),
                 message.get("tool_call_id") or ""))
            self.db.execute("UPDATE conversations SET updated=? WHERE id=?", (time.time(), message["conversation_id"]))

    def truncate(self, conversation_id: str, from_position: int) -> None:
        """Drop the messages at and after ``from_position`` (regenerate, edit and resend)."""
        with self.db:
            self.db.execute("DELETE FROM messages WHERE conversation_id=? AND position>=?",
                            (conversation_id, from_position))


class StoreThread(QObject):
    """Runs ``ChatStore`` calls one after another on a single background thread (a pool of one:
    first in, first out). Writes are fire and forget; reads hand their result to a callback on
    the GUI thread. Errors go to ``failed``."""

    failed = Signal(str)
    warning = Signal(str)

    def __init__(self, path: Path, parent=None):
        super().__init__(parent)
        self._pool = QThreadPool(self)
        self._pool.setMaxThreadCount(1)
        self._pool.setExpiryTimeout(-1)  # one thread for the app's life: SQLite wants its own thread
        self.store: Optional[ChatStore] = None
        self.call(self._open, path)

    def _open(self, path: Path) -> None:
        self.store = ChatStore(path)
        if self.store.set_aside is not None:
            self.warning.emit(f"the chat history in {path} could not be read; it was kept as "
                              f"{self.store.set_aside} and a new history started")

    def call(self, work: Callable[..., Any], *args: Any, on_done: Optional[Callable[[Any], None]] = None) -> None:
        run_task(lambda _signals: work(*args), on_done, lambda message: self.failed.emit(f"chat history: {message}"),
                 pool=self._pool)

    def __getattr__(self, name: str):
        """``thread.save_message(m)`` runs ``store.save_message(m)`` on the store's thread;
        pass ``on_done=`` for the result."""
        if name.startswith("_") or not hasattr(ChatStore, name):
            raise AttributeError(name)

        def proxy(*args, on_done=None, **kwargs):
            def work():
                if self.store is None:
                    raise RuntimeError("not available (it could not be opened; see the first error)")
                return getattr(self.store, name)(*args, **kwargs)
            return self.call(work, on_done=on_done)
        return proxy

    def close(self) -> None:
        """Finish every queued write, then close the database."""
        self.call(lambda: self.store and self.store.close())
        self._pool.waitForDone()
