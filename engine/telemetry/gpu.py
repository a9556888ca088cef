"""NVIDIA GPUs through NVML (nvidia-ml-py): the one module that opens NVML, for the engine and the
app alike. Each field the device does not report is N/A (None), never 0.

Torch-free and pydantic-free (the desktop app imports it at start-up); pynvml is imported only when
a reading is taken. ``GpuSource`` holds NVML open for a sampler that reads every second;
``gpu_count`` and ``gpu_memory`` open it for one short reading (NVML counts its inits, so their
shutdown never closes a ``GpuSource``'s).
"""

from __future__ import annotations

import logging
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Optional

log = logging.getLogger("engine.telemetry.gpu")

# NVML clock-event (throttle) reasons worth naming to an operator; idle is not a problem.
THROTTLE_REASONS = {
    0x0000000000000002: "applications clocks setting",
    0x0000000000000004: "software power cap",
    0x0000000000000008: "hardware slowdown",
    0x0000000000000020: "software thermal slowdown",
    0x0000000000000040: "hardware thermal slowdown",
    0x0000000000000080: "hardware power brake",
}


@dataclass
class GpuProcess:
    pid: int
    used_bytes: Optional[int]
    is_engine: bool


@dataclass
class GpuSnapshot:
    index: int
    name: Optional[str] = None
    uuid: Optional[str] = None
    gpu_util_pct: Optional[float] = None
    mem_util_pct: Optional[float] = None
    mem_used_bytes: Optional[int] = None
    mem_total_bytes: Optional[int] = None
    temperature_c: Optional[float] = None
    power_w: Optional[float] = None
    power_limit_w: Optional[float] = None
    sm_clock_mhz: Optional[float] = None
    mem_clock_mhz: Optional[float] = None
    pcie_tx_kbps: Optional[float] = None
    pcie_rx_kbps: Optional[float] = None
    throttle: Optional[list[str]] = None
    processes: Optional[list[GpuProcess]] = None  # None: the driver would not list them

    def engine_bytes(self) -> Optional[int]:
        """GPU memory of the engine's processes; N/A when the driver does not tell."""
        if self.processes is None:
            return None
        used = [p.used_bytes for p in self.processes if p.is_engine]
        return None if any(u is None for u in used) else sum(used)


@dataclass(frozen=True)
class GpuMemory:
    """One GPU's memory for the estimator's fits/tight verdict; None where NVML cannot tell."""

    index: int
    total_bytes: Optional[int] = None
    free_bytes: Optional[int] = None


def _import_nvml(nvml: Any = None) -> Any:
    if nvml is not None:
        return nvml
    import pynvml  # lazily: the app starts without paying for it, and works without it

    return pynvml


@contextmanager
def nvml_session(nvml: Any = None) -> Iterator[Any]:
    """NVML initialised for the block and shut down after it.

    Raises:
        ImportError: nvidia-ml-py is not installed.
        Exception: any NVML error (no driver, no library) from ``nvmlInit``.
    """
    nvml = _import_nvml(nvml)
    nvml.nvmlInit()
    try:
        yield nvml
    finally:
        nvml.nvmlShutdown()


def gpu_count(nvml: Any = None) -> int:
    """How many GPUs NVML sees: 0 without nvidia-ml-py, a driver or a GPU."""
    try:
        with nvml_session(nvml) as n:
            return int(n.nvmlDeviceGetCount())
    except Exception:
        return 0


def gpu_memory(index: int, nvml: Any = None) -> GpuMemory:
    """Total and free memory of GPU ``index``; both N/A when it cannot be read (no such GPU…)."""
    try:
        with nvml_session(nvml) as n:
            info = n.nvmlDeviceGetMemoryInfo(n.nvmlDeviceGetHandleByIndex(index))
            return GpuMemory(index, int(info.total), int(info.free))
    except Exception:
        return GpuMemory(index)


class GpuSource:
    """Reads every NVIDIA GPU. ``available`` is False, with ``reason``, when there is no driver,
    no nvidia-ml-py or no GPU: everything else keeps working."""

    def __init__(self, nvml: Any = None):
        self.available = False
        self.reason: Optional[str] = None
        self.driver: Optional[str] = None
        self.cuda: Optional[str] = None
        self._nvml = nvml
        self._handles: list[Any] = []
        self._start()

    def _start(self) -> None:
        try:
            self._nvml = _import_nvml(self._nvml)
            self._nvml.nvmlInit()  # held for the source's life: a sampler reads every second
            count = self._nvml.nvmlDeviceGetCount()
        except ImportError:
            self.reason = "nvidia-ml-py is not installed"
            return
        except Exception as exc:  # NVMLError_LibraryNotFound, DriverNotLoaded …
            self.reason = f"no NVIDIA driver: {exc}"
            return
        if count == 0:
            self.reason = "no NVIDIA GPU found"
            return
        self._handles = [self._nvml.nvmlDeviceGetHandleByIndex(i) for i in range(count)]
        self.driver = self._read(self._nvml.nvmlSystemGetDriverVersion)
        cuda = self._read(self._nvml.nvmlSystemGetCudaDriverVersion)
        self.cuda = f"{cuda // 1000}.{cuda % 1000 // 10}" if isinstance(cuda, int) else None
        self.available = True

    @staticmethod
    def _read(call: Callable, *args) -> Any:
        """One NVML field; not supported, no permission or any NVML error reads as N/A."""
        try:
            value = call(*args)
        except Exception:
            return None
        return value.decode() if isinstance(value, bytes) else value

    def snapshot(self, engine_pids: frozenset[int] = frozenset()) -> list[GpuSnapshot]:
        if not self.available:
            return []
        return [self._device(i, h, engine_pids) for i, h in enumerate(self._handles)]

    def _device(self, index: int, h: Any, engine_pids: frozenset[int]) -> GpuSnapshot:
        n, r = self._nvml, self._read
        snap = GpuSnapshot(index=index, name=r(n.nvmlDeviceGetName, h), uuid=r(n.nvmlDeviceGetUUID, h))
        util = r(n.nvmlDeviceGetUtilizationRates, h)
        if util is not None:
            snap.gpu_util_pct, snap.mem_util_pct = float(util.gpu), float(util.memory)
        mem = r(n.nvmlDeviceGetMemoryInfo, h)
        if mem is not None:
            snap.mem_used_bytes, snap.mem_total_bytes = int(mem.used), int(mem.total)
        snap.temperature_c = r(n.nvmlDeviceGetTemperature, h, n.NVML_TEMPERATURE_GPU)
        power = r(n.nvmlDeviceGetPowerUsage, h)
        snap.power_w = power / 1000 if power is not None else None
        limit = r(n.nvmlDeviceGetEnforcedPowerLimit, h)
        snap.power_limit_w = limit / 1000 if limit is not None else None
        snap.sm_clock_mhz = r(n.nvmlDeviceGetClockInfo, h, n.NVML_CLOCK_SM)
        snap.mem_clock_mhz = r(n.nvmlDeviceGetClockInfo, h, n.NVML_CLOCK_MEM)
        snap.pcie_tx_kbps = r(n.nvmlDeviceGetPcieThroughput, h, n.NVML_PCIE_UTIL_TX_BYTES)
        snap.pcie_rx_kbps = r(n.nvmlDeviceGetPcieThroughput, h, n.NVML_PCIE_UTIL_RX_BYTES)
        reasons = r(n.nvmlDeviceGetCurrentClocksEventReasons, h)
        if reasons is None:
            reasons = r(getattr(n, "nvmlDeviceGetCurrentClocksThrottleReasons", lambda _: None), h)
        if reasons is not None:
            snap.throttle = [text for bit, text in THROTTLE_REASONS.items() if reasons & bit]
        procs = r(n.nvmlDeviceGetComputeRunningProcesses, h)
        if procs is not None:
            snap.processes = [GpuProcess(int(p.pid), _process_bytes(p), int(p.pid) in engine_pids) for p in procs]
        return snap


def _process_bytes(process: Any) -> Optional[int]:
    used = getattr(process, "usedGpuMemory", None)
    return int(used) if isinstance(used, int) and used >= 0 else None  # NVML reports N/A as a sentinel
