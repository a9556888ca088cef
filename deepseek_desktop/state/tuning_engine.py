"""What the Tuning panel knows of the engine it tunes, and how its memory use is read: the
weights, KV cache and prefix cache from ``/metrics`` (through the Monitor's own reader,
``engine.telemetry.engine_metrics``), the devices' free memory, and the served folder's catalog
entry."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from engine.memory import DeviceMemory, device_memory
from engine.telemetry.engine_metrics import EngineMetricsSource

METRICS_TIMEOUT_S = 10


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
    max_memory: Optional[dict] = None            # [load] max_memory (GET /admin/config): the layers' devices


def metrics_source(url: str, api_key: Optional[str]) -> EngineMetricsSource:
    return EngineMetricsSource(url, api_key, timeout=METRICS_TIMEOUT_S)


def read_usage(metrics: EngineMetricsSource, status: dict, path: Optional[str]) -> dict:
    """Off the GUI thread: /metrics (weights per device, KV and prefix cache now), the devices'
    free memory, and the served folder's catalog entry when it changed (``path``; None: unchanged).

    An engine that does not answer /metrics reads as holding nothing: the budget is then the
    estimate alone."""
    from engine.catalog import inspect_path

    snap = metrics.snapshot(time.monotonic())
    # The engine reports its weights on the one device it loaded them on (engine.metrics.track_model).
    weights = {snap.model_device: snap.weights_bytes} if snap.model_device and snap.weights_bytes else {}
    devices = set(weights) | {status.get("device") or "cpu", "cpu"}
    return {"weights": weights, "kv_now": snap.kv_cache_bytes or 0.0,
            "prefix_now": snap.prefix_cache_ram_bytes or 0.0,
            "memory": {d: device_memory(d) for d in devices},
            "entry": inspect_path(Path(path)) if path else None}
