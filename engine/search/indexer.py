"""Keeps a collection's index current: walk its folders, skip unchanged files, re-chunk changed
ones (each in its own transaction), drop deleted ones, then embed the chunks that have no vector
yet. One bad file is recorded with its reason and the walk goes on; progress is reported at most
~4 times a second as ``index_progress`` events.

A run is resumable: files are committed as they are ready (one by one, or an extraction helper's
task of files, ~0.5 MB, together), so after a kill the next run skips what was done (same size and mtime)
and redoes only the files in progress (those being written and those helper processes were
extracting ahead of them, see prepare.py).
"""

from __future__ import annotations

import contextlib
import fnmatch
import os
import stat
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

from engine.search.extract import is_supported
from engine.search.prepare import Prepared, prepared_in_batches
from engine.search.store import Store

PROGRESS_EVERY_S = 0.25
EMBED_BATCH = 64


class Cancelled(Exception):
    pass


@dataclass
class FileToIndex:
    path: str
    size: int
    mtime: float
    error: Optional[str] = None  # known before reading: a broken link, not a regular file


@dataclass
class IndexSummary:
    collection: str
    files_total: int = 0
    indexed: int = 0
    unchanged: int = 0
    removed: int = 0
    problems: list[tuple[str, str]] = field(default_factory=list)  # (path or folder, reason)
    chunks: int = 0
    embedded: int = 0
    bytes_done: int = 0
    characters: int = 0
    seconds: float = 0.0
    embed_seconds: float = 0.0
    state: str = "done"


def discover(folders: list[str], include: list[str], exclude: list[str]) -> tuple[list[FileToIndex], list[str], list[str]]:
    """The supported files under ``folders`` that the globs let through.

    Returns:
        the files, the folders that are missing (their indexed files are kept), and walk problems.
    """
    found: dict[str, FileToIndex] = {}
    missing, problems = [], []
    for folder in folders:
        if not os.path.isdir(folder):
            missing.append(folder)
            continue

        def onerror(exc: OSError) -> None:
            problems.append(f"{exc.filename}: {exc.strerror or exc}")

        for root, dirs, files in os.walk(folder, onerror=onerror):
            dirs[:] = sorted(d for d in dirs if not d.startswith("."))  # .git, .venv, caches
            for name in sorted(files):
                path = os.path.join(root, name)
                relative = os.path.relpath(path, folder).replace(os.sep, "/")
                if name.startswith(".") or not is_supported(Path(name)):
                    continue
                if include and not any(_matches(relative, name, g) for g in include):
                    continue
                if any(_matches(relative, name, g) for g in exclude):
                    continue
                try:
                    info = os.stat(path)
                except FileNotFoundError:
                    if os.path.islink(path):  # listed, so the user expects it: say why it gives nothing
                        found[path] = FileToIndex(path, 0, 0.0, "unreadable: broken link")
                    continue  # otherwise gone between listing and stat: nothing to index
                except OSError as exc:
                    found[path] = FileToIndex(path, 0, 0.0, f"unreadable: {exc.strerror or exc}")
                    continue
                if not stat.S_ISREG(info.st_mode):  # a FIFO or device would block or never end
                    found[path] = FileToIndex(path, 0, info.st_mtime, "not a regular file")
                    continue
                found[path] = FileToIndex(path, info.st_size, info.st_mtime)
    return list(found.values()), missing, problems


def _matches(relative: str, name: str, pattern: str) -> bool:
    return fnmatch.fnmatch(relative, pattern) or fnmatch.fnmatch(name, pattern)


def under(path: str, folders: list[str]) -> bool:
    return any(path == f or path.startswith(f.rstrip(os.sep) + os.sep) for f in folders)


class Progress:
    """Counts for ``index_progress`` events, throttled to one per ``PROGRESS_EVERY_S``."""

    def __init__(self, collection: str, publish: Optional[Callable[[dict], None]]):
        self.collection, self.publish = collection, publish
        self.files_done = self.files_total = self.bytes_done = self.bytes_total = 0
        self.chunks = self.problems = 0
        self.current_file: Optional[str] = None
        self.phase_started = time.monotonic()
        self.phase_chunks = 0
        self.embed_total = 0
        self.embedded = 0
        self.embedding = False
        self._last = 0.0
        self.latest: Optional[dict] = None

    def event(self, state: str = "indexing") -> dict:
        elapsed = max(time.monotonic() - self.phase_started, 1e-6)
        rate = self.phase_chunks / elapsed
        eta = None
        if state == "indexing":
            if self.embedding:
                eta = (self.embed_total - self.embedded) / rate if rate > 0 else None
            elif self.bytes_done > 0:
                eta = (self.bytes_total - self.bytes_done) / (self.bytes_done / elapsed)
        return {"type": "index_progress", "collection": self.collection, "files_done": self.files_done,
                "files_total": self.files_total, "bytes_done": self.bytes_done, "bytes_total": self.bytes_total,
                "chunks": self.chunks, "chunks_per_s": round(rate, 1),
                "eta_s": None if eta is None else round(eta, 1), "current_file": self.current_file,
                "state": state, "problems": self.problems,
                "phase": "embedding" if self.embedding else "reading",
                "embedded": self.embedded, "embed_total": self.embed_total}

    def tick(self, force: bool = False, state: str = "indexing") -> None:
        now = time.monotonic()
        if not force and now - self._last < PROGRESS_EVERY_S:
            return
        self._last = now
        self.latest = self.event(state)
        if self.publish is not None:
            self.publish(self.latest)


def index_collection(store: Store, name: str, embed: Optional[Callable[[list[str]], "object"]] = None,
                     embed_model: Optional[str] = None, publish: Optional[Callable[[dict], None]] = None,
                     cancel: Optional[threading.Event] = None, progress: Optional[Progress] = None) -> IndexSummary:
    """Bring collection ``name`` up to date; ``embed`` (texts → normalised vectors) adds vectors
    after the lexical pass, under ``embed_model``'s name.

    Raises:
        UnknownCollection: no such collection.
    """
    started = time.monotonic()
    spec = store.collection(name)
    summary = IndexSummary(name)
    progress = progress or Progress(name, publish)
    store.set_indexer(name, os.getpid())
    try:
        _lexical_pass(store, spec, summary, progress, cancel)
        if embed is not None and embed_model:
            _embedding_pass(store, name, embed, embed_model, summary, progress, cancel)
    except Cancelled:
        summary.state = "cancelled"
    except Exception as exc:  # a bug or a broken database: say so, keep what was committed
        summary.state = "failed"
        summary.problems.append((name, f"indexing stopped: {exc}"))
    summary.seconds = time.monotonic() - started
    error = "; ".join(f"{p}: {r}" for p, r in summary.problems if p in spec["folders"] or p == name) or None
    try:
        store.set_indexer(name, None, error, finished=summary.state == "done")
    except Exception:  # the collection was deleted meanwhile
        pass
    progress.current_file = None
    progress.tick(force=True, state=summary.state)
    return summary


def _lexical_pass(store: Store, spec: dict, summary: IndexSummary, progress: Progress,
                  cancel: Optional[threading.Event]) -> None:
    name = spec["name"]
    files, missing, walk_problems = discover(spec["folders"], spec["include"], spec["exclude"])
    for folder in missing:
        summary.problems.append((folder, "folder not found (its indexed files are kept)"))
    known = store.file_states(name)
    present_folders = [f for f in spec["folders"] if f not in missing]
    seen = {f.path for f in files}
    gone = [p for p in known if p not in seen and (under(p, present_folders) or not under(p, spec["folders"]))]
    if gone:
        store.remove_files(name, gone)
        summary.removed = len(gone)
    todo = [f for f in files if not _unchanged(known.get(f.path), f)]
    summary.unchanged = len(files) - len(todo)
    summary.files_total = len(files)
    progress.files_total, progress.files_done = len(files), summary.unchanged
    progress.bytes_total = sum(f.size for f in todo)
    progress.problems = len(summary.problems) + len(walk_problems)
    progress.phase_started = time.monotonic()
    progress.tick(force=True)
    # Largest first: the helpers finish together instead of one of them extracting a big PDF
    # (0.3 s here) alone at the end of the run.
    todo.sort(key=lambda item: item.size, reverse=True)
    jobs = [(item.path, item.error, _indexed_hash(known.get(item.path))) for item in todo]
    # Files are prepared ahead (helper processes on a large run) and written here as they come,
    # a helper's task of files in one transaction: a kill loses only files not yet written.
    with contextlib.closing(prepared_in_batches(jobs, [item.size for item in todo])) as batches:
        for batch in batches:
            if cancel is not None and cancel.is_set():
                raise Cancelled()
            with store.transaction():
                for index, prepared in batch:
                    item = todo[index]
                    progress.current_file = item.path
                    count, size = _write_file(store, name, item, prepared, summary)
                    summary.bytes_done += size
                    progress.bytes_done += item.size
                    progress.files_done += 1
                    progress.chunks += count
                    progress.phase_chunks += count
            progress.problems = len(summary.problems) + len(walk_problems)
            progress.tick()
    summary.problems += [(p, "unreadable folder") for p in walk_problems]


def _unchanged(known: Optional[dict], item: FileToIndex) -> bool:
    return (item.error is None and known is not None and known["status"] == "ok" and known["size"] == item.size
            and known["mtime"] == item.mtime)


def _indexed_hash(known: Optional[dict]) -> Optional[str]:
    """The content hash of the file's indexed chunks (None: none indexed): same hash, no re-index."""
    return known["hash"] if known is not None and known["status"] == "ok" else None


def _write_file(store: Store, name: str, item: FileToIndex, prepared: Prepared,
                summary: IndexSummary) -> tuple[int, int]:
    """One prepared file into the index; its failure is recorded on it. Returns (chunks, bytes read)."""
    size = prepared.size if prepared.size is not None else item.size
    if prepared.status == "unchanged":
        store.touch_file(name, item.path, size, item.mtime)
        summary.unchanged += 1
        return 0, size
    if prepared.status == "error":
        summary.problems.append((item.path, prepared.error))
        store.mark_error(name, item.path, size, item.mtime, prepared.digest, prepared.error)
        return 0, prepared.size or 0
    count = store.replace_file(name, item.path, size, item.mtime, prepared.digest, prepared.title, prepared.chunks)
    summary.indexed += 1
    summary.chunks += count
    summary.characters += prepared.characters
    return count, size


def _embedding_pass(store: Store, name: str, embed, model: str, summary: IndexSummary, progress: Progress,
                    cancel: Optional[threading.Event]) -> None:
    started = time.monotonic()
    store.use_embedding_model(name, model)
    progress.embedding = True
    progress.current_file = None
    progress.embed_total = store.stats(name)["pending_embeddings"]
    progress.phase_started, progress.phase_chunks = time.monotonic(), 0
    progress.tick(force=True)
    while True:
        if cancel is not None and cancel.is_set():
            raise Cancelled()
        batch = store.pending_embeddings(name, EMBED_BATCH)
        if not batch:
            break
        vectors = embed([text for _, text in batch])
        store.set_embeddings(name, [chunk_id for chunk_id, _ in batch], vectors)
        summary.embedded += len(batch)
        progress.embedded += len(batch)
        progress.phase_chunks += len(batch)
        progress.tick()
    summary.embed_seconds = time.monotonic() - started
