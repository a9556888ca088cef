"""EngineClient: httpx calls off the GUI thread; results and stream chunks arrive as Qt signals."""

from __future__ import annotations

import json
from typing import Callable, Optional

import httpx
from PySide6.QtCore import QObject, QRunnable, Qt, QThreadPool, Signal


class _Signals(QObject):
    done = Signal(object)
    failed = Signal(str)
    chunk = Signal(str)


class _Task(QRunnable):
    def __init__(self, work: Callable[[_Signals], object]):
        super().__init__()
        self.signals = _Signals()
        self._work = work

    def run(self) -> None:
        try:
            self.signals.done.emit(self._work(self.signals))
        except Exception as exc:  # reported through the failed signal, never raised into Qt
            self.signals.failed.emit(f"{type(exc).__name__}: {exc}")


class EngineClient(QObject):
    def __init__(self, url: str, api_key: str, parent=None):
        super().__init__(parent)
        self.url, self.api_key = url, api_key
        self.pool = QThreadPool.globalInstance()
        # One pool of kept-alive connections for the short calls (health every second, models).
        self.http = httpx.Client(timeout=5)
        self._inflight: set[_Task] = set()

    @property
    def headers(self) -> dict:
        return {"Authorization": f"Bearer {self.api_key}"}

    def submit(self, work, on_done=None, on_failed=None, on_chunk=None) -> None:
        """Run ``work(signals)`` on the pool; callbacks are connected before it starts, so no
        result is emitted to nobody."""
        task = _Task(work)
        task.setAutoDelete(False)
        self._inflight.add(task)  # the Python wrapper (and its signals) must outlive the run
        queued = Qt.ConnectionType.QueuedConnection  # slots run on the GUI thread, never the pool's
        for signal, slot in ((task.signals.done, on_done), (task.signals.failed, on_failed),
                             (task.signals.chunk, on_chunk)):
            if slot is not None:
                signal.connect(slot, queued)
        task.signals.done.connect(lambda _: self._inflight.discard(task), queued)
        task.signals.failed.connect(lambda _: self._inflight.discard(task), queued)
        self.pool.start(task)

    def health(self, on_done, on_failed) -> None:
        def work(_):
            return self.http.get(self.url + "/health").json()
        self.submit(work, on_done, on_failed)

    def models(self, on_done, on_failed) -> None:
        def work(_):
            return self.http.get(self.url + "/v1/models", headers=self.headers).json()
        self.submit(work, on_done, on_failed)

    def chat_stream(self, model: str, messages: list[dict], on_chunk, on_done, on_failed,
                    max_tokens: Optional[int] = None) -> None:
        """Streams the reply: ``on_chunk`` gets each text piece, ``on_done`` the finish reason."""
        def work(signals: _Signals):
            body = {"model": model, "messages": messages, "stream": True}
            if max_tokens:  # otherwise the engine allows what the context leaves
                body["max_tokens"] = max_tokens
            finish = None
            with httpx.stream("POST", self.url + "/v1/chat/completions", json=body,
                              headers=self.headers, timeout=httpx.Timeout(10, read=300)) as r:
                if r.status_code != 200:
                    r.read()
                    raise RuntimeError(r.json().get("error", {}).get("message", r.text))
                for line in r.iter_lines():
                    if not line.startswith("data: ") or line == "data: [DONE]":
                        continue
                    data = json.loads(line[6:])
                    if "error" in data:
                        raise RuntimeError(data["error"]["message"])
                    for choice in data.get("choices", []):
                        delta = choice.get("delta", {})
                        text = (delta.get("reasoning_content") or "") + (delta.get("content") or "")
                        if text:
                            signals.chunk.emit(text)
                        finish = choice.get("finish_reason") or finish
            return finish
        self.submit(work, on_done, on_failed, on_chunk)
