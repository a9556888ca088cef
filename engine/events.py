"""EventBus: state, progress and error events of the engine, fanned out to every listener
(torch-free). Listeners are asyncio queues (the server's SSE streams) or plain callables; a
listener that joins late first gets the current state and, during a load, the latest progress."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Callable, Optional

from engine.states import ModelState


class EventBus:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._queues: list[tuple[asyncio.AbstractEventLoop, asyncio.Queue]] = []
        self._callbacks: list[Callable[[dict], None]] = []
        self.state: dict = {"type": "state", "state": ModelState.IDLE}
        self.progress: Optional[dict] = None

    def publish(self, event: dict) -> None:
        event = {**event, "ts": round(time.time(), 3)}
        with self._lock:
            if event["type"] == "state":
                self.state = event
                if event["state"] != ModelState.LOADING:
                    self.progress = None
            elif event["type"] == "progress":
                self.progress = event
            queues, callbacks = list(self._queues), list(self._callbacks)
        for loop, queue in queues:
            try:
                loop.call_soon_threadsafe(queue.put_nowait, event)
            except RuntimeError:  # that listener's loop is closed
                self.unsubscribe(queue)
        for callback in callbacks:
            callback(event)

    def close(self) -> None:
        """End every subscriber's stream: the server is shutting down, and an open event stream
        would hold its graceful shutdown until the timeout (the app's quit waited 5 s, then
        killed the worker)."""
        with self._lock:
            queues = list(self._queues)
        for loop, queue in queues:
            try:
                loop.call_soon_threadsafe(queue.put_nowait, None)
            except RuntimeError:  # that loop is already closed
                pass

    def subscribe(self) -> asyncio.Queue:
        """A queue for the running event loop, primed with the current state (and progress)."""
        queue: asyncio.Queue = asyncio.Queue()
        with self._lock:
            queue.put_nowait(self.state)
            if self.progress is not None:
                queue.put_nowait(self.progress)
            self._queues.append((asyncio.get_running_loop(), queue))
        return queue

    def unsubscribe(self, queue: asyncio.Queue) -> None:
        with self._lock:
            self._queues = [(l, q) for l, q in self._queues if q is not queue]

    def add_callback(self, callback: Callable[[dict], None]) -> None:
        with self._lock:
            self._callbacks.append(callback)
