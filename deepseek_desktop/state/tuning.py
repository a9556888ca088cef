"""TuningModel: what the Tuning panel shows and does, without widgets.

It reads the engine's run-time settings (``GET /admin/config``), status and ``/metrics``, keeps
the settings being edited beside the ones in force, redraws the memory budget from the torch-free
estimate at each edit (``state.tuning_budget``), and applies and reverts (``PUT /admin/config``).
Every call to the engine runs off the GUI thread. Sweeps and the kept runs are its ``sweeps``
(``state.tuning_sweep.SweepModel``), whose signals and state also read as the model's own.
"""

from __future__ import annotations

from typing import Any, Optional

from PySide6.QtCore import QObject, Signal

from deepseek_desktop.notifier import Notifier
from deepseek_desktop.state.engine_session import EngineSession
from deepseek_desktop.state.tuning_budget import compute_budgets, layer_spread
from deepseek_desktop.state.tuning_engine import EngineView, metrics_source, read_usage
from deepseek_desktop.state.tuning_settings import refusals
from deepseek_desktop.state.tuning_sweep import SweepModel
from deepseek_desktop.tasks import run_task
from engine import tuning
from engine.memory_budget import DeviceBudget
from engine.telemetry.engine_metrics import EngineMetricsSource


class TuningModel(QObject):
    engine_changed = Signal()            # admin API or not, the model, the device
    config_changed = Signal()            # the settings in force or the edits
    budget_changed = Signal(list)        # list[DeviceBudget]
    applied = Signal(dict)               # the settings now in force
    refused = Signal(dict)               # field ("" for none) -> the engine's message

    def __init__(self, session: EngineSession, notifier: Notifier, parent: Optional[QObject] = None):
        super().__init__(parent)
        self.session, self.notifier = session, notifier
        self.engine = EngineView()               # shared with the sweeps: mutated, never replaced
        self.in_force: dict[str, Any] = {}       # dotted -> value
        self.edits: dict[str, Any] = {}          # dotted -> value being edited
        self.context: Optional[int] = None       # what-if (a reload would be needed)
        self.kv_dtype = "auto"                   # what-if
        self.budgets: list[DeviceBudget] = []
        self._metrics: Optional[EngineMetricsSource] = None   # one kept-alive reader per engine
        self.sweeps = SweepModel(session, notifier, self.engine, self)
        self.sweeps.sweep_finished.connect(lambda _: self.refresh())  # it put back the settings it found
        # Callers that know one view model (tests, scripts, benchmarks) find the sweeps' signals here too.
        s = self.sweeps
        self.sweep_started, self.sweep_progress, self.sweep_point = s.sweep_started, s.sweep_progress, s.sweep_point
        self.sweep_finished, self.sweep_failed = s.sweep_finished, s.sweep_failed
        self.record_changed, self.runs_changed = s.record_changed, s.runs_changed
        session.attached.connect(lambda *_: self.refresh())
        session.model_changed.connect(lambda *_: self.refresh())
        self.refresh()

    # ------------------------------------------------------------------ the sweeps' state, read here too
    @property
    def running(self) -> bool:
        return self.sweeps.running

    @property
    def record(self) -> Optional[tuning.SweepRecord]:
        return self.sweeps.record

    @property
    def overlay(self) -> Optional[tuning.SweepRecord]:
        return self.sweeps.overlay

    @property
    def runs(self) -> list[tuple[str, str]]:
        return self.sweeps.runs

    @property
    def last_progress(self) -> Optional[dict]:
        return self.sweeps.last_progress

    def shutdown(self) -> None:
        """The app quits: a sweep under way is cancelled and puts back the settings it found."""
        self.sweeps.shutdown()

    # ------------------------------------------------------------------ reading the engine
    @property
    def client(self):
        return self.session.client

    def refresh(self) -> None:
        client = self.client
        if client is None:
            self._set_engine(admin=False, reason="the engine is not running")
            return
        if (client.url, client.api_key) != (self.engine.url, self.engine.api_key):
            self._metrics = None                 # another engine, or another key: another reader
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
        self.engine.max_memory = (body.get("load") or {}).get("max_memory")  # where the budget's layers go
        self.edits = {k: v for k, v in self.edits.items() if v != self.in_force.get(k)}
        self._set_engine(admin=True, reason="")
        self.config_changed.emit()
        self.client.request("GET", "/admin/status", self._on_status, lambda m: None)

    def _on_status(self, status: dict) -> None:
        path_before = self.engine.status.get("path")
        self.engine.status = status
        path = status.get("path")
        changed = path if path != path_before or self.engine.entry is None else None
        metrics = self._metrics = self._metrics or metrics_source(self.engine.url, self.engine.api_key)
        entry, max_memory = self.engine.entry, self.engine.max_memory

        def work(_):
            usage = read_usage(metrics, status, changed)
            # The layer placement reads every header: here, off the GUI thread (~1 s for a 45k-tensor MoE).
            layer_spread(EngineView(status=status, entry=usage.get("entry") or entry, max_memory=max_memory))
            return usage
        run_task(work, self._on_usage, lambda m: self.notifier.warning(f"Tuning: {m}"))

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
        return compute_budgets(self.engine, self.value, self.edits, self.context_in_use(), self.kv_dtype)
