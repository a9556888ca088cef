"""The host (psutil): CPU and RAM, and the worker process's resident memory and CPU."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import psutil


@dataclass
class HostSnapshot:
    cpu_pct: float
    ram_used_bytes: int
    ram_total_bytes: int
    worker_rss_bytes: Optional[int] = None
    worker_cpu_pct: Optional[float] = None


class HostSource:
    def __init__(self, worker_pid: Optional[int] = None):
        self._worker: Optional[psutil.Process] = None
        psutil.cpu_percent(None)  # the first call only starts the interval
        self.set_worker(worker_pid)

    def set_worker(self, pid: Optional[int]) -> None:
        self._worker = None
        if pid:
            try:
                self._worker = psutil.Process(pid)
                self._worker.cpu_percent(None)
            except psutil.Error:
                self._worker = None

    def snapshot(self) -> HostSnapshot:
        vm = psutil.virtual_memory()
        snap = HostSnapshot(cpu_pct=psutil.cpu_percent(None), ram_used_bytes=vm.total - vm.available,
                            ram_total_bytes=vm.total)
        if self._worker is not None:
            try:
                with self._worker.oneshot():
                    snap.worker_rss_bytes = self._worker.memory_info().rss
                    snap.worker_cpu_pct = self._worker.cpu_percent(None)
            except psutil.Error:  # the worker is gone: N/A, not 0
                self._worker = None
        return snap
