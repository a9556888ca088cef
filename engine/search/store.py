"""The document index in one SQLite database (WAL): collections, per-file state, chunks, an FTS5
table over the chunks (BM25) and each chunk's embedding. One file's chunks are replaced in one
transaction (the indexer puts the files its helpers finished together in one), so a worker killed
mid-index loses at most the files in progress, and a reader (a search while indexing) always sees
whole files.

The collections' definitions are mirrored in ``collections.json`` beside the database: a corrupt
database is moved aside and rebuilt empty from it (``Store.notice`` says so), and re-indexing
brings the rest back.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any, Iterable, Optional, Sequence

import numpy as np

from engine.search.chunking import Chunk
from engine.staging import atomic_write_text

DB_NAME = "index.db"
COLLECTIONS_FILE = "collections.json"
# Databases written by another layout of these tables are moved aside and rebuilt like damaged ones.
SCHEMA_VERSION = 4
# Layout 3 lacked ALL_TOKEN in the "every" column; it is added in place (a rewrite of the FTS5 rows,
# ~20 s at 124k chunks) instead of a rebuild, which would cost the user every embedding.
MIGRATABLE_VERSION = 3
NAME_PATTERN = re.compile(r"^[A-Za-z0-9_-][A-Za-z0-9_.-]{0,63}$")

SCHEMA = """
CREATE TABLE IF NOT EXISTS collections (
    name TEXT PRIMARY KEY, folders TEXT NOT NULL, include TEXT NOT NULL, exclude TEXT NOT NULL,
    created REAL NOT NULL, indexed_at REAL, indexer_pid INTEGER, last_error TEXT,
    embed_model TEXT, vectors_generation INTEGER NOT NULL DEFAULT 0);
CREATE TABLE IF NOT EXISTS files (
    id INTEGER PRIMARY KEY, collection TEXT NOT NULL, path TEXT NOT NULL, size INTEGER, mtime REAL,
    hash TEXT, title TEXT, chunks INTEGER NOT NULL DEFAULT 0, characters INTEGER NOT NULL DEFAULT 0,
    status TEXT NOT NULL, error TEXT, indexed_at REAL, UNIQUE (collection, path));
CREATE TABLE IF NOT EXISTS chunks (
    id INTEGER PRIMARY KEY, file_id INTEGER NOT NULL, collection TEXT NOT NULL, path TEXT NOT NULL,
    title TEXT, heading TEXT, page INTEGER, line_start INTEGER, line_end INTEGER, embedding BLOB);
CREATE INDEX IF NOT EXISTS chunks_by_file ON chunks (file_id);
CREATE INDEX IF NOT EXISTS chunks_by_collection ON chunks (collection, id);
-- Chunks still waiting for a vector: counted for every Collection the API describes, without
-- reading the vectors of the others (150 MB at 100k chunks).
CREATE INDEX IF NOT EXISTS chunks_pending ON chunks (collection, id) WHERE embedding IS NULL;
-- The chunk's text lives in the FTS5 table itself (rowid = chunks.id): an external-content
-- table fed by triggers indexed 2.5 times slower here (the Debian manuals: 8 vs 20 MB/s CPU).
-- "every" holds the collection's token (collection_token) and ALL_TOKEN in each of its rows (see
-- every_value): terms that match all of a collection, or all rows, so FTS5 itself keeps to the
-- collections searched and can make a term optional (see retrieval.selective_query).
CREATE VIRTUAL TABLE IF NOT EXISTS chunks_fts USING fts5(
    text, heading, title, every, tokenize='porter unicode61 remove_diacritics 2');
CREATE TRIGGER IF NOT EXISTS chunks_ad AFTER DELETE ON chunks BEGIN
    DELETE FROM chunks_fts WHERE rowid = old.id;
END;
"""


class StoreError(Exception):
    """A refused collection operation; the message says why."""


class UnknownCollection(StoreError):
    pass


class CollectionExists(StoreError):
    pass


def collection_token(name: str) -> str:
    """One FTS5 token for a collection (its name may hold . - _, which the tokenizer splits at)."""
    return "c" + hashlib.sha1(name.encode()).hexdigest()[:16]


# In every row's "every" column: a search of all collections needs no collection terms (an OR of
# 50 collection tokens made each query merge and count 50 lists), only a term every row holds.
ALL_TOKEN = "a" + "0" * 16


def every_value(name: str) -> str:
    """The "every" column of a row of collection ``name``."""
    return f"{collection_token(name)} {ALL_TOKEN}"


def check_name(name: str) -> str:
    if not isinstance(name, str) or not NAME_PATTERN.match(name):
        raise StoreError(f"invalid collection name {name!r}: use 1-64 characters of A-Z a-z 0-9 _ . -, "
                         "not starting with '.'")
    return name


class Store:
    """One index folder. Each thread gets its own connection (SQLite connections are not shared
    across threads); WAL lets searches read while the indexer writes."""

    def __init__(self, folder: Path):
        self.folder = Path(folder).expanduser()
        self.folder.mkdir(parents=True, exist_ok=True)
        self.path = self.folder / DB_NAME
        self.notice: Optional[str] = None  # set when a corrupt database was moved aside
        self._local = threading.local()
        self._open_checked()

    # ------------------------------------------------------------------ connections
    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, timeout=30, isolation_level=None, check_same_thread=False)
        conn.row_factory = sqlite3.Row
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        return conn

    @property
    def conn(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._local.conn = self._connect()
        return conn

    def close(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None

    def _open_checked(self) -> None:
        try:
            conn = self._connect()
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            fresh = conn.execute("SELECT count(*) FROM sqlite_master").fetchone()[0] == 0
            if not fresh and version == MIGRATABLE_VERSION:
                _add_all_token(conn)
            elif not fresh and version != SCHEMA_VERSION:
                conn.close()
                raise sqlite3.DatabaseError(f"written by another version of the index (layout {version}, "
                                            f"this one reads {SCHEMA_VERSION})")
            conn.executescript(SCHEMA)
            conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            conn.execute("SELECT count(*) FROM collections").fetchone()
            bad = conn.execute("PRAGMA quick_check(1)").fetchone()[0]
            conn.close()
            if bad != "ok":
                raise sqlite3.DatabaseError(bad)
        except sqlite3.DatabaseError as exc:
            self._rebuild(exc)

    def _rebuild(self, exc: Exception) -> None:
        aside = self.path.with_name(f"{DB_NAME}.corrupt-{time.strftime('%Y%m%d-%H%M%S')}")
        for suffix in ("", "-wal", "-shm"):
            part = Path(str(self.path) + suffix)
            if part.exists():
                os.replace(part, Path(str(aside) + suffix))
        conn = self._connect()
        conn.executescript(SCHEMA)
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        conn.close()
        restored = self._restore_collections()
        self.notice = (f"the search index {self.path} was damaged ({exc}); it was kept aside as {aside.name} "
                       f"and rebuilt" + (f" with its {restored} collection(s): re-index them to search again"
                                         if restored else ""))

    def _restore_collections(self) -> int:
        try:
            saved = json.loads((self.folder / COLLECTIONS_FILE).read_text())
        except (OSError, ValueError):
            return 0
        count = 0
        for entry in saved if isinstance(saved, list) else []:
            try:
                self.create_collection(entry["name"], entry["folders"], entry.get("include", []),
                                       entry.get("exclude", []))
                count += 1
            except (StoreError, KeyError, TypeError):
                continue
        return count

    def _save_definitions(self) -> None:
        rows = self.conn.execute("SELECT name, folders, include, exclude FROM collections ORDER BY name")
        atomic_write_text(self.folder / COLLECTIONS_FILE, json.dumps(
            [{"name": r["name"], "folders": json.loads(r["folders"]), "include": json.loads(r["include"]),
              "exclude": json.loads(r["exclude"])} for r in rows], indent=2) + "\n")

    # ------------------------------------------------------------------ collections
    def create_collection(self, name: str, folders: Sequence[str], include: Sequence[str] = (),
                          exclude: Sequence[str] = ()) -> dict:
        check_name(name)
        folders = normalize_folders(folders)
        try:
            self.conn.execute("INSERT INTO collections (name, folders, include, exclude, created) VALUES (?,?,?,?,?)",
                              (name, json.dumps(folders), json.dumps(list(include)), json.dumps(list(exclude)),
                               time.time()))
        except sqlite3.IntegrityError:
            raise CollectionExists(f"a collection named {name!r} exists already") from None
        self._save_definitions()
        return self.collection(name)

    def update_collection(self, name: str, folders: Optional[Sequence[str]] = None,
                          include: Optional[Sequence[str]] = None, exclude: Optional[Sequence[str]] = None) -> dict:
        self.collection(name)
        changes = {"folders": normalize_folders(folders) if folders is not None else None,
                   "include": list(include) if include is not None else None,
                   "exclude": list(exclude) if exclude is not None else None}
        for column, value in changes.items():
            if value is not None:
                self.conn.execute(f"UPDATE collections SET {column} = ? WHERE name = ?", (json.dumps(value), name))
        self._save_definitions()
        return self.collection(name)

    def delete_collection(self, name: str) -> None:
        self.collection(name)
        with self.transaction() as conn:
            conn.execute("DELETE FROM chunks WHERE collection = ?", (name,))
            conn.execute("DELETE FROM files WHERE collection = ?", (name,))
            conn.execute("DELETE FROM collections WHERE name = ?", (name,))
        self._save_definitions()

    def collection(self, name: str) -> dict:
        row = self.conn.execute("SELECT * FROM collections WHERE name = ?", (name,)).fetchone()
        if row is None:
            raise UnknownCollection(f"no collection named {name!r}")
        return _collection_row(row)

    def collections(self) -> list[dict]:
        return [_collection_row(r) for r in self.conn.execute("SELECT * FROM collections ORDER BY name")]

    def stats(self, name: str) -> dict:
        files = self.conn.execute(
            "SELECT count(*) AS files, coalesce(sum(chunks), 0) AS chunks, coalesce(sum(characters), 0) AS characters,"
            " coalesce(sum(status = 'error'), 0) AS problems FROM files WHERE collection = ?", (name,)).fetchone()
        pending = self.conn.execute("SELECT count(*) FROM chunks WHERE collection = ? AND embedding IS NULL",
                                    (name,)).fetchone()[0]
        return {**dict(files), "embedded": files["chunks"] - pending, "pending_embeddings": pending}

    def set_indexer(self, name: str, pid: Optional[int], error: Optional[str] = None, finished: bool = False) -> None:
        if finished:
            self.conn.execute("UPDATE collections SET indexer_pid = ?, last_error = ?, indexed_at = ? WHERE name = ?",
                              (pid, error, time.time(), name))
        else:
            self.conn.execute("UPDATE collections SET indexer_pid = ?, last_error = ? WHERE name = ?", (pid, error, name))

    # ------------------------------------------------------------------ files
    def file_states(self, name: str) -> dict[str, dict]:
        rows = self.conn.execute("SELECT id, path, size, mtime, hash, status, chunks FROM files WHERE collection = ?", (name,))
        return {r["path"]: dict(r) for r in rows}

    def files(self, name: str, status: Optional[str] = None) -> list[dict]:
        query = "SELECT path, size, mtime, status, chunks, characters, error FROM files WHERE collection = ?"
        args: list[Any] = [name]
        if status:
            query += " AND status = ?"
            args.append(status)
        return [dict(r) for r in self.conn.execute(query + " ORDER BY path", args)]

    def transaction(self):
        return _Transaction(self.conn)

    def replace_file(self, collection: str, path: str, size: int, mtime: float, digest: str,
                     title: Optional[str], chunks: Sequence[Chunk]) -> int:
        """The file's old chunks out and its new ones in, as one transaction. Returns its chunk count."""
        characters = sum(len(c.text) for c in chunks)
        with self.transaction() as conn:
            file_id = self._upsert_file(conn, collection, path, size, mtime, digest, title, len(chunks),
                                        characters, "ok", None)
            # Ids given here (the transaction holds the write lock) so both tables take one executemany.
            first = conn.execute("SELECT coalesce(max(id), 0) + 1 FROM chunks").fetchone()[0]
            conn.executemany(
                "INSERT INTO chunks (id, file_id, collection, path, title, heading, page, line_start, line_end)"
                " VALUES (?,?,?,?,?,?,?,?,?)",
                [(first + i, file_id, collection, path, title, c.heading, c.page, c.lines[0] if c.lines else None,
                  c.lines[1] if c.lines else None) for i, c in enumerate(chunks)])
            conn.executemany("INSERT INTO chunks_fts (rowid, text, heading, title, every) VALUES (?,?,?,?,?)",
                             [(first + i, c.text, c.heading, title, every_value(collection))
                              for i, c in enumerate(chunks)])
            self._bump_vectors(conn, collection)
        return len(chunks)

    def mark_error(self, collection: str, path: str, size: Optional[int], mtime: Optional[float],
                   digest: Optional[str], error: str) -> None:
        """The file gives no text now: its old chunks go (they no longer say what it holds)."""
        with self.transaction() as conn:
            self._upsert_file(conn, collection, path, size, mtime, digest, None, 0, 0, "error", error)
            self._bump_vectors(conn, collection)

    def touch_file(self, collection: str, path: str, size: int, mtime: float) -> None:
        """Same content under a new mtime (copied, touched): nothing to re-index."""
        self.conn.execute("UPDATE files SET size = ?, mtime = ? WHERE collection = ? AND path = ?",
                          (size, mtime, collection, path))

    def remove_files(self, collection: str, paths: Iterable[str]) -> None:
        with self.transaction() as conn:
            for path in paths:
                row = conn.execute("SELECT id FROM files WHERE collection = ? AND path = ?", (collection, path)).fetchone()
                if row:
                    conn.execute("DELETE FROM chunks WHERE file_id = ?", (row["id"],))
                    conn.execute("DELETE FROM files WHERE id = ?", (row["id"],))
            self._bump_vectors(conn, collection)

    def _upsert_file(self, conn, collection, path, size, mtime, digest, title, chunks, characters, status, error) -> int:
        row = conn.execute("SELECT id FROM files WHERE collection = ? AND path = ?", (collection, path)).fetchone()
        values = (size, mtime, digest, title, chunks, characters, status, error, time.time())
        if row is None:
            return conn.execute(
                "INSERT INTO files (size, mtime, hash, title, chunks, characters, status, error, indexed_at, collection, path)"
                " VALUES (?,?,?,?,?,?,?,?,?,?,?)", values + (collection, path)).lastrowid
        conn.execute("DELETE FROM chunks WHERE file_id = ?", (row["id"],))
        conn.execute("UPDATE files SET size = ?, mtime = ?, hash = ?, title = ?, chunks = ?, characters = ?, status = ?,"
                     " error = ?, indexed_at = ? WHERE id = ?", values + (row["id"],))
        return row["id"]

    # ------------------------------------------------------------------ embeddings
    @staticmethod
    def _bump_vectors(conn, collection: str) -> None:
        conn.execute("UPDATE collections SET vectors_generation = vectors_generation + 1 WHERE name = ?", (collection,))

    def vectors_generation(self, collection: str) -> int:
        row = self.conn.execute("SELECT vectors_generation FROM collections WHERE name = ?", (collection,)).fetchone()
        return row[0] if row else -1

    def use_embedding_model(self, collection: str, model: str) -> None:
        """Vectors from another model are not comparable with this one's: they are dropped."""
        row = self.conn.execute("SELECT embed_model FROM collections WHERE name = ?", (collection,)).fetchone()
        if row and row[0] != model:
            with self.transaction() as conn:
                conn.execute("UPDATE chunks SET embedding = NULL WHERE collection = ?", (collection,))
                conn.execute("UPDATE collections SET embed_model = ? WHERE name = ?", (model, collection))
                self._bump_vectors(conn, collection)

    def pending_embeddings(self, collection: str, limit: int) -> list[tuple[int, str]]:
        rows = self.conn.execute("SELECT c.id, coalesce(c.heading, '') AS heading, f.text FROM chunks c"
                                 " JOIN chunks_fts f ON f.rowid = c.id"
                                 " WHERE c.collection = ? AND c.embedding IS NULL ORDER BY c.id LIMIT ?", (collection, limit))
        return [(r["id"], f"{r['heading']}\n{r['text']}" if r["heading"] else r["text"]) for r in rows]

    def set_embeddings(self, collection: str, ids: Sequence[int], vectors: np.ndarray) -> None:
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        with self.transaction() as conn:
            conn.executemany("UPDATE chunks SET embedding = ? WHERE id = ?",
                             [(vectors[i].tobytes(), chunk_id) for i, chunk_id in enumerate(ids)])
            self._bump_vectors(conn, collection)

    def all_embeddings(self, collection: str) -> tuple[np.ndarray, np.ndarray]:
        """(ids, matrix) of the collection's embedded chunks, in id order."""
        rows = self.conn.execute("SELECT id, embedding FROM chunks WHERE collection = ? AND embedding IS NOT NULL"
                                 " ORDER BY id", (collection,)).fetchall()
        if not rows:
            return np.zeros(0, dtype=np.int64), np.zeros((0, 0), dtype=np.float32)
        ids = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
        matrix = np.frombuffer(b"".join(r[1] for r in rows), dtype=np.float32).reshape(len(rows), -1)
        return ids, matrix

    def embedding_model(self, collection: str) -> Optional[str]:
        row = self.conn.execute("SELECT embed_model FROM collections WHERE name = ?", (collection,)).fetchone()
        return row[0] if row else None

    # ------------------------------------------------------------------ chunks
    def chunks_by_id(self, ids: Sequence[int]) -> dict[int, dict]:
        out: dict[int, dict] = {}
        ids = list(ids)
        for start in range(0, len(ids), 500):
            part = ids[start:start + 500]
            rows = self.conn.execute(
                f"SELECT c.id, c.collection, c.path, c.title, c.heading, c.page, c.line_start, c.line_end, f.text"
                f" FROM chunks c JOIN chunks_fts f ON f.rowid = c.id WHERE c.id IN ({','.join('?' * len(part))})", part)
            out.update((r["id"], dict(r)) for r in rows)
        return out


class _Transaction:
    """BEGIN IMMEDIATE ... COMMIT (ROLLBACK on an exception); inside an open transaction it is part
    of that one (the indexer writes several files' replace_file in one)."""

    def __init__(self, conn: sqlite3.Connection):
        self.conn = conn
        self.outer = False

    def __enter__(self) -> sqlite3.Connection:
        self.outer = not self.conn.in_transaction
        if self.outer:
            self.conn.execute("BEGIN IMMEDIATE")
        return self.conn

    def __exit__(self, kind, exc, tb) -> None:
        if self.outer:
            self.conn.execute("COMMIT" if kind is None else "ROLLBACK")


def _add_all_token(conn: sqlite3.Connection) -> None:
    """Layout 3 to 4 in one transaction: a kill midway leaves layout 3, migrated again next time."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        conn.execute("UPDATE chunks_fts SET every = every || ' ' || ?", (ALL_TOKEN,))
        # Every row rewritten: one segment again (the rewrite left lists spread over many, and
        # queries read them all: 2-3x slower).
        conn.execute("INSERT INTO chunks_fts (chunks_fts) VALUES ('optimize')")
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise


def normalize_folders(folders: Sequence[str]) -> list[str]:
    if isinstance(folders, str) or not folders:
        raise StoreError("give at least one folder (a list of paths)")
    return [str(Path(f).expanduser().resolve()) for f in folders]


def _collection_row(row: sqlite3.Row) -> dict:
    return {"name": row["name"], "folders": json.loads(row["folders"]), "include": json.loads(row["include"]),
            "exclude": json.loads(row["exclude"]), "indexed_at": row["indexed_at"], "indexer_pid": row["indexer_pid"],
            "last_error": row["last_error"], "embed_model": row["embed_model"]}


def pid_alive(pid: Optional[int]) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
