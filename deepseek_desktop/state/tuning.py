"""TuningModel: what the Tuning panel shows and does, without widgets.

It reads the engine's run-time settings (``GET /admin/config``), status and ``/metrics``, keeps
the settings being edited beside the ones in force, redraws the memory budget from the torch-free
estimate at each edit, applies and reverts (``PUT /admin/config``), and runs sweeps
(``engine.tuning``) on its own thread, points arriving as signals. Every call to the engine runs
off the GUI thread; the sweep restores the settings it found when it ends, is cancelled, or the
app quits mid-sweep (``shutdown``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from PySide6.QtCore import QObject, QThreadPool, Signal

from deepseek_desktop.notifier import Notifier
from deepseek_desktop.state.engine_session import EngineSession
from deepseek_desktop.tasks import run_task
from engine import tuning
from engine.memory import DeviceBudget, DeviceMemory, device_budget, device_memory

KV_DTYPES = ("auto", "float32", "bfloat16", "float16", "float8")
DEFAULT_GRID = '"batching.max_batch_size" = [1, 4, 8]\n"batching.max_wait_ms" = [0, 50]\n'
SHUTDOWN_WAIT_MS = 20_000

# One sentence on each setting's trade-off (the tooltip beside the field).
TRADE_OFFS = {
    "batching.mode": "dynamic joins requests at the next step (best on CPUs); continuous pages the KV cache "
                     "(GPUs, many users); sequential runs one at a time (lowest latency alone, lowest throughput).",
    "batching.max_batch_size": "More requests decoded together raise tokens/s until memory or compute runs out, "
                               "but every request's tokens come slower.",
    "batching.max_wait_ms": "Waiting for company fills batches (throughput) at the cost of the first token's latency.",
    "batching.max_batch_tokens": "A bigger token budget per step prefills long prompts faster but makes each step "
                                 "(and every running request's next token) slower.",
    "batching.page_size": "Bigger KV pages mean less bookkeeping but more memory wasted at the end of each request.",
    "batching.num_blocks": "More KV blocks admit more and longer requests at once, and take that memory from the rest.",
    "batching.kv_memory_share": "A bigger share of free memory for the paged KV cache admits more requests, "
                                "leaving less for everything else.",
    "batching.block_sharing": "Sharing the KV blocks of common prefixes saves memory and prefill; it costs a "
                              "little bookkeeping per step.",
    "batching.cpu_offload_gb": "Host memory for preempted requests' KV lets them resume without recomputing, "
                               "at the cost of that RAM.",
    "batching.max_queue": "A longer queue refuses fewer requests (429) but lets their waiting time grow.",
    "batching.request_timeout_s": "A shorter limit frees stuck slots sooner but cuts long generations.",
    "cache.type": "The prefix cache skips recomputing shared prompt prefixes, at the cost of RAM and disk.",
    "cache.memory_mb": "More RAM for prefix KV means more hits (lower time to first token) and less RAM for "
                       "everything else.",
    "cache.disk_mb": "A bigger disk tier keeps more prefixes across restarts, at the cost of disk space and writes.",
    "cache.dir": "Where the disk tier lives: a fast local disk makes its hits worth having.",
}


@dataclass
class EngineView:
    """What the panel knows of the engine it tunes."""

    url: Optional[str] = None
    api_key: Optional[str] = None
    admin: bool = False
    reason: str = "no engine"                    # why the knobs cannot be changed
    status: dict = field(default_factory=dict)   # GET /admin/status
    weights: dict[str, float] = field(default_factory=dict)  # device -> bytes (/metrics)
    kv_now: float = 0.0
    prefix_now: float = 0.0
    memory: dict[str, DeviceMemory] = field(default_factory=dict)
    entry: Any = None                            # engine.catalog.ModelEntry of the served folder


def parse_value(text: str) -> Any:
    """What a typed field sends: a number where it reads as one, empty as null (the default), the
    text itself otherwise (the engine says what it expected)."""
    text = text.strip()
    if not text:
        return None
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return {"true": True, "false": False}.get(text.lower(), text)


def refusals(message: str) -> dict[str, str]:
    """The engine's refusal split per field (``batching.max_batch_size = 0: …; cache.x: …``);
    a refusal naming no field is kept under ``""``."""
    out: dict[str, str] = {}
    for piece in message.split("; "):
        name = piece.split(" ", 1)[0].rstrip(":")
        out[name if name.partition(".")[0] in tuning.RUNTIME_SECTIONS and "." in name else ""] = piece
    return out


class TuningModel(QObject):
    engine_changed = Signal()            # admin API or not, the model, the device
    config_changed = Signal()            # the settings in force or the edits
    budget_changed = Signal(list)        # list[DeviceBudget]
    applied = Signal(dict)               # the settings now in force
    refused = Signal(dict)               # field ("" for none) -> the engine's message
    sweep_started = Signal(int)          # points to measure
    sweep_progress = Signal(dict)        # engine.tuning's progress event
    sweep_point = Signal(object)         # tuning.Point, judged with the others
    sweep_finished = Signal(object)      # tuning.SweepRecord (kept in the data folder)
    sweep_failed = Signal(str)
    record_changed = Signal()            # a past run opened, or the overlay chosen
    runs_changed = Signal(list)          # [(path, title)], newest first

    def __init__(self, session: EngineSession, notifier: Notifier, parent: Optional[QObject] = None):
        super().__init__(parent)
        self.session, self.notifier = session, notifier
        self.engine = EngineView()
        self.in_force: dict[str, Any] = {}       # dotted -> value
        self.edits: dict[str, Any] = {}          # dotted -> value being edited
        self.context: Optional[int] = None       # what-if (a reload would be needed)
        self.kv_dtype = "auto"                   # what-if
        self.budgets: list[DeviceBudget] = []
        self.record: Optional[tuning.SweepRecord] = None   # shown: live, or reopened
        self.overlay: Optional[tuning.SweepRecord] = None
        self.runs: list[tuple[str, str]] = []
        self.sweep: Optional[tuning.Sweep] = None
        self.last_progress: Optional[dict] = None
        self._pool = QThreadPool(self)           # a sweep holds a thread for minutes: not the global pool's
        self._pool.setMaxThreadCount(1)
        session.attached.connect(lambda *_: self.refresh())
        session.model_changed.connect(lambda *_: self.refresh())
        self.refresh()
        self.refresh_runs()

    # ------------------------------------------------------------------ reading the engine
    @property
    def client(self):
        return self.session.client

    @property
    def running(self) -> bool:
        return self.sweep is not None

    def refresh(self) -> None:
        client = self.client
        if client is None:
            self._set_engine(admin=False, reason="the engine is not running")
            return
        self.engine.url, self.engine.api_key = client.url, client.api_key
        client.request("GET", "/admin/config", self._on_config, self._on_no_admin)

    def _on_no_admin(self, message: str) -> None:
        reason = ("this server has no /admin API (vLLM, transformers serve…): its settings cannot be changed "
                  "from here; a workload-only sweep (concurrency levels) still measures it")
        if "key" in message.lower() or "401" in message or "403" in message:
            reason = f"the API key may not change settings ({message})"
        self.in_force = {}
        self._set_engine(admin=False, reason=reason)
        self.config_changed.emit()

    def _on_config(self, body: dict) -> None:
        self.in_force = {f"{s}.{k}": v for s in tuning.RUNTIME_SECTIONS for k, v in body.get(s, {}).items()}
        self.edits = {k: v for k, v in self.edits.items() if v != self.in_force.get(k)}
        self._set_engine(admin=True, reason="")
        self.config_changed.emit()
        self.client.request("GET", "/admin/status", self._on_status, lambda m: None)

    def _on_status(self, status: dict) -> None:
        path_before = self.engine.status.get("path")
        self.engine.status = status
        url, key = self.engine.url, self.engine.api_key
        path = status.get("path")
        run_task(lambda _: _read_usage(url, key, status, path if path != path_before or self.engine.entry is None
                                       else None),
                 self._on_usage, lambda m: self.notifier.warning(f"Tuning: {m}"))

    def _on_usage(self, usage: dict) -> None:
        e = self.engine
        e.weights, e.kv_now, e.prefix_now, e.memory = (usage["weights"], usage["kv_now"], usage["prefix_now"],
                                                       usage["memory"])
        if usage.get("entry") is not None or not e.status.get("path"):
            e.entry = usage.get("entry")
        self.engine_changed.emit()
        self.recompute()

    def _set_engine(self, admin: bool, reason: str) -> None:
        self.engine.admin, self.engine.reason = admin, reason
        self.engine_changed.emit()

    # ------------------------------------------------------------------ editing
    def value(self, dotted: str) -> Any:
        """The edited value where there is one, else the one in force."""
        return self.edits.get(dotted, self.in_force.get(dotted))

    def set_edit(self, dotted: str, value: Any) -> None:
        if value == self.in_force.get(dotted):
            self.edits.pop(dotted, None)
        else:
            self.edits[dotted] = value
        self.config_changed.emit()
        self.recompute()

    def set_what_if(self, context: Optional[int] = None, kv_dtype: Optional[str] = None) -> None:
        self.context = context or None
        self.kv_dtype = kv_dtype or self.kv_dtype
        self.recompute()

    def revert(self) -> None:
        self.edits.clear()
        self.config_changed.emit()
        self.recompute()

    def over_budget(self) -> bool:
        return any(b.verdict == "will-not-fit" for b in self.budgets)

    def apply(self, confirmed: bool = False) -> bool:
        """PUT the edits; False (nothing sent) while they are over budget and not confirmed."""
        if not self.edits or self.client is None:
            return True
        if self.over_budget() and not confirmed:
            return False
        self._put(dict(self.edits))
        return True

    def apply_point(self, point: tuning.Point) -> None:
        """Put a sweep point's settings in force."""
        if point.config:
            self._put(dict(point.config))

    def _put(self, settings: dict[str, Any]) -> None:
        def done(body: dict) -> None:
            self.edits = {k: v for k, v in self.edits.items() if k not in settings}
            self._on_config(body)
            self.applied.emit(dict(self.in_force))
            self.notifier.info("settings applied: " + ", ".join(f"{k} = {v}" for k, v in settings.items()))

        def failed(message: str) -> None:
            self.refused.emit(refusals(message))
            self.notifier.error(f"/admin/config: {message}")
        self.client.request("PUT", "/admin/config", done, failed, tuning.sections(settings))

    # ------------------------------------------------------------------ the memory budget
    def context_in_use(self) -> Optional[int]:
        return self.context or self.engine.status.get("context_length") or getattr(self.engine.entry, "context_length",
                                                                                     None)

    def recompute(self) -> None:
        self.budgets = self.compute_budgets()
        self.budget_changed.emit(self.budgets)

    def compute_budgets(self) -> list[DeviceBudget]:
        e = self.engine
        if e.entry is None or not e.memory or not e.status.get("dtype"):
            return []
        batch = int(self.value("batching.max_batch_size") or 1)
        context = int(self.context_in_use() or 2048)
        cache_on = self.value("cache.type") != "none"
        prefix = int(float(self.value("cache.memory_mb") or 0) * 2**20) if cache_on else 0
        devices = list(e.weights) or [e.status.get("device") or "cpu"]
        total_weights = sum(e.weights.values()) or 1
        out = []
        for device in devices:
            memory = e.memory.get(device) or DeviceMemory(device, None, None, "unknown")
            on_host = not device.startswith("cuda")
            share = e.weights.get(device, total_weights) / total_weights
            engine_bytes = e.status.get("process_rss_bytes") if on_host else None
            try:
                out.append(device_budget(
                    e.entry, memory, dtype=e.status["dtype"], batch=batch, context=context, kv_dtype=self.kv_dtype,
                    share=share, prefix_cache_bytes=prefix if on_host else 0, kv_pool_bytes=self._kv_pool(share),
                    weights_bytes=int(e.weights[device]) if device in e.weights else None, engine_bytes=engine_bytes,
                    engine_accounted_bytes=int(sum(e.weights.values()) + e.kv_now + e.prefix_now)))
            except (ValueError, KeyError):
                return []
        if prefix and all(not d.startswith("cpu") for d in devices) and "cpu" in e.memory:
            out.append(device_budget(e.entry, e.memory["cpu"], dtype=e.status["dtype"], batch=0, context=context,
                                     share=0.0, prefix_cache_bytes=prefix, weights_bytes=0))
        return out

    def _kv_pool(self, share: float) -> Optional[int]:
        """Continuous batching reserves its KV blocks up front: the pool in force (from /metrics)
        while its settings are unchanged; sized from num_blocks x page_size when edited."""
        if self.value("batching.mode") != "continuous":
            return None
        blocks, page = self.value("batching.num_blocks"), self.value("batching.page_size")
        per_token = self.engine.entry.kv_elements_per_token() if self.engine.entry else None
        keys = ("batching.mode", "batching.num_blocks", "batching.page_size", "batching.kv_memory_share")
        if not any(k in self.edits for k in keys) and self.engine.kv_now:
            return int(self.engine.kv_now)
        if blocks and page and per_token:
            from engine.memory import DTYPE_BYTES

            dtype = self.engine.status.get("dtype") if self.kv_dtype == "auto" else self.kv_dtype
            return int(blocks * page * per_token * DTYPE_BYTES.get(dtype, 4) * share)
        return None

    # ------------------------------------------------------------------ sweeps
    def prepare_sweep(self, grid_text: str, workload: tuning.Workload, objective: tuning.Objective
                      ) -> tuple[dict, int]:
        """The grid and the number of points.

        Raises:
            ValueError: the grid, the workload or the objective was refused (the message says why).
        """
        grid = tuning.parse_grid(grid_text, "the grid") if grid_text.strip() and self.engine.admin else {}
        workload.check()
        objective.check()
        return grid, tuning.count_points(grid, len(workload.concurrency))

    def start_sweep(self, grid: dict, workload: tuning.Workload, objective: tuning.Objective) -> None:
        if self.running or self.engine.url is None:
            return
        self.overlay = None if self.overlay is self.record else self.overlay
        self.record = tuning.SweepRecord(url=self.engine.url, model=self.session.model_id or "",
                                         workload=workload.__dict__, grid=grid, objective=objective.__dict__)
        self.record.status = "running"
        sweep = self.sweep = tuning.Sweep(self.engine.url, self.engine.api_key, grid, workload, objective,
                                          model=self.session.model_id)

        def work(signals):
            sweep.on_event = signals.chunk.emit
            record = sweep.run()
            tuning.keep(record)
            return record
        self.sweep_started.emit(tuning.count_points(grid, len(workload.concurrency)))
        self.record_changed.emit()
        run_task(work, self._on_sweep_done, self._on_sweep_failed, self._on_sweep_event, pool=self._pool)

    def _on_sweep_event(self, event: dict) -> None:
        if self.sweep is None or self.record is None:
            return
        if event["type"] == "progress":
            self.last_progress = event
            self.sweep_progress.emit(event)
        elif event["type"] == "point":
            point = tuning.Point.from_dict(event["point"])
            self.record.points.append(point)
            self.record.finish()
            self.sweep_point.emit(point)

    def _on_sweep_done(self, record: tuning.SweepRecord) -> None:
        self.sweep, self.last_progress = None, None
        self.record = record
        if record.status == "stopped":
            self.notifier.error(f"sweep stopped: {record.stopped_reason}; the points done are kept")
        if record.restored is False:
            self.notifier.error(f"sweep: {record.restore_error}")
        self.sweep_finished.emit(record)
        self.record_changed.emit()
        self.refresh()
        self.refresh_runs()

    def _on_sweep_failed(self, message: str) -> None:
        self.sweep, self.last_progress = None, None
        self.record = None
        self.notifier.error(f"sweep: {message}")
        self.sweep_failed.emit(message)
        self.record_changed.emit()

    def cancel_sweep(self) -> None:
        if self.sweep is not None:
            self.sweep.cancel()

    def shutdown(self) -> None:
        """The app quits: a sweep under way is cancelled and puts back the settings it found."""
        if self.sweep is not None:
            self.sweep.cancel()
            self._pool.waitForDone(SHUTDOWN_WAIT_MS)

    # ------------------------------------------------------------------ kept runs
    def refresh_runs(self) -> None:
        run_task(lambda _: _titles(), self._on_runs, lambda m: self.notifier.warning(f"sweeps: {m}"))

    def _on_runs(self, runs: list) -> None:
        self.runs = runs
        self.runs_changed.emit(runs)

    def open_run(self, path: str, overlay: bool = False) -> None:
        """Show a kept run (or draw its front under the one shown) without measuring again."""
        def done(record: tuning.SweepRecord) -> None:
            if overlay:
                self.overlay = record
            elif not self.running:
                self.record = record
            self.record_changed.emit()
        run_task(lambda _: tuning.SweepRecord.read(path), done,
                 lambda m: self.notifier.error(f"cannot open the sweep {Path(path).name}: {m}"))

    def clear_overlay(self) -> None:
        self.overlay = None
        self.record_changed.emit()


def _read_usage(url: str, api_key: str, status: dict, path: Optional[str]) -> dict:
    """Off the GUI thread: /metrics (weights per device, KV and prefix cache now), the devices'
    free memory, and the served folder's catalog entry when it changed."""
    import httpx

    from engine.catalog import inspect_path
    from engine.telemetry.engine_metrics import parse

    samples = {}
    try:
        response = httpx.get(url + "/metrics", headers={"Authorization": f"Bearer {api_key}"}, timeout=10)
        if response.status_code == 200:
            samples = parse(response.text)
    except httpx.HTTPError:
        pass
    weights = {}
    for labels, value in samples.get("engine_model_weights_bytes", {}).items():
        device = dict(labels).get("device")
        if device and value:
            weights[device] = weights.get(device, 0) + value
    kv_now = sum(samples.get("engine_kv_cache_bytes", {}).values())
    prefix_now = sum(v for labels, v in samples.get("engine_prefix_cache_bytes", {}).items()
                     if dict(labels).get("tier") == "ram")
    devices = set(weights) | {status.get("device") or "cpu", "cpu"}
    memory = {d: device_memory(d) for d in devices}
    entry = inspect_path(Path(path)) if path else None
    return {"weights": weights, "kv_now": kv_now, "prefix_now": prefix_now, "memory": memory, "entry": entry}


def _titles() -> list[tuple[str, str]]:
    out = []
    for path in tuning.list_records():
        try:
            out.append((str(path), tuning.SweepRecord.read(path).title()))
        except (OSError, ValueError, TypeError, KeyError) as exc:
            out.append((str(path), f"{path.name} (unreadable: {exc})"))
    return out
