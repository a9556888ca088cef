"""Work off the GUI thread: a function runs on Qt's thread pool and its result, failure or
progress pieces come back as queued signals, so every callback runs on the GUI thread."""

from __future__ import annotations

from typing import Callable, Optional

from PySide6.QtCore import QObject, QRunnable, Qt, QThreadPool, Signal


class TaskSignals(QObject):
    done = Signal(object)
    failed = Signal(str)
    chunk = Signal(object)


class _Task(QRunnable):
    def __init__(self, work: Callable[[TaskSignals], object]):
        super().__init__()
        self.signals = TaskSignals()
        self._work = work

    def run(self) -> None:
        try:
            self.signals.done.emit(self._work(self.signals))
        except Exception as exc:  # reported through the failed signal, never raised into Qt
            self.signals.failed.emit(describe_error(exc))


def describe_error(exc: BaseException) -> str:
    """One line a user can read: the message, with the kind of error only where it helps."""
    text = str(exc).strip()
    if not text or type(exc).__module__.startswith(("httpx", "httpcore")):
        return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
    return text


# The Python wrappers (and their signals) must outlive each run, so they are kept here until done.
_inflight: set[_Task] = set()


def run_task(work: Callable[[TaskSignals], object], on_done: Optional[Callable] = None,
             on_failed: Optional[Callable] = None, on_chunk: Optional[Callable] = None,
             pool: Optional[QThreadPool] = None) -> None:
    """Run ``work(signals)`` on the pool. Callbacks are connected before it starts, so no result
    is emitted to nobody, and queued, so they run on the GUI thread, never the pool's."""
    task = _Task(work)
    task.setAutoDelete(False)
    _inflight.add(task)
    queued = Qt.ConnectionType.QueuedConnection
    for signal, slot in ((task.signals.done, on_done), (task.signals.failed, on_failed),
                         (task.signals.chunk, on_chunk)):
        if slot is not None:
            signal.connect(slot, queued)
    task.signals.done.connect(lambda _: _inflight.discard(task), queued)
    task.signals.failed.connect(lambda _: _inflight.discard(task), queued)
    (pool or QThreadPool.globalInstance()).start(task)
