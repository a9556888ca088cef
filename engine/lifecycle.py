"""The served model's lifecycle: load, replace, unload, each step announced as a state event.

    idle ──load──▶ loading ──▶ ready ──unload──▶ unloading ──▶ idle
                      └──────▶ error (failed, nothing to fall back on) / back to the model before

One load runs at a time, on a thread of its own, and ends in a ``LoadOutcome`` that says what
happened (loaded, failed, cancelled, timed out), so callers read the result instead of polling
flags. Importing this module does not import torch; a load or an unload does, on first use.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

from engine.catalog import ModelEntry, inspect_path
from engine.config import EngineConfig, LoadConfig, ModelConfig
from engine.events import EventBus
from engine.memory import device_memory, estimate, plan_quantization, resolve_dtype, weights_bytes
from engine.metrics import EngineMetrics
from engine.quantization import QuantizationPlan, QuantizationRefused
from engine.scheduling import Scheduler, ServedModel
from engine.states import ModelState

log = logging.getLogger("engine")

ROOM_FACTOR = 1.2  # keep the old model while the new one loads only with 20 % to spare


class ModelProblem(ValueError):
    """The model cannot be loaded as it is (broken folder, unknown architecture); a 4xx."""


class LoadInProgress(RuntimeError):
    """Another load is running."""


class LoadFailed(RuntimeError):
    """A load ended without a model: failed, cancelled or timed out."""


@dataclass(frozen=True)
class LoadOutcome:
    """How one load ended.

    Attributes:
        state: the engine's state once it ended: ready (the new model, or the one served before),
            idle (cancelled with nothing to fall back on) or error.
        model: the model it loaded; None when it ended without one.
        error: why it ended without a model.
        cancelled: stopped by ``cancel``. A load cancelled after its last tensor completes
            all the same: then ``model`` is set and ``cancelled`` is False.
        timed_out: stopped past ``load.timeout_s`` (a failure, unlike a cancel).
    """

    state: ModelState
    model: Optional[ServedModel] = None
    error: Optional[str] = None
    cancelled: bool = False
    timed_out: bool = False

    @property
    def loaded(self) -> bool:
        return self.model is not None


def validate_model(model: ModelConfig) -> ModelEntry:
    """Check a model before any weight is read (torch-free).

    Raises:
        ModelProblem: the folder is broken or not loadable; the message names file and problem.
    """
    if not model.path:
        raise ModelProblem("no model path given")
    entry = inspect_path(Path(model.path))
    if entry.problem:
        raise ModelProblem(f"cannot load {model.path}: {entry.problem}")
    return entry


def load_device(model: ModelConfig) -> str:
    """The device a load of ``model`` uses (``auto``: the first CUDA GPU, else the CPU)."""
    if model.device != "auto":
        return model.device
    from engine.catalog import auto_device

    return auto_device()


def plan_weights(entry: ModelEntry, model: ModelConfig) -> QuantizationPlan:
    """What the load does with the weights (``auto`` resolved against the device's free memory).

    Raises:
        ModelProblem: the quantization cannot run on that device with these libraries, or the
            model is already quantized with another method; the message says what would work.
    """
    try:
        return plan_quantization(entry, model.quantization, model.dtype, load_device(model),
                                 1, min(entry.context_length or 2048, 2048))
    except QuantizationRefused as exc:
        raise ModelProblem(f"cannot load {model.path}: {exc}") from None


class ModelLifecycle:
    """Owns the served model, its scheduler and prefix cache, and the state they are in.

    Args:
        settings: reads the engine's configuration in force (batching and cache settings for
            the scheduler a new model gets).
        adopt: records the model and load settings of a model that now serves.
    """

    def __init__(self, metrics: EngineMetrics, events: EventBus,
                 settings: Callable[[], EngineConfig], adopt: Callable[[ModelConfig, LoadConfig], None]):
        self.metrics, self.events = metrics, events
        self._settings, self._adopt = settings, adopt
        self.state = ModelState.IDLE
        self.error: Optional[str] = None
        self.model: Optional[ServedModel] = None
        self.scheduler: Optional[Scheduler] = None
        self.prefix_cache: Any = None  # engine.runtime.prefix_cache.PrefixCache, or None
        # Guards swapping the model, scheduler and settings; reentrant so that a settings change
        # (which holds it) can rebuild the scheduler through ``rebuild_scheduler``.
        self.lock = threading.RLock()
        self._thread: Optional[threading.Thread] = None
        self._cancel = threading.Event()
        self.outcome: Optional[LoadOutcome] = None  # of the latest load, once it has ended

    # ------------------------------------------------------------------ state and events
    @property
    def model_name(self) -> Optional[str]:
        model = self.model
        return model.name if model else None

    def set_state(self, state: ModelState, **fields: Any) -> None:
        self.state = state
        self.metrics.set_model_state(state)
        log.info("state %s", state, extra={"event": "state", "state": state, **fields})
        self.events.publish({"type": "state", "state": state, "model": self.model_name, **fields})

    def report(self, message: str, **fields: Any) -> None:
        log.error("%s", message, extra={"event": "error", "error": message, **fields})
        self.events.publish({"type": "error", "message": message, **fields})

    def refuse(self, problem: ModelProblem, path: Optional[str]) -> None:
        """A model refused before loading: reported, and the state is error if nothing serves."""
        self.report(str(problem), path=path)
        if self.model is None:
            self.error = str(problem)
            self.set_state(ModelState.ERROR, error=self.error)

    # ------------------------------------------------------------------ loading
    @property
    def loading(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def check_not_loading(self) -> None:
        """Raises:
            LoadInProgress: a load is running.
        """
        if self.loading:
            raise LoadInProgress("a model is already loading; cancel it first (POST /admin/cancel-load)")

    def start_load(self, model: ModelConfig, load: LoadConfig, entry: ModelEntry,
                   weights: Optional[QuantizationPlan] = None) -> None:
        """Load ``model`` on a background thread; its outcome lands in ``outcome``.

        Args:
            weights: what to do with the weights (``plan_weights``); None: planned here.
        Raises:
            LoadInProgress: another load is running.
            ModelProblem: the quantization asked for is refused (planned here).
        """
        self.check_not_loading()
        weights = weights or plan_weights(entry, model)
        self._cancel.clear()
        self._thread = threading.Thread(target=self._run_load, args=(model, load, entry, weights),
                                        name="model-load", daemon=True)
        self._thread.start()

    def cancel(self) -> bool:
        """Stop the running load between two tensors; False when nothing is loading."""
        if not self.loading:
            return False
        self._cancel.set()
        return True

    def wait(self, timeout: Optional[float] = None) -> Optional[LoadOutcome]:
        """The latest load's outcome once it has ended; None while it still runs after
        ``timeout`` seconds, or when no load has run."""
        thread = self._thread
        if thread is not None:
            thread.join(timeout)
            if thread.is_alive():
                return None
        return self.outcome

    def _run_load(self, model: ModelConfig, load: LoadConfig, entry: ModelEntry, weights: QuantizationPlan) -> None:
        try:
            self.outcome = self._load(model, load, entry, weights)
        except Exception as exc:  # the load thread must always end in a reported state
            log.exception("load failed unexpectedly")
            self.error = f"{type(exc).__name__}: {exc}"
            state = ModelState.READY if self.model else ModelState.ERROR
            self.set_state(state, error=self.error)
            self.outcome = LoadOutcome(state, error=self.error)

    def _load(self, model: ModelConfig, load: LoadConfig, entry: ModelEntry, weights: QuantizationPlan) -> LoadOutcome:
        from engine.runtime.loader import LoadCancelled, ModelLoadError, load_model, release_memory

        if self.model is not None and not self._fits_beside_current(entry, model, weights):
            log.info("unloading %s to make room", self.model_name,
                     extra={"event": "make_room", "model": self.model_name})
            self.unload()
        if weights.note:
            log.info("quantization: %s", weights.note, extra={"event": "quantization", "quantization": weights.method})
        self.set_state(ModelState.LOADING, path=model.path, replacing=self.model_name,
                       quantization=weights.describe(), quantization_note=weights.note or None)
        started = time.monotonic()
        stopped: Optional[tuple[str, Optional[str]]] = None  # (message, stopped_because)
        try:
            loaded = load_model(model, load, emit=self.events.publish, cancel=self._cancel, quantization=weights)
        except LoadCancelled as exc:  # cancelled, or past load.timeout_s
            stopped = (str(exc), exc.reason)
        except ModelLoadError as exc:
            stopped = (str(exc), None)
        if stopped is not None:
            # Released only here, out of the except block: its traceback holds load_model's frames,
            # and with them every tensor of the half-loaded model.
            release_memory()
            return self._ended_without_model(model, stopped[0], stopped_because=stopped[1])
        self._install(loaded, model, load)
        release_memory()
        self.set_state(
            ModelState.READY, device=str(loaded.device), dtype=str(loaded.dtype).removeprefix("torch."),
            context_length=loaded.context_length, load_s=round(time.monotonic() - started, 2),
            memory_bytes=loaded.device_memory_bytes(), estimated_bytes=self.estimate_weights(entry, model, weights),
            quantization=loaded.quantization,
        )
        return LoadOutcome(ModelState.READY, model=loaded)

    def _ended_without_model(self, model: ModelConfig, message: str,
                             stopped_because: Optional[str] = None) -> LoadOutcome:
        """A load that failed, or stopped (``stopped_because``: "cancelled" or "timed out …")."""
        stopped = stopped_because is not None
        cancelled = stopped_because == "cancelled"
        self.error = f"load of {model.path} {stopped_because}" if stopped else message
        if not cancelled:  # failures and timeouts are errors; a cancel is what was asked for
            self.report(self.error, path=model.path)
        # The model served before (if any) is still there: back to it.
        if self.model is not None:
            state = ModelState.READY
        else:
            state = ModelState.IDLE if cancelled else ModelState.ERROR
        self.set_state(state, error=self.error, cancelled=stopped)
        return LoadOutcome(state, error=self.error, cancelled=cancelled, timed_out=stopped and not cancelled)

    def _install(self, loaded: ServedModel, model: ModelConfig, load: LoadConfig) -> None:
        """Serve ``loaded`` from now on; the old scheduler finishes what it had queued, then
        frees the old model."""
        from engine.runtime.modes import make_generator, make_prefix_cache

        with self.lock:
            settings = self._settings()
            old_scheduler = self.scheduler
            self.model = loaded
            self.prefix_cache = make_prefix_cache(loaded, self.metrics, settings.cache)
            self.scheduler = make_generator(loaded, self.metrics, settings.batching, self.prefix_cache)
            self.metrics.track_device_memory(loaded.device_memory_bytes)
            self.metrics.track_model(str(loaded.device), loaded.weights_bytes, self.kv_cache_bytes)
            self._adopt(model, load)
            self.error = None
        if old_scheduler is not None:
            old_scheduler.stop(join=False)

    def estimate_weights(self, entry: ModelEntry, model: ModelConfig,
                         weights: Optional[QuantizationPlan] = None) -> Optional[int]:
        device = model.device if model.device != "auto" else "cpu"
        try:
            if weights is not None:
                return weights_bytes(entry, resolve_dtype(model.dtype, device), weights)
            return estimate(entry, model.dtype, 1, min(entry.context_length or 2048, 2048),
                            device=device, quantization=model.quantization).weights_bytes
        except ValueError:
            return None

    def _fits_beside_current(self, entry: ModelEntry, model: ModelConfig, weights: QuantizationPlan) -> bool:
        """Keep the current model while the new one loads only when both fit."""
        needed = self.estimate_weights(entry, model, weights)
        device = model.device if model.device != "auto" else str(self.model.device)
        free = device_memory(device).free_bytes
        return needed is not None and free is not None and needed * ROOM_FACTOR < free

    # ------------------------------------------------------------------ run-time settings
    def rebuild_scheduler(self, old: EngineConfig, new: EngineConfig) -> None:
        """A new scheduler (and prefix cache, if its settings changed) for the model serving;
        requests the old one holds finish under the old settings."""
        from engine.runtime.modes import make_generator, make_prefix_cache

        with self.lock:
            if self.model is None or (new.batching == old.batching and new.cache == old.cache):
                return
            if new.cache != old.cache:
                self.prefix_cache = make_prefix_cache(self.model, self.metrics, new.cache)
            old_scheduler = self.scheduler
            self.scheduler = make_generator(self.model, self.metrics, new.batching, self.prefix_cache)
            old_scheduler.stop(join=False)

    def kv_cache_bytes(self) -> float:
        scheduler = self.scheduler  # the current one: a replaced one only finishes its last requests
        return scheduler.kv_cache_bytes() if scheduler is not None else 0.0

    # ------------------------------------------------------------------ unloading
    def unload(self) -> None:
        """Stop the scheduler (after the requests it holds) and free the model; idle after."""
        from engine.runtime.loader import release_memory

        with self.lock:
            if self.model is None:
                return
            name = self.model.name
            self.set_state(ModelState.UNLOADING)
            scheduler, self.scheduler, self.model = self.scheduler, None, None
            self.prefix_cache = None
            self.metrics.track_device_memory(None)
            self.metrics.track_model(None)
        scheduler.stop()
        del scheduler
        release_memory()
        self.set_state(ModelState.IDLE, unloaded=name)
