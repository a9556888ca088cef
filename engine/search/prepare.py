"""A file to its chunks (read, hash, extract, chunk) without touching the index, so it can run in
helper processes while the indexer's own thread writes the files already prepared.

Extraction is most of an indexing run's CPU (HTML through lxml ~10 MB/s, PDF through pypdf
~0.3 MB/s on this machine); SQLite's inserts are the rest. With ``workers`` helper processes the
two overlap and the extraction of several files runs at once. Results come back as they finish,
at most ``WINDOW * workers`` files ahead of the writer (memory stays bounded on a large
collection). Helpers are started with "spawn": the worker process that indexes holds torch's
threads, and forking a process with threads can deadlock the child.
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import multiprocessing
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Optional, Sequence

from engine.search.chunking import Chunk, chunk_sections
from engine.search.extract import ExtractError, extract, read_bytes

# Below this much to read, helper processes cost more to start (~0.2 s each) than they save.
POOL_MIN_BYTES = 4_000_000
POOL_MIN_FILES = 16
WINDOW = 4  # files submitted per helper: enough to keep each busy, few enough to bound memory
HELPER_NICENESS = 10


@dataclass
class Prepared:
    """What one file gave: ``status`` "ok" (its chunks), "unchanged" (same hash as indexed) or
    "error" (``error`` says why)."""
    status: str
    size: Optional[int] = None  # bytes read (None: not read)
    digest: Optional[str] = None
    title: Optional[str] = None
    chunks: list[Chunk] = field(default_factory=list)
    characters: int = 0
    error: Optional[str] = None


def prepare_file(path: str, known_error: Optional[str], known_hash: Optional[str]) -> Prepared:
    """Never raises for a bad file: its reason is in the result."""
    data: Optional[bytes] = None
    digest: Optional[str] = None
    try:
        if known_error:
            raise ExtractError(known_error)
        data = read_bytes(Path(path))
        digest = hashlib.sha256(data).hexdigest()
        if known_hash == digest:
            return Prepared("unchanged", len(data), digest)
        document = extract(Path(path), data)
        chunks = chunk_sections(document.sections)
        if not chunks:
            raise ExtractError("no text")
        return Prepared("ok", len(data), digest, document.title, chunks, document.characters)
    except ExtractError as exc:
        return Prepared("error", None if data is None else len(data), digest, error=str(exc))
    except (RecursionError, MemoryError, UnicodeError, OSError) as exc:  # a parser's worst case
        return Prepared("error", None if data is None else len(data), digest, error=f"could not be read: {exc}")


def helper_count() -> int:
    """Helper processes for a large run: one per core, at most 4 (they run at a lower priority,
    see _start_helper, so they take the time the writer, the model and the app leave)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(0, min(4, cores)) if cores > 1 else 0


def _start_helper(parent: int) -> None:
    """In each helper: extraction yields to generation and to the app (the app's event loop and a
    chat's tokens matter more than an index finishing a little sooner), and the helper ends with
    the process that started it: killed (kill -9), it closes no pipe the helper would notice (the
    helpers hold the write end of their own job queue), so they would wait for jobs forever."""
    try:
        os.nice(HELPER_NICENESS)
    except OSError:
        pass

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(1.0)
        os._exit(0)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


def prepared_as_done(jobs: Sequence[tuple[str, Optional[str], Optional[str]]], total_bytes: int,
                     workers: Optional[int] = None) -> Iterator[tuple[int, Prepared]]:
    """``(i, prepare_file(*jobs[i]))`` for every job, in the order they finish (a 100-page PDF
    does not hold back the small files behind it). Helper processes when the run is large
    enough; in this thread, in order, otherwise. A helper that dies (a parser crashing the
    process) marks the files it held as errors and a new pool takes the rest."""
    workers = helper_count() if workers is None else workers
    if workers < 1 or total_bytes < POOL_MIN_BYTES or len(jobs) < POOL_MIN_FILES:
        for index, job in enumerate(jobs):
            yield index, prepare_file(*job)
        return
    context = multiprocessing.get_context("spawn")

    def new_pool() -> concurrent.futures.ProcessPoolExecutor:
        return concurrent.futures.ProcessPoolExecutor(workers, mp_context=context, initializer=_start_helper,
                                                   initargs=(os.getpid(),))

    pool = new_pool()
    finished = False
    running: dict[concurrent.futures.Future, int] = {}
    upcoming = iter(range(len(jobs)))
    try:
        while True:
            for index in upcoming:  # keep WINDOW files per helper submitted
                running[pool.submit(prepare_file, *jobs[index])] = index
                if len(running) >= WINDOW * workers:
                    break
            if not running:
                finished = True
                return
            done, _ = concurrent.futures.wait(running, return_when=concurrent.futures.FIRST_COMPLETED)
            broken = False
            for future in done:
                index = running.pop(future)
                try:
                    result = future.result()
                except concurrent.futures.process.BrokenProcessPool:
                    result = Prepared("error", error="could not be read: the extraction process died on it")
                    broken = True
                yield index, result
            if broken:  # the others in flight died with it: marked too, the rest go to a new pool
                for future, index in list(running.items()):
                    yield index, Prepared("error", error="could not be read: the extraction process died on it")
                running.clear()
                pool.shutdown(wait=False, cancel_futures=True)
                pool = new_pool()
    finally:  # done (the helpers exit at once), cancelled (the generator closed) or failed: stop them
        pool.shutdown(wait=finished, cancel_futures=True)
