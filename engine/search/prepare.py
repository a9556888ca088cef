"""A file to its chunks (read, hash, extract, chunk) without touching the index, so it can run in
helper processes while the indexer's own thread writes the files already prepared.

Extraction is most of an indexing run's CPU (HTML through lxml ~10 MB/s, PDF through pypdf
~0.3 MB/s on this machine); SQLite's inserts are the rest. With ``workers`` helper processes the
two overlap and the extraction of several files runs at once. Results come back as they finish,
at most ``WINDOW * workers`` tasks of ~TASK_BYTES ahead of the writer (memory stays bounded on a
large collection). Helpers are started with "spawn": the worker process that indexes holds torch's
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
WINDOW = 2  # tasks submitted per helper: enough to keep each busy, few enough to bound memory
# A helper task: files up to this many bytes or files, whichever comes first.
TASK_BYTES = 512_000
TASK_FILES = 32
HELPER_NICENESS = 10
# engine.config.FAULTS_ENV, named here: importing the configuration (pydantic) would cost each
# helper 0.2 s, and the variable is read only when set.
FAULTS_VARIABLE = "DEEPSEEK_ENGINE_FAULTS"
_in_helper = False  # set in helper processes (a fault never ends the worker itself)


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
    if _in_helper and FAULTS_VARIABLE in os.environ:
        _crash_if_injected(path)
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


def _crash_if_injected(path: str) -> None:
    """The test fault ``extract_crash`` (engine.faults): this helper dies as a parser crash would kill it."""
    from engine.faults import FAULTS

    if FAULTS.trip("extract_crash", file=os.path.basename(path)):
        os._exit(70)


def _start_helper(parent: int) -> None:
    """In each helper: extraction yields to generation and to the app (the app's event loop and a
    chat's tokens matter more than an index finishing a little sooner), and the helper ends with
    the process that started it: killed (kill -9), it closes no pipe the helper would notice (the
    helpers hold the write end of their own job queue), so they would wait for jobs forever."""
    global _in_helper
    _in_helper = True
    try:
        os.nice(HELPER_NICENESS)
    except OSError:
        pass

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(1.0)
        os._exit(0)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


def prepare_files(jobs: Sequence[tuple[str, Optional[str], Optional[str]]]) -> list[Prepared]:
    """One helper task: several small files at once (a task per file cost the helpers and the
    writer a third more CPU in pickling and hand-offs)."""
    return [prepare_file(*job) for job in jobs]


def tasks_of(sizes: Sequence[int]) -> list[list[int]]:
    """Job indices cut into helper tasks of ~TASK_BYTES (in order: a large file is a task alone)."""
    tasks: list[list[int]] = []
    current: list[int] = []
    held = 0
    for index, size in enumerate(sizes):
        current.append(index)
        held += size
        if held >= TASK_BYTES or len(current) >= TASK_FILES:
            tasks.append(current)
            current, held = [], 0
    if current:
        tasks.append(current)
    return tasks


def prepared_in_batches(jobs: Sequence[tuple[str, Optional[str], Optional[str]]], sizes: Sequence[int],
                        workers: Optional[int] = None) -> Iterator[list[tuple[int, Prepared]]]:
    """``(i, prepare_file(*jobs[i]))`` for every job (``sizes[i]``: its file's size), in lists the
    writer commits one transaction each.

    With helper processes (a large run) a list is one helper task, ~TASK_BYTES of files, in the
    order tasks finish (a 100-page PDF does not hold back the small files behind it). A kill then
    loses the tasks in flight (at most ``WINDOW * workers``), and the writer pays SQLite's commit
    (FTS5 writes a segment per commit) once per task: on the Debian manuals the writer's CPU went
    from 1.9 s, a file a commit, to 1.2 s, and the helpers' from 3.0 s, a file a task, to 2.5 s.
    A helper that dies (a parser crashing the process) takes the tasks in flight with it: their
    files are then tried one at a time, alone in flight, so the one it dies on is marked with
    the reason and the others are indexed. In this thread, in order, one file per list, when the
    run is too small for helpers."""
    workers = helper_count() if workers is None else workers
    if workers < 1 or sum(sizes) < POOL_MIN_BYTES or len(jobs) < POOL_MIN_FILES:
        for index, job in enumerate(jobs):
            yield [(index, prepare_file(*job))]
        return
    context = multiprocessing.get_context("spawn")

    def new_pool() -> concurrent.futures.ProcessPoolExecutor:
        return concurrent.futures.ProcessPoolExecutor(workers, mp_context=context, initializer=_start_helper,
                                                   initargs=(os.getpid(),))

    pool = new_pool()
    finished = False
    running: dict[concurrent.futures.Future, list[int]] = {}
    upcoming = tasks_of(sizes)
    upcoming.reverse()  # popped from the end
    suspects: list[int] = []  # files of the tasks a helper died with, tried one at a time
    alone: Optional[concurrent.futures.Future] = None  # a suspect's task, the only one in flight
    try:
        while True:
            if suspects:
                if not running:  # alone in flight: a death names its file
                    index = suspects.pop()
                    alone = pool.submit(prepare_files, [jobs[index]])
                    running[alone] = [index]
            else:
                while upcoming and len(running) < WINDOW * workers:
                    task = upcoming.pop()
                    running[pool.submit(prepare_files, [jobs[i] for i in task])] = task
            if not running:
                finished = True
                return
            done, _ = concurrent.futures.wait(running, return_when=concurrent.futures.FIRST_COMPLETED)
            broken = False
            for future in done:
                task = running.pop(future)
                try:
                    results = future.result()
                except concurrent.futures.process.BrokenProcessPool:
                    broken = True
                    if future is alone:
                        yield [(task[0], Prepared("error", error="could not be read: the extraction process died on it"))]
                    else:
                        suspects += task
                    continue
                yield list(zip(task, results))
            if broken:  # every task in flight died with it; a new pool for the rest
                for task in running.values():
                    suspects += task
                running.clear()
                pool.shutdown(wait=False, cancel_futures=True)
                pool = new_pool()
    finally:  # done (the helpers exit at once), cancelled (the generator closed) or failed: stop them
        pool.shutdown(wait=finished, cancel_futures=True)
