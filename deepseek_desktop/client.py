"""EngineClient: httpx calls off the GUI thread; results, stream pieces and admin events come
back as Qt signals (see ``tasks.run_task``)."""

from __future__ import annotations

import json
import socket
import threading
import time
from typing import Callable, Iterator, Optional

import httpx
from PySide6.QtCore import QObject, QThreadPool

from deepseek_desktop.tasks import TaskSignals, describe_error, run_task


class EngineError(RuntimeError):
    """The engine answered with an error; the message is the engine's own."""


def _error_message(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return f"HTTP {response.status_code}: {response.text[:200]}"
    error = body.get("error") if isinstance(body, dict) else None
    if isinstance(error, dict) and error.get("message"):
        return error["message"]
    return f"HTTP {response.status_code}: {body}"


def _sse_data(lines: Iterator[str]) -> Iterator[dict]:
    for line in lines:
        if line.startswith("data: ") and line != "data: [DONE]":
            yield json.loads(line[6:])


class StreamHandle:
    """Lets the GUI stop a stream at once: the connection's socket is shut down, which wakes a
    read blocked in the worker thread (a stream can be silent for long: an idle event stream, a
    long prompt's prefill) and which the engine takes as a disconnect and stops generating."""

    def __init__(self) -> None:
        self._stop = threading.Event()
        self._socket: Optional[socket.socket] = None

    def follow(self, response: httpx.Response) -> None:
        """Called by the worker thread once the response has started."""
        stream = response.extensions.get("network_stream")
        self._socket = stream.get_extra_info("socket") if stream is not None else None
        if self.stopped:  # stopped before the response began
            self._interrupt()

    def stop(self) -> None:
        self._stop.set()
        self._interrupt()

    def _interrupt(self) -> None:
        sock = self._socket
        if sock is not None:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:  # already closed
                pass

    @property
    def stopped(self) -> bool:
        return self._stop.is_set()


class EngineClient(QObject):
    def __init__(self, url: str, api_key: str, parent=None):
        super().__init__(parent)
        self.url, self.api_key = url, api_key
        # One pool of kept-alive connections for the short calls (health every second, status…).
        self.http = httpx.Client(timeout=10)
        # Streams hold a thread for as long as they last; they get their own pool so the short
        # calls (and the rest of the app's background work) never queue behind them.
        self.stream_pool = QThreadPool(self)
        self.stream_pool.setMaxThreadCount(4)

    @property
    def headers(self) -> dict:
        return {"Authorization": f"Bearer {self.api_key}"}

    def request(self, method: str, path: str, on_done=None, on_failed=None, body: Optional[dict] = None) -> None:
        """A JSON call; ``on_failed`` gets the engine's own error message."""
        def work(_):
            response = self.http.request(method, self.url + path, headers=self.headers, json=body)
            if response.status_code >= 400:
                raise EngineError(_error_message(response))
            return response.json()
        run_task(work, on_done, on_failed)

    def health(self, on_done, on_failed) -> None:
        """``/health``'s body; vLLM answers 200 with an empty one, read as ``{"status": "ok"}``."""
        def work(_):
            response = self.http.get(self.url + "/health", headers=self.headers)
            if response.status_code >= 400:
                raise EngineError(_error_message(response))
            return response.json() if response.content.strip() else {"status": "ok"}
        run_task(work, on_done, on_failed)

    def events(self, on_event: Callable[[dict], None], on_failed=None) -> StreamHandle:
        """Follow ``/admin/events`` (state, progress, error) until the handle is stopped or the
        engine goes away; the engine sends the current state first. ``on_failed`` when it could
        not be followed or ended without being stopped."""
        handle = StreamHandle()

        def work(signals: TaskSignals):
            timeout = httpx.Timeout(10, read=None)
            try:
                with httpx.stream("GET", self.url + "/admin/events", headers=self.headers, timeout=timeout) as r:
                    if r.status_code != 200:
                        r.read()
                        raise EngineError(_error_message(r))
                    handle.follow(r)
                    for event in _sse_data(r.iter_lines()):
                        if handle.stopped:
                            break
                        signals.chunk.emit(event)
            except httpx.TransportError:
                if not handle.stopped:  # stopping shuts the socket: that read error is the stop
                    raise
            if not handle.stopped:  # the engine ended it (shutting down): as good as a failure
                raise EngineError("the engine closed its event stream")
            return None
        run_task(work, on_failed=on_failed, on_chunk=on_event, pool=self.stream_pool)
        return handle

    def chat_stream(self, body: dict, on_piece, on_done, on_failed) -> StreamHandle:
        """Stream a chat completion. ``on_piece((kind, text))`` for each piece, kind "reasoning"
        or "content" (and ("citations", [source, …]) once, first, for a grounded answer: the
        ``search`` extension; ("tool_calls", {index: {"id", "name", "arguments"}}) as a call's
        pieces arrive, joined so far); ``on_done(result)`` with finish reason, usage, time to first token,
        whether it was stopped, and a grounded answer's ``unknown_citations``; ``on_failed(message)``
        when the engine refused or went away."""
        handle = StreamHandle()
        body = {**body, "stream": True, "stream_options": {"include_usage": True}}

        def work(signals: TaskSignals):
            started = time.monotonic()
            result = {"finish_reason": None, "usage": None, "stopped": False, "interrupted": None, "first": None,
                      "pieces": 0}
            try:
                self._read_chat(body, handle, signals, result)
            except httpx.TransportError as exc:
                if handle.stopped:  # stopping shuts the socket: that read error is the stop
                    result["stopped"] = True
                else:  # the engine went away mid-reply: keep what came
                    result["interrupted"] = "the connection to the engine was lost"
                    result["interrupted_detail"] = describe_error(exc)  # for the Logs
            first, ended = result.pop("first"), time.monotonic()
            result["ttft_s"] = None if first is None else first - started
            result["decode_s"] = None if first is None else ended - first
            return result
        run_task(work, on_done, on_failed, on_piece, pool=self.stream_pool)
        return handle

    def _read_chat(self, body: dict, handle: StreamHandle, signals: TaskSignals, result: dict) -> None:
        with httpx.stream("POST", self.url + "/v1/chat/completions", json=body, headers=self.headers,
                          timeout=httpx.Timeout(10, read=600)) as r:
            if r.status_code != 200:
                r.read()
                raise EngineError(_error_message(r))
            handle.follow(r)
            for data in _sse_data(r.iter_lines()):
                if handle.stopped:
                    result["stopped"] = True
                    break
                if "error" in data:
                    raise EngineError(data["error"].get("message", str(data["error"])))
                result["usage"] = data.get("usage") or result["usage"]
                if data.get("citations") is not None:  # a grounded answer's sources, on its first chunk
                    signals.chunk.emit(("citations", data["citations"]))
                if data.get("unknown_citations") is not None:  # on its last chunk
                    result["unknown_citations"] = data["unknown_citations"]
                for choice in data.get("choices", []):
                    delta = choice.get("delta", {})
                    for kind in ("reasoning_content", "content"):
                        if delta.get(kind):
                            result["first"] = result["first"] or time.monotonic()
                            result["pieces"] += 1  # the engine sends about one token a piece
                            signals.chunk.emit((kind.removesuffix("_content"), delta[kind]))
                    for piece in delta.get("tool_calls") or []:  # joined by index, as the pieces come
                        call = result.setdefault("tool_calls", {}).setdefault(piece.get("index", 0), {})
                        call["id"] = call.get("id") or piece.get("id")
                        function = piece.get("function") or {}
                        call["name"] = call.get("name") or function.get("name")
                        call["arguments"] = call.get("arguments", "") + (function.get("arguments") or "")
                        signals.chunk.emit(("tool_calls", {i: dict(c) for i, c in result["tool_calls"].items()}))
                    result["finish_reason"] = choice.get("finish_reason") or result["finish_reason"]
