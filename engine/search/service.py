"""SearchService: what the server and the CLI hold — the store, the vectors, the embedder
(loaded on first need), background index runs and retrieval — and the Collection view the API
returns."""

from __future__ import annotations

import logging
import os
import threading
import time
from pathlib import Path
from typing import Callable, Optional

import numpy as np

from engine.paths import data_dir
from engine.search.embedder import DEFAULT_EMBEDDING_MODEL, Embedder, EmbedderUnavailable, resolve_model
from engine.search.indexer import IndexSummary, Progress, index_collection
from engine.search.retrieval import Retriever, SearchResult
from engine.search.store import Store, StoreError, UnknownCollection, pid_alive

log = logging.getLogger("engine.search")


AVAILABILITY_TTL_S = 10.0


class AlreadyIndexing(StoreError):
    pass


def default_search_dir() -> Path:
    return data_dir() / "search"


class SearchService:
    """Args:
        folder: the index folder ([search] dir).
        embedding_model: a folder, the default's name or a Hugging Face id; "" for no semantic search.
        publish: where ``index_progress`` events go (the server's event bus).
    """

    def __init__(self, folder: Optional[Path] = None, embedding_model: str = DEFAULT_EMBEDDING_MODEL,
                 publish: Optional[Callable[[dict], None]] = None, device: str = "cpu",
                 threads: Optional[int] = None):
        from engine.search.vectors import VectorCache

        self.folder = Path(folder).expanduser() if folder else default_search_dir()
        self.store = Store(self.folder)
        if self.store.notice:
            log.warning(self.store.notice, extra={"event": "search_index_rebuilt"})
        self.vectors = VectorCache(self.store, self.folder / "vectors")
        self.embedding_model, self.device, self.threads = embedding_model, device, threads
        self.publish = publish
        self._embedder: Optional[Embedder] = None
        self._embedder_error: Optional[str] = None
        self._available: Optional[tuple[bool, float]] = None
        self._embedder_lock = threading.Lock()
        self._runs: dict[str, tuple[threading.Thread, threading.Event, Progress]] = {}
        self._runs_lock = threading.Lock()
        self.retriever = Retriever(self.store, self.vectors, self.encode, self.embedder_available)

    # ------------------------------------------------------------------ embedder
    def embedder_available(self) -> bool:
        """Whether an embedding model is configured and can be found (cheap: no torch)."""
        if self._embedder is not None:
            return True
        if self._embedder_error is not None:
            return False
        # Asked for every Collection the API describes: the answer (a few file checks, the
        # Hugging Face cache's among them) is kept for a while; fetch-demo may add the model later.
        now = time.monotonic()
        if self._available is None or now - self._available[1] > AVAILABILITY_TTL_S:
            try:
                resolve_model(self.embedding_model)
                self._available = (True, now)
            except EmbedderUnavailable:
                self._available = (False, now)
        return self._available[0]

    def embedder(self) -> Embedder:
        """Raises: EmbedderUnavailable."""
        with self._embedder_lock:
            if self._embedder is None:
                if self._embedder_error is not None:
                    raise EmbedderUnavailable(self._embedder_error)
                try:
                    self._embedder = Embedder(resolve_model(self.embedding_model), self.device, self.threads)
                except EmbedderUnavailable as exc:
                    self._embedder_error = str(exc)
                    raise
            return self._embedder

    def encode(self, texts: list[str]) -> np.ndarray:
        """Raises: EmbedderUnavailable."""
        return self.embedder().encode(texts)

    def model_key(self) -> str:
        return str(resolve_model(self.embedding_model))

    # ------------------------------------------------------------------ collections
    def describe(self, name: str) -> dict:
        spec = self.store.collection(name)
        stats = self.store.stats(name)
        run = self._runs.get(name)
        running_here = run is not None and run[0].is_alive()
        indexing = running_here or (spec["indexer_pid"] not in (None, os.getpid()) and pid_alive(spec["indexer_pid"]))
        if indexing:
            state = "indexing"
        elif spec["last_error"] and stats["files"] == 0:
            state = "error"
        elif stats["files"] == 0 and spec["indexed_at"] is None:
            state = "empty"
        else:
            state = "ready"
        if not self.embedder_available():
            semantic = "off"
        elif stats["chunks"] and stats["pending_embeddings"] == 0:
            semantic = "ready"
        else:
            semantic = "pending"
        return {"name": name, "folders": spec["folders"], "include": spec["include"], "exclude": spec["exclude"],
                "state": state, "files": stats["files"], "chunks": stats["chunks"], "characters": stats["characters"],
                "problems": stats["problems"], "semantic": semantic, "indexed_at": spec["indexed_at"],
                "progress": run[2].latest if running_here else None, "error": spec["last_error"],
                "embedded": stats["embedded"]}

    def collections(self) -> list[dict]:
        return [self.describe(c["name"]) for c in self.store.collections()]

    def names(self) -> list[str]:
        # Asked by every search of all collections: the names alone, not each one's JSON columns.
        return [r[0] for r in self.store.conn.execute("SELECT name FROM collections ORDER BY name")]

    def delete(self, name: str) -> None:
        self.store.collection(name)
        self.cancel(name)
        self.store.delete_collection(name)
        self.vectors.forget(name)

    # ------------------------------------------------------------------ indexing
    def index(self, name: str, embed: bool = True, publish: Optional[Callable[[dict], None]] = None,
              cancel: Optional[threading.Event] = None, progress: Optional[Progress] = None) -> IndexSummary:
        """Index now, in this thread (the CLI; the background run calls it too)."""
        embed_fn, model = None, None
        if embed and self.embedder_available():
            embed_fn, model = self.encode, self.model_key()
        return index_collection(self.store, name, embed_fn, model, publish or self.publish, cancel, progress)

    def start_index(self, name: str) -> None:
        """Index in a background thread; progress goes to ``publish``.

        Raises:
            UnknownCollection, AlreadyIndexing.
        """
        spec = self.store.collection(name)
        with self._runs_lock:
            run = self._runs.get(name)
            if (run is not None and run[0].is_alive()) or (
                    spec["indexer_pid"] not in (None, os.getpid()) and pid_alive(spec["indexer_pid"])):
                raise AlreadyIndexing(f"collection {name!r} is being indexed already")
            cancel = threading.Event()
            progress = Progress(name, self.publish)
            thread = threading.Thread(target=self._run, args=(name, cancel, progress), name=f"index-{name}", daemon=True)
            self._runs[name] = (thread, cancel, progress)
            progress.latest = progress.event()
            thread.start()

    def _run(self, name: str, cancel: threading.Event, progress: Progress) -> None:
        try:
            summary = self.index(name, cancel=cancel, progress=progress)
            log.info("indexed %s: %d files read, %d unchanged, %d removed, %d problems in %.1f s", name,
                     summary.indexed, summary.unchanged, summary.removed, len(summary.problems), summary.seconds,
                     extra={"event": "index_done", "collection": name, "state": summary.state})
        except UnknownCollection:
            pass
        except Exception:
            log.exception("indexing %s failed", name)
        finally:
            self.store.close()  # this thread's connection

    def cancel(self, name: str) -> None:
        run = self._runs.get(name)
        if run is not None and run[0].is_alive():
            run[1].set()
            run[0].join(timeout=30)

    def wait(self, name: str, timeout: Optional[float] = None) -> None:
        run = self._runs.get(name)
        if run is not None:
            run[0].join(timeout)

    # ------------------------------------------------------------------ retrieval
    def search(self, query: str, collection: Optional[str] = None, top_k: int = 10, mode: str = "hybrid",
               path_glob: Optional[str] = None) -> SearchResult:
        """Raises: UnknownCollection, ValueError (a bad mode)."""
        if collection is not None:
            self.store.collection(collection)
            names = [collection]
        else:
            names = self.names()
        return self.retriever.search(query, names, top_k, mode, path_glob)

