"""TelemetryModel: samples GPU, host and engine off the GUI thread into ring buffers and tells
the panels a new row is there (no widgets). Alerts go out through ``alert``.

The samplers (numpy, httpx, psutil, NVML) are imported with the first sample, on the sampler's
thread, not while the first window is drawn.
"""

from __future__ import annotations

import atexit
from typing import TYPE_CHECKING, Optional

import shiboken6
from PySide6.QtCore import QMetaObject, QObject, QSettings, Qt, QThread, QTimer, Signal, Slot

if TYPE_CHECKING:
    from engine.telemetry.recorder import AlertWatch, Recorder, SeriesBuffer

# The Monitor's choices; the sampling interval and the VRAM alert are kept under these keys.
SAMPLE_EVERY = {"0.5 s": 0.5, "1 s": 1.0, "2 s": 2.0, "5 s": 5.0}
INTERVAL_KEY, VRAM_ALERT_KEY = "monitor/interval", "monitor/vram_alert"
VRAM_ALERT_PCT = (50, 100)  # the range the Monitor's box offers


class _Sampler(QObject):
    sampled = Signal(dict)

    def __init__(self, interval_ms: int):
        super().__init__()
        self.interval_ms = interval_ms
        self.recorder: Optional[Recorder] = None
        self._timer: Optional[QTimer] = None
        self._target: tuple = (None, None, None)

    @Slot()
    def start(self) -> None:
        self._timer = QTimer(self)
        self._timer.timeout.connect(self.sample)
        self._timer.start(self.interval_ms)

    @Slot()
    def halt(self) -> None:
        """Stop and delete the timer on this thread (Qt refuses to do it from another)."""
        if self._timer is not None:
            timer, self._timer = self._timer, None
            timer.stop()
            shiboken6.delete(timer)

    @Slot(object)
    def retarget(self, target: tuple) -> None:
        self._target = target
        self.recorder = None  # rebuilt on the next tick, on this thread

    @Slot(int)
    def set_interval(self, ms: int) -> None:
        self.interval_ms = ms
        if self._timer is not None:
            self._timer.setInterval(ms)

    @Slot()
    def sample(self) -> None:
        if self.recorder is None:
            from engine.telemetry.recorder import Recorder

            url, key, pid = self._target
            self.recorder = Recorder(url, key, pid)
        self.sampled.emit(self.recorder.sample())


class TelemetryModel(QObject):
    row_added = Signal(dict)
    alert = Signal(str, float)   # message, time it started
    _retarget = Signal(object)
    _interval = Signal(int)

    def __init__(self, interval_s: float = 1.0, capacity: int = 7200, parent: Optional[QObject] = None):
        """``capacity``: samples kept per series; 7,200 is an hour at the fastest interval, 0.5 s."""
        super().__init__(parent)
        self.capacity = capacity
        self.interval_s = interval_s
        self._buffer: Optional[SeriesBuffer] = None
        self._alerts: Optional[AlertWatch] = None
        self._vram_threshold = 0.9  # read through ``vram_threshold``: the alerts are built late (numpy)
        self.last_row: dict = {}
        self.gpu_count = 0
        self.gpu_reason: Optional[str] = None
        self.gpu_driver: Optional[str] = None  # NVIDIA driver and the CUDA version it supports
        self.gpu_cuda: Optional[str] = None
        self._thread = QThread()
        self._sampler = _Sampler(int(interval_s * 1000))
        self._sampler.moveToThread(self._thread)
        self._thread.started.connect(self._sampler.start)
        self._sampler.sampled.connect(self._on_row)
        self._retarget.connect(self._sampler.retarget)
        self._interval.connect(self._sampler.set_interval)

    @property
    def buffer(self) -> SeriesBuffer:
        if self._buffer is None:
            from engine.telemetry.recorder import SeriesBuffer

            self._buffer = SeriesBuffer(self.capacity)
        return self._buffer

    @property
    def alerts(self) -> AlertWatch:
        if self._alerts is None:
            from engine.telemetry.recorder import AlertWatch

            self._alerts = AlertWatch(vram_threshold=self._vram_threshold)
        return self._alerts

    @property
    def vram_threshold(self) -> float:
        """The share of a GPU's memory in use that raises an alert (0.9: 90 %)."""
        return self._vram_threshold

    @vram_threshold.setter
    def vram_threshold(self, share: float) -> None:
        self._vram_threshold = share
        if self._alerts is not None:
            self._alerts.vram_threshold = share

    def start(self) -> None:
        self._thread.start()
        # A script that exits without closing the window must still stop the thread first
        # (Qt aborts the process when a running QThread is destroyed).
        atexit.register(self.stop)

    def stop(self) -> None:
        if self._thread.isRunning():
            QMetaObject.invokeMethod(self._sampler, "halt", Qt.ConnectionType.BlockingQueuedConnection)
            self._thread.quit()
            self._thread.wait(3000)

    def attach(self, url: Optional[str], api_key: Optional[str], worker_pid: Optional[int]) -> None:
        self._retarget.emit((url, api_key, worker_pid))

    def set_interval(self, seconds: float) -> None:
        self.interval_s = max(0.5, min(5.0, seconds))
        self._interval.emit(int(self.interval_s * 1000))

    def restore_settings(self, store: QSettings) -> None:
        """The interval and VRAM alert of the last session; a garbled value keeps the default."""
        interval = store.value(INTERVAL_KEY)
        if isinstance(interval, str) and interval in SAMPLE_EVERY:
            self.set_interval(SAMPLE_EVERY[interval])
        vram_alert = str(store.value(VRAM_ALERT_KEY, ""))
        if vram_alert.isdigit():
            low, high = VRAM_ALERT_PCT
            self.vram_threshold = min(high, max(low, int(vram_alert))) / 100

    def save_settings(self, store: QSettings) -> None:
        store.setValue(INTERVAL_KEY, next((text for text, s in SAMPLE_EVERY.items() if s == self.interval_s), "1 s"))
        store.setValue(VRAM_ALERT_KEY, round(self.vram_threshold * 100))

    @Slot(dict)
    def _on_row(self, row: dict) -> None:
        self.buffer.append(row)
        self.last_row = row
        recorder = self._sampler.recorder
        if recorder is not None:
            self.gpu_count = len([k for k in row if k.endswith("_gpu_util_pct")]) if recorder.gpu.available else 0
            self.gpu_reason = recorder.gpu.reason
            self.gpu_driver, self.gpu_cuda = recorder.gpu.driver, recorder.gpu.cuda
        for alert in self.alerts.update(row, self.buffer):
            self.alert.emit(alert.message, alert.since)
        self.row_added.emit(row)
