"""One sample of every source as a flat row, ring buffers of those rows, and alerts over them."""

from __future__ import annotations

import math
import time
from collections import deque
from dataclasses import asdict, dataclass
from typing import Optional

import numpy as np

from engine.telemetry.engine_metrics import EngineMetricsSource, EngineSnapshot
from engine.telemetry.gpu import GpuProcess, GpuSnapshot, GpuSource
from engine.telemetry.host import HostSource

GPU_FIELDS = ("name", "gpu_util_pct", "mem_util_pct", "mem_used_bytes", "mem_total_bytes", "engine_mem_bytes",
              "temperature_c", "power_w", "power_limit_w", "sm_clock_mhz", "mem_clock_mhz", "pcie_tx_kbps",
              "pcie_rx_kbps", "throttle", "processes")
HOST_FIELDS = ("cpu_pct", "ram_used_bytes", "ram_total_bytes", "worker_rss_bytes", "worker_cpu_pct")
ENGINE_FIELDS = tuple(f"engine_{name}" for name in EngineSnapshot.__dataclass_fields__)


def gpu_row(index: int, snap: Optional[GpuSnapshot]) -> dict:
    prefix = f"gpu{index}_"
    if snap is None:
        return {prefix + f: None for f in GPU_FIELDS}
    row = {prefix + f: getattr(snap, f, None) for f in GPU_FIELDS
           if f not in ("engine_mem_bytes", "throttle", "processes")}
    row[prefix + "engine_mem_bytes"] = snap.engine_bytes()
    row[prefix + "throttle"] = None if snap.throttle is None else ("; ".join(snap.throttle) or "none")
    row[prefix + "processes"] = describe_processes(snap.processes)
    return row


def describe_processes(processes: Optional[list[GpuProcess]]) -> Optional[str]:
    """"4321 (engine) 60.0 GiB; 4242 N/A": who holds the device's memory (None: not listed)."""
    if processes is None:
        return None
    parts = []
    for p in sorted(processes, key=lambda p: -(p.used_bytes or 0)):
        used = "N/A" if p.used_bytes is None else f"{p.used_bytes / 2**30:.1f} GiB"
        parts.append(f"{p.pid}{' (engine)' if p.is_engine else ''} {used}")
    return "; ".join(parts) or "none"


class Recorder:
    """Samples GPU, host and (when a URL is given) engine into one row per call."""

    def __init__(self, url: Optional[str] = None, api_key: Optional[str] = None,
                 worker_pid: Optional[int] = None, gpu: Optional[GpuSource] = None):
        self.gpu = gpu or GpuSource()
        self.host = HostSource(worker_pid)
        self.engine = EngineMetricsSource(url, api_key) if url else None
        self.worker_pid = worker_pid

    def columns(self) -> list[str]:
        gpus = max(1, len(self.gpu.snapshot()))
        cols = ["time", *HOST_FIELDS]
        for i in range(gpus):
            cols += [f"gpu{i}_{f}" for f in GPU_FIELDS]
        return cols + list(ENGINE_FIELDS)

    def sample(self) -> dict:
        now = time.time()
        row: dict = {"time": round(now, 3)}
        row.update(asdict(self.host.snapshot()))
        pids = frozenset({self.worker_pid}) if self.worker_pid else frozenset()
        gpus = self.gpu.snapshot(pids)
        for i, snap in enumerate(gpus or [None]):  # no GPU: one set of N/A columns
            row.update(gpu_row(i, snap))
        engine = self.engine.snapshot(now) if self.engine else EngineSnapshot()
        row.update({f"engine_{k}": v for k, v in asdict(engine).items()})
        return row


class SeriesBuffer:
    """Fixed-capacity ring buffers of numeric series (N/A stored as NaN). An hour at 1 s of 60
    series is 60 x 3600 x 8 bytes, about 1.7 MB."""

    def __init__(self, capacity: int = 3600):
        self.capacity = capacity
        self._series: dict[str, np.ndarray] = {}
        self._times = np.full(capacity, np.nan)
        self._count = 0

    def append(self, row: dict) -> None:
        slot = self._count % self.capacity
        self._times[slot] = row["time"]
        for name, value in row.items():
            if name == "time" or isinstance(value, str):
                continue
            series = self._series.get(name)
            if series is None:
                series = self._series[name] = np.full(self.capacity, np.nan)
            series[slot] = np.nan if value is None else float(value)
        self._count += 1

    def get(self, name: str, window_s: Optional[float] = None) -> tuple[np.ndarray, np.ndarray]:
        """(times, values) in time order, optionally only the last ``window_s`` seconds."""
        n = min(self._count, self.capacity)
        order = (np.arange(n) + (self._count - n)) % self.capacity
        times = self._times[order]
        values = self._series.get(name, np.full(self.capacity, np.nan))[order]
        if window_s is not None and n:
            keep = times >= times[-1] - window_s
            times, values = times[keep], values[keep]
        return times, values

    @property
    def nbytes(self) -> int:
        return self._times.nbytes + sum(s.nbytes for s in self._series.values())


@dataclass
class Alert:
    kind: str
    message: str
    since: float


class AlertWatch:
    """VRAM above a threshold, thermal or power throttling, worker memory that keeps growing."""

    def __init__(self, vram_threshold: float = 0.9, growth_window_s: float = 600, growth_ratio: float = 1.2):
        self.vram_threshold = vram_threshold
        self.growth_window_s = growth_window_s
        self.growth_ratio = growth_ratio
        self.active: dict[str, Alert] = {}

    def update(self, row: dict, buffer: SeriesBuffer) -> list[Alert]:
        """Returns the alerts that started with this row; ``active`` holds all current ones."""
        found: dict[str, str] = {}
        for key, value in row.items():
            if key.endswith("_mem_used_bytes") and key.startswith("gpu") and value is not None:
                total = row.get(key.replace("used", "total"))
                if total and value / total > self.vram_threshold:
                    found[key[:4] + "-vram"] = f"{key[:4]} memory at {value / total:.0%} (threshold {self.vram_threshold:.0%})"
            if key.endswith("_throttle") and value not in (None, "none"):
                found[key[:4] + "-throttle"] = f"{key[:4]} throttling: {value}"
        times, rss = buffer.get("worker_rss_bytes", self.growth_window_s)
        rss = rss[~np.isnan(rss)]
        if len(rss) >= 10 and times[-1] - times[0] >= self.growth_window_s * 0.9 and rss[0] > 0:
            steadily_up = np.all(np.diff(rss[:: max(1, len(rss) // 10)]) >= 0)
            if steadily_up and rss[-1] / rss[0] >= self.growth_ratio:
                found["worker-memory"] = (f"worker memory grew {rss[-1] / rss[0]:.2f}x in "
                                          f"{(times[-1] - times[0]) / 60:.0f} min and keeps growing")
        started = [Alert(k, m, row["time"]) for k, m in found.items() if k not in self.active]
        self.active = {k: self.active.get(k) or Alert(k, m, row["time"]) for k, m in found.items()}
        return started


def csv_value(value) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "N/A"
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)
