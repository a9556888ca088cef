"""EngineSession: the app's connection to one engine, without widgets.

It follows the worker the app started (``EngineProcess``) or a server it was given by URL,
follows ``/admin/events`` (polls ``/health`` only where that stream is missing or failed), sends
loads, remembers the last load (and reloads it after a crash), and says what it knows through
signals. The status bar and the panels only observe it; nothing here knows a widget.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Optional, Union

from PySide6.QtCore import QObject, QTimer, Signal

from deepseek_desktop.notifier import Notifier
from deepseek_desktop.state.settings import read_json, write_json
from engine.states import ConnectionState, ModelState, ProcessState

if TYPE_CHECKING:  # httpx is imported when the session first attaches, not at start-up
    from deepseek_desktop.client import EngineClient, StreamHandle
    from deepseek_desktop.engine_process import EngineProcess

# A state another server reports that is none of ours is kept as its own string.
SessionState = Union[ModelState, ProcessState, ConnectionState, str]
HEALTH_EVERY_MS = 2000
QUIET_PATHS = ("/health", "/metrics", "/admin/status")
NOT_LISTENING = (ProcessState.STARTING, ProcessState.CRASHED, ProcessState.FAILED)
NO_MODEL_STATES = (ModelState.IDLE, ModelState.ERROR, ModelState.UNLOADING)


def format_eta(seconds: Optional[float]) -> str:
    if seconds is None:
        return "ETA …"
    return f"ETA {seconds:.0f} s" if seconds < 120 else f"ETA {seconds / 60:.1f} min"


def progress_text(event: dict) -> str:
    """"shard 2 of 8 · 120 MiB of 280 MiB · ETA 3 s"."""
    from engine.memory import format_bytes

    return (f"shard {event.get('shard', 0)} of {event.get('shards', 0)} · "
            f"{format_bytes(event.get('bytes_done'))} of {format_bytes(event.get('bytes_total'))} · "
            f"{format_eta(event.get('eta_s'))}")


def load_percent(event: dict) -> float:
    """Bytes read of a load progress event, in percent."""
    total = event.get("bytes_total") or 0
    return 100 * event.get("bytes_done", 0) / total if total else 0


def reload_at_launch() -> bool:
    """Whether a launch loads the model that was loaded when the app was last closed (Engine menu)."""
    return read_json("engine/reload_at_launch", True) is not False


def _model_state(value) -> SessionState:
    try:
        return ModelState(value)
    except ValueError:
        return str(value)


class EngineSession(QObject):
    state_changed = Signal(str, str)     # a SessionState's value, detail (an error, a path)
    model_changed = Signal(object, str)  # the served model's id or None; a hint when there is none
    load_progress = Signal(dict)         # a progress event of the load under way
    engine_event = Signal(dict)          # every /admin/events event, as the engine sent it
    loaded_path = Signal(object)         # the folder /admin/status says is loaded, or None
    available_changed = Signal(bool)     # whether the engine takes admin calls (load, cancel, unload)
    attached = Signal(str, str, object)  # url, API key, the worker's pid (None: a server not ours)
    replies_cut = Signal(str)            # a reply streaming now cannot go on: why
    load_refused = Signal(str)           # POST /admin/load failed (another load runs, a bad path…): why

    def __init__(self, notifier: Notifier, engine: Optional[EngineProcess] = None, url: Optional[str] = None,
                 api_key: Optional[str] = None, load_on_start: Optional[dict] = None,
                 parent: Optional[QObject] = None):
        super().__init__(parent)
        self.notifier = notifier
        self.engine = engine
        self.client: Optional[EngineClient] = None
        self.model_id: Optional[str] = None
        self.state: SessionState = ProcessState.STARTING if engine is not None else (
            ConnectionState.CONNECTING if url else ConnectionState.NO_ENGINE)
        self.available = False
        self.last_state_event: Optional[dict] = None  # replayed to a panel built later
        self.load_on_start = load_on_start
        last = read_json("engine/last_load", None)
        self.last_load: Optional[dict] = last if isinstance(last, dict) and last.get("path") else None
        # Whether ``last_load`` is still loaded (not unloaded since): a restart, a crash and, unless
        # turned off, a relaunch bring it back.
        self.model_was_loaded = read_json("engine/model_loaded", False) is True
        self.pending_load: Optional[dict] = None   # sent to /admin/load, not yet ready
        self.served_path: Optional[str] = None     # the folder /admin/status says is loaded
        self._url, self._api_key = url, api_key or ""
        self._events: Optional[StreamHandle] = None
        self._model_said: Optional[tuple[Optional[str], str]] = None  # the last (model_id, hint) emitted
        self._loading_when_crashed = False
        self._attached_before = False
        self._exit_reason = ""
        self._health_timer = QTimer(self, interval=HEALTH_EVERY_MS, timeout=self._poll_health)

    def start(self) -> None:
        """Once the observers are connected: say the first state, follow the worker or attach."""
        engine = self.engine
        if engine is not None:
            engine.listening.connect(lambda url: self._attach(url, engine.api_key))
            engine.finished.connect(self._on_engine_finished)
            engine.state_changed.connect(self._on_process_state)
            engine.restart_scheduled.connect(lambda s: self._set_state(
                ProcessState.CRASHED, f"restarting in {s:.0f} s (attempt {engine.restarts})"))
            engine.log_line.connect(self._on_worker_log)
        elif self._url:
            self._attach(self._url, self._api_key)
        self._set_state(self.state, "starting engine…" if engine is not None else "")

    def close(self) -> None:
        self._health_timer.stop()
        if self._events is not None:  # an attached engine keeps running: its stream must end here
            self._events.stop()
        if self.engine is not None:
            self.engine.stop()

    # -- what observers read when they start late
    def model_hint(self) -> str:
        """What the chat says while no model is served."""
        if self.model_id is None and self.last_load:
            return f"Last used: {Path(self.last_load['path']).name} (load it in the Models panel)"
        return ""

    def ready_client(self) -> Optional[EngineClient]:
        """The client, while a model is served (the chat sends nothing otherwise)."""
        return self.client if self.model_id else None

    # -- commands
    def load(self, body: dict) -> None:
        self.pending_load = body
        if not self.admin_api:  # vLLM serves the model it starts with: start it on this one
            self.replies_cut.emit(f"{self.backend} restarts on {Path(body['path']).name}")
            self.notifier.info(f"starting {self.backend} on {Path(body['path']).name} (it serves one model, "
                               "chosen at its start)")
            self.engine.serve_model(body["path"])
            return
        if self.client is None:
            self.notifier.warning("the engine is not running")
            return
        self.client.request("POST", "/admin/load", None, self._on_load_refused, body)

    def _on_load_refused(self, message: str) -> None:
        self.notifier.error(f"/admin/load: {message}")
        self.load_refused.emit(message)

    def load_when_ready(self, body: dict) -> None:
        """Load now, or as soon as the engine listens (vLLM: start it on that model now)."""
        if not self.admin_api:
            self.load(body)
        elif self.client is not None and self.state not in NOT_LISTENING:
            self.load(body)
        else:
            self.load_on_start = body

    @property
    def admin_api(self) -> bool:
        """Whether the engine serves our /admin API (the built-in worker; not vLLM). An engine
        attached by URL is asked, and says so by failing."""
        return self.engine is None or self.engine.admin_api

    @property
    def backend(self) -> str:
        """"built-in" or "vllm" for an engine the app started; "" for one attached by URL."""
        return self.engine.backend if self.engine is not None else ""

    def cancel_load(self) -> None:
        self.admin("POST", "/admin/cancel-load")

    def unload(self) -> None:
        self.admin("POST", "/admin/unload")

    def admin(self, method: str, path: str, body: Optional[dict] = None, on_done=None) -> None:
        if not self.admin_api:
            self.notifier.warning(f"{path} needs the built-in engine's /admin API; {self.backend} has none "
                                  "(Engine → Backend)")
            return
        if self.client is None:
            self.notifier.warning("the engine is not running")
            return
        self.client.request(method, path, on_done, lambda m: self.notifier.error(f"{path}: {m}"), body)

    def restart(self) -> None:
        if self.engine is None:
            self.notifier.warning("attached to an engine this app did not start: restart it where it runs")
            return
        self.replies_cut.emit("the engine was restarted")
        self._loading_when_crashed = self.state == ModelState.LOADING  # then it is not loaded again
        self.engine.restart()  # returns at once; the new worker starts when the old one has ended

    # -- attaching
    def _attach(self, url: str, api_key: str) -> None:
        from deepseek_desktop.client import EngineClient

        if self.client is None:
            self.client = EngineClient(url, api_key, self)
        self.client.url, self.client.api_key = url, api_key
        self.attached.emit(url, api_key, self.engine.pid() if self.engine is not None else None)
        if not self.admin_api:  # vLLM: no /admin at all; its /health and /v1/models say the state
            self._set_available(False)
            self._events = None
            self._health_timer.start()
            self._refresh_status()
            return
        self._set_available(True)
        self._follow_events()
        self._refresh_status()
        load = self._load_after_attach()
        if load is not None:
            self.load(load)

    def _load_after_attach(self) -> Optional[dict]:
        """The model to load once the engine listens: the one asked for at launch; else the one
        that was loaded, after a crash or Engine → Restart engine (unless that happened while
        loading it) and at launch (unless turned off: ``reload_at_launch``)."""
        first, self._attached_before = not self._attached_before, True
        if self.load_on_start is not None:
            load, self.load_on_start = self.load_on_start, None
            return load
        if self.engine is None or not self.last_load or not self.model_was_loaded or self._loading_when_crashed:
            return None
        name = Path(self.last_load["path"]).name
        if not first:
            self.notifier.info(f"reloading {name} after the engine restarted")
            return self.last_load
        if reload_at_launch():
            self.notifier.info(f"loading {name}, loaded when the app was last closed")
            return self.last_load
        return None

    def _set_available(self, available: bool) -> None:
        self.available = available
        self.available_changed.emit(available)

    # -- what the engine says
    def _follow_events(self) -> None:
        """The event stream says the state; health is polled only once it fails (a server
        without one, or one that went away)."""
        def failed(message: str) -> None:
            if self._events is handle:  # not a stream ended before (a restart's old worker)
                self._on_events_failed(message)
        handle = self._events = self.client.events(self._on_event, on_failed=failed)

    def _poll_health(self) -> None:
        if self.client is not None:
            self.client.health(self._on_health, self._on_unreachable)

    def _on_health(self, body: dict) -> None:
        if self._events is None and body.get("status") == "ok" and self.model_id is None:
            self._refresh_status()  # an engine without /admin/events (vLLM…): health is all we have

    def _on_unreachable(self, message: str) -> None:
        if self.engine is None:
            self._set_state(ConnectionState.UNREACHABLE, message)

    def _on_events_failed(self, message: str) -> None:
        self._events = None
        if self.engine is None or self.engine.running():
            self._health_timer.start()
        if self.engine is None:  # another server: no admin events; poll health and list models
            self._refresh_status()

    def _refresh_status(self) -> None:
        def on_models(body: dict) -> None:
            data = body.get("data") or []
            self._set_model(data[0]["id"] if data else None)
            if self._events is None:
                self._set_state(ModelState.READY if data else ModelState.IDLE)
            if data and not self.admin_api:
                self._served_by_restart()
        url = self.client.url
        self.client.request("GET", "/v1/models", on_models, lambda m: self.notifier.error(f"engine at {url}: {m}"))
        if self.engine is not None and self.admin_api:
            self.client.request("GET", "/admin/status", self._on_status, lambda m: None)

    def _served_by_restart(self) -> None:
        """vLLM answers with the model it was started on: that is the load, remembered as one."""
        path = self.engine.model_path
        self.served_path = path
        self.loaded_path.emit(path)
        if path and (self.last_load or {}).get("path") != path:
            self.last_load, self.pending_load = {"path": path}, None
            write_json("engine/last_load", self.last_load)
        self._remember_loaded(True)

    def _on_status(self, status: dict) -> None:
        self.served_path = status.get("path")
        self.loaded_path.emit(self.served_path)

    def _on_event(self, event: dict) -> None:
        self.engine_event.emit(event)
        kind = event.get("type")
        if kind == "state":
            self.last_state_event = event
            self._on_state_event(event)
        elif kind == "progress" and self.state == ModelState.LOADING:
            self.load_progress.emit(event)
        elif kind == "error":
            self.notifier.error(event.get("message", "engine error"), source="engine")

    def _on_state_event(self, event: dict) -> None:
        state = _model_state(event.get("state"))
        if state == ModelState.READY:
            self._set_model(event.get("model"), loaded=self.state == ModelState.LOADING)
            if self.pending_load and event.get("memory_bytes") is not None:
                self.last_load, self.pending_load = self.pending_load, None
                write_json("engine/last_load", self.last_load)
                self._remember_loaded(True)
            self._refresh_status()
        elif state in NO_MODEL_STATES:
            self._set_model(None)
            self.served_path = None
            if state == ModelState.UNLOADING or event.get("unloaded"):  # asked for: not to come back
                self._remember_loaded(False)
        detail = event.get("error") if state == ModelState.ERROR else event.get("path", "")
        self._set_state(state, detail or "")

    def _remember_loaded(self, loaded: bool) -> None:
        if loaded != self.model_was_loaded:
            self.model_was_loaded = loaded
            write_json("engine/model_loaded", loaded)

    def _set_model(self, model_id: Optional[str], loaded: bool = False) -> None:
        """Say the served model when it or the hint changed, or a load just put it in place (a
        reload of the same model): observers refetch on each emission, and every ready event,
        status refresh and health poll comes through here."""
        self.model_id = model_id
        said = (model_id, self.model_hint())
        if said != self._model_said or loaded:
            self._model_said = said
            self.model_changed.emit(*said)

    def _set_state(self, state: SessionState, detail: str = "") -> None:
        self.state = state
        self.state_changed.emit(str(state), detail)

    # -- the worker's life
    def _on_process_state(self, state: str) -> None:
        state = ProcessState(state)
        if state == ProcessState.FAILED:
            self._set_state(state, self._exit_reason)
        elif state in (ProcessState.STARTING, ProcessState.STOPPED):
            self._set_state(state)
        if state != ProcessState.RUNNING:
            self._set_available(False)

    def _on_engine_finished(self, why: str) -> None:
        asked = self.engine is not None and self.engine.state == ProcessState.STOPPED  # stop or restart
        self._health_timer.stop()
        self._events = None
        if not asked:
            self._loading_when_crashed = self.state == ModelState.LOADING
        self._set_model(None)
        self.replies_cut.emit(why.splitlines()[0])
        self._exit_reason = why
        if not asked:
            self.notifier.error(why.replace("\n", " | "), source="engine")
            self._set_state(ProcessState.CRASHED, why)  # EngineProcess then says "restarting in…" or "failed"

    def _on_worker_log(self, entry: dict) -> None:
        path, status = entry.get("path"), int(entry.get("status") or 0)
        if path == "/health" or (path in QUIET_PATHS and status < 400):
            return  # the app's own polling (a 503 from /health just means "loading"): noise here
        level = str(entry.get("level", "info")).lower()
        text = entry.get("msg") or entry.get("event") or json.dumps(entry)
        self.notifier.post("warning" if level == "warning" else ("error" if level in ("error", "critical") else "info"),
                           text, source="engine", when=entry.get("ts"))
