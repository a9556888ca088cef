"""SearchModel: the Search panel's view model, without widgets.

It keeps the engine's document collections (``GET /admin/collections``) up to date from the
``index_progress`` events the app's EngineSession already follows, creates, changes, re-indexes
and deletes them, lists a collection's problem files, and searches as the user types: debounced,
lexical first (an answer in milliseconds), then hybrid where the collection's dense vectors are
ready, a reply to an older query never drawn over a newer one. Every call runs off the GUI
thread (``EngineClient.request``); what the engine refuses comes back word for word.
"""

from __future__ import annotations

import re
import time
from typing import Optional

from PySide6.QtCore import QObject, QTimer, Signal

from deepseek_desktop.notifier import Notifier
from deepseek_desktop.state.engine_session import EngineSession, format_eta

DEBOUNCE_MS = 250          # typing pauses this long before a query is sent
TOP_K = 20
FINISHED = {"done": "ready", "failed": "error", "cancelled": "ready"}  # a run's last event -> the state after it
SETTLE_MS = 250            # how soon a collection still said "indexing" after its run ended is asked again
SETTLE_TRIES = 40
# What the engine accepts as a name (the contract); checked there, the panel only suggests one.
NAME_CHARS = re.compile(r"[^A-Za-z0-9_.-]+")


def suggest_name(folder: str) -> str:
    """A collection name from a folder's name: "My Notes" -> "My-Notes"."""
    name = NAME_CHARS.sub("-", folder.rstrip("/").rsplit("/", 1)[-1]).strip("-.")[:64]
    return name or "documents"


def split_globs(text: str) -> list[str]:
    """"docs/*.md, *.pdf" -> ["docs/*.md", "*.pdf"] (empty parts dropped)."""
    return [part.strip() for part in text.split(",") if part.strip()]


def _size(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} GB"


def progress_percent(progress: Optional[dict]) -> float:
    """Bytes indexed of an ``index_progress`` event in percent (files where bytes are unknown)."""
    if not progress:
        return 0.0
    pairs = [("bytes_done", "bytes_total"), ("files_done", "files_total")]
    if progress.get("phase") == "embedding":  # the engine's second pass: dense vectors for the passages
        pairs.insert(0, ("embedded", "embed_total"))
    for done, total in pairs:
        if progress.get(total):
            return min(100.0, 100.0 * (progress.get(done) or 0) / progress[total])
    return 0.0


def progress_text(progress: dict, eta_s: Optional[float]) -> str:
    """"12 of 40 files · 3.1 MB of 9.0 MB · 85 chunks/s · ETA 20 s" (while passages are embedded:
    "embedding 300 of 1,200 passages · ETA 40 s")."""
    if progress.get("phase") == "embedding" and progress.get("embed_total"):
        return (f"embedding {progress.get('embedded') or 0:,} of {progress['embed_total']:,} passages · "
                f"{format_eta(eta_s)}")
    parts = [f"{progress.get('files_done', 0)} of {progress.get('files_total', 0)} files"]
    if progress.get("bytes_total"):
        parts.append(f"{_size(progress.get('bytes_done') or 0)} of {_size(progress['bytes_total'])}")
    if progress.get("chunks_per_s"):
        parts.append(f"{progress['chunks_per_s']:.0f} chunks/s")
    parts.append(format_eta(eta_s))
    return " · ".join(parts)


def collection_summary(collection: dict) -> str:
    """"ready · 40 files · 1,210 passages · 2 problems · semantic pending"."""
    files, chunks = collection.get("files", 0), collection.get("chunks", 0)
    parts = [collection.get("state", "?"), f"{files:,} file{'s' if files != 1 else ''}",
             f"{chunks:,} passage{'s' if chunks != 1 else ''}"]
    if collection.get("problems"):
        parts.append(f"{collection['problems']} problem{'s' if collection['problems'] != 1 else ''}")
    if collection.get("semantic") and collection["semantic"] != "ready":
        parts.append(f"semantic {collection['semantic']}")
    return " · ".join(parts)


class EtaClock:
    """The time left of one indexing run: the engine's ``eta_s`` where it sends one, else the
    bytes still to read at the rate measured since the run's first event."""

    def __init__(self) -> None:
        self._start: Optional[tuple[float, float]] = None  # (monotonic time, bytes done)

    def update(self, progress: dict, now: Optional[float] = None) -> Optional[float]:
        now = time.monotonic() if now is None else now
        done, total = progress.get("bytes_done") or 0, progress.get("bytes_total") or 0
        if self._start is None or done < self._start[1]:
            self._start = (now, done)
        if progress.get("eta_s") is not None:
            return float(progress["eta_s"])
        elapsed, read = now - self._start[0], done - self._start[1]
        if elapsed < 1 or read <= 0 or not total:
            return None
        return max(0.0, (total - done) / (read / elapsed))


class SearchModel(QObject):
    collections_changed = Signal(object)  # list of Collection dicts, by name
    progress = Signal(str, object, object)  # collection, its index_progress event, ETA in s (or None)
    problems_ready = Signal(str, object)  # collection, [{"path", "error", …}]
    results_ready = Signal(object)        # {"query", "collection", "mode", "hits", "took_ms"}
    search_failed = Signal(str)           # the engine's message
    refused = Signal(str)                 # an action the engine refused: its message
    available_changed = Signal(bool)      # whether the engine answers /admin/collections

    def __init__(self, session: EngineSession, notifier: Notifier, parent: Optional[QObject] = None):
        super().__init__(parent)
        self.session, self.notifier = session, notifier
        self.collections: dict[str, dict] = {}
        self.available = False
        self.reason = "the engine is not running"
        self.query = ""
        self.scope: Optional[str] = None       # the collection searched; None: all of them
        self.path_glob = ""                    # only files whose absolute path matches ("": all)
        self.last_results: Optional[dict] = None
        self._query_id = 0                     # the newest query; replies to older ones are dropped
        self._clocks: dict[str, EtaClock] = {}
        # Runs that ended, per collection: a 202 answered after its run's last event (a small folder
        # indexes in milliseconds) must not set the collection back to "indexing".
        self._runs_ended: dict[str, int] = {}
        self._debounce = QTimer(self, singleShot=True, interval=DEBOUNCE_MS, timeout=self._search_now)
        session.attached.connect(lambda *_: self.refresh())
        session.engine_event.connect(self._on_event)
        self.refresh()

    @property
    def client(self):
        return self.session.client

    # ------------------------------------------------------------------ collections
    def refresh(self) -> None:
        if self.client is None:
            self._set_available(False, "the engine is not running")
            return
        self.client.request("GET", "/admin/collections", self._on_collections, self._on_no_collections)

    def _on_collections(self, body: dict) -> None:
        listed = sorted(body.get("collections") or [], key=lambda c: c["name"])
        self.collections = {c["name"]: self._settled(c) for c in listed}
        self._set_available(True, "")
        self.collections_changed.emit(list(self.collections.values()))

    def _on_no_collections(self, message: str) -> None:
        self._set_available(False, f"this engine does not offer document search ({message})")

    def _set_available(self, available: bool, reason: str) -> None:
        self.available, self.reason = available, reason
        self.available_changed.emit(available)

    def _settled(self, collection: dict, tries: int = 0) -> dict:
        """The engine can still say "indexing" a moment after a run's last event (its progress
        then reads "done"): shown as the state that run ended in, and asked again shortly."""
        ended = (collection.get("progress") or {}).get("state")
        if collection.get("state") == "indexing" and ended in FINISHED:
            name = collection["name"]
            collection = {**collection, "state": FINISHED[ended], "progress": None}
            if tries < SETTLE_TRIES:
                QTimer.singleShot(SETTLE_MS, self, lambda: self.client and self.client.request(
                    "GET", f"/admin/collections/{name}", lambda c: self._on_one(c, tries + 1), lambda _m: None))
        return collection

    def _on_one(self, collection: dict, tries: int = 0) -> None:
        collection = self._settled(collection, tries)
        self.collections[collection["name"]] = collection
        self.collections = dict(sorted(self.collections.items()))
        self.collections_changed.emit(list(self.collections.values()))

    def _call(self, method: str, path: str, body: Optional[dict] = None, on_done=None) -> None:
        """An admin call whose refusal the panel shows as the engine worded it."""
        if self.client is None:
            self.refused.emit("the engine is not running")
            return

        def failed(message: str) -> None:
            self.notifier.error(f"{method} {path}: {message}")
            self.refused.emit(message)
        self.client.request(method, path, on_done, failed, body)

    def create(self, name: str, folders: list[str], include: list[str] = (), exclude: list[str] = (),
               index: bool = True) -> None:
        """A new collection of ``folders``, indexed at once unless ``index`` is False."""
        def created(collection: dict) -> None:
            self._on_one(collection)
            self.notifier.info(f"collection {name} created")
            if index:
                self.reindex(name)
        self._call("POST", "/admin/collections",
                   {"name": name, "folders": list(folders), "include": list(include), "exclude": list(exclude)},
                   created)

    def add_folder(self, name: str, folder: str, index: bool = True) -> None:
        current = self.collections.get(name, {}).get("folders") or []
        if folder in current:
            self.notifier.info(f"{folder} is in {name} already")
            return

        def changed(collection: dict) -> None:
            self._on_one(collection)
            if index:
                self.reindex(name)
        self._call("PUT", f"/admin/collections/{name}", {"folders": [*current, folder]}, changed)

    def set_globs(self, name: str, include: list[str], exclude: list[str]) -> None:
        """Change which files of its folders the collection takes, then index: files now excluded
        leave the index, newly included ones come in."""
        def changed(collection: dict) -> None:
            self._on_one(collection)
            self.reindex(name)
        self._call("PUT", f"/admin/collections/{name}", {"include": list(include), "exclude": list(exclude)}, changed)

    def reindex(self, name: str) -> None:
        """Index the collection's new and changed files (202: it runs in the engine's background)."""
        self._clocks.pop(name, None)
        ended_before = self._runs_ended.get(name, 0)

        def started(collection: dict) -> None:
            if self._runs_ended.get(name, 0) == ended_before:
                self._on_one(collection)
        self._call("POST", f"/admin/collections/{name}/index", None, started)

    def delete(self, name: str) -> None:
        def deleted(_body: dict) -> None:
            self.collections.pop(name, None)
            self.collections_changed.emit(list(self.collections.values()))
            if self.scope == name:
                self.set_scope(None)
        self._call("DELETE", f"/admin/collections/{name}", None, deleted)

    def fetch_problems(self, name: str) -> None:
        """The collection's files that could not be indexed, each with its reason."""
        self._call("GET", f"/admin/collections/{name}/files?status=error", None,
                   lambda body: self.problems_ready.emit(name, body.get("files") or []))

    # ------------------------------------------------------------------ progress
    def _on_event(self, event: dict) -> None:
        if event.get("type") != "index_progress" or not event.get("collection"):
            return
        name = event["collection"]
        new = name not in self.collections  # made elsewhere (the command line, another client)
        collection = self.collections.setdefault(name, {"name": name, "folders": [], "state": "indexing"})
        clock = self._clocks.setdefault(name, EtaClock())
        eta = clock.update(event)
        finished = event.get("state") in ("done", "failed", "cancelled")
        collection["progress"] = None if finished else event
        collection["state"] = "indexing" if not finished else collection.get("state")
        collection["problems"] = event.get("problems", collection.get("problems", 0))
        if new:
            self.collections = dict(sorted(self.collections.items()))
            self.collections_changed.emit(list(self.collections.values()))
        self.progress.emit(name, event, eta)
        if finished:
            self._clocks.pop(name, None)
            self._runs_ended[name] = self._runs_ended.get(name, 0) + 1
            self._call("GET", f"/admin/collections/{name}", None, self._on_one)  # the counts it ended with
            if event["state"] == "failed":
                self.notifier.error(f"indexing {name} failed")
            elif event.get("problems"):
                self.notifier.warning(f"indexed {name}: {event['problems']} file(s) could not be read (see Problems)")

    def eta(self, name: str) -> Optional[float]:
        """The ETA of a run under way, for a view built after its last event."""
        progress = (self.collections.get(name) or {}).get("progress")
        return self._clocks.setdefault(name, EtaClock()).update(progress) if progress else None

    # ------------------------------------------------------------------ searching
    def set_query(self, text: str) -> None:
        """Search as the user types: sent once typing pauses for ``DEBOUNCE_MS``."""
        self.query = text
        self._query_id += 1  # a reply still on its way for the text before is no longer wanted
        self._debounce.start()

    def set_scope(self, name: Optional[str]) -> None:
        self.scope = name
        if self.query.strip():
            self.set_query(self.query)

    def set_path_glob(self, glob: str) -> None:
        """Keep to files whose absolute path matches ``glob`` (SQLite GLOB: * ? [...]); "" for all."""
        self.path_glob = glob.strip()
        if self.query.strip():
            self.set_query(self.query)

    def semantic_ready(self) -> bool:
        """Whether a hybrid query can use dense vectors: the scope's (any collection's, for all)."""
        scoped = [self.collections[self.scope]] if self.scope in self.collections else list(self.collections.values())
        return any(c.get("semantic") == "ready" for c in scoped)

    def search_now(self) -> None:
        """Send the query at once (Enter), not after the pause."""
        self._debounce.stop()
        self._search_now()

    def _search_now(self) -> None:
        self._query_id += 1
        query_id, text = self._query_id, self.query
        if not text.strip():
            self._show(query_id, {"query": text, "collection": self.scope, "mode": None, "hits": [], "took_ms": 0})
            return
        if self.client is None or not self.available:
            self.search_failed.emit(self.reason or "the engine is not running")
            return
        hybrid = self.semantic_ready()

        def lexical_done(body: dict) -> None:
            self._show(query_id, {**body, "query": text, "collection": self.scope})
            if hybrid and query_id == self._query_id:
                self._post(query_id, text, "hybrid", lambda b: self._show(query_id, {**b, "query": text,
                                                                                      "collection": self.scope}))
        self._post(query_id, text, "lexical", lexical_done)

    def _post(self, query_id: int, text: str, mode: str, on_done) -> None:
        def failed(message: str) -> None:
            if query_id == self._query_id:
                self.search_failed.emit(message)
        body = {"query": text, "collection": self.scope, "top_k": TOP_K, "mode": mode}
        if self.path_glob:
            body["path_glob"] = self.path_glob
        self.client.request("POST", "/v1/search", on_done, failed, body)

    def _show(self, query_id: int, results: dict) -> None:
        if query_id != self._query_id:
            return  # the user typed on: this answers a query no longer asked
        self.last_results = results
        self.results_ready.emit(results)
