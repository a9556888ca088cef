"""MonitorPanel: live plots of GPU, host and engine telemetry, drawn from the model's buffers.
The panel holds the toolbar and the GPU lines and wires them to the model; the plot grid
(``widgets.telemetry_plots``) draws, and ``widgets.telemetry_export`` writes the exports."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Optional

import numpy as np
from PySide6.QtCore import QSettings
from PySide6.QtWidgets import (
    QCheckBox, QComboBox, QFileDialog, QHBoxLayout, QLabel, QPushButton, QSizePolicy, QSpinBox, QVBoxLayout, QWidget,
)

from deepseek_desktop.notifier import Notifier
from deepseek_desktop.telemetry import SAMPLE_EVERY, TelemetryModel
from deepseek_desktop.widgets.telemetry_export import write_csv, write_pngs
from deepseek_desktop.widgets.telemetry_plot_specs import CSV_EXTRA, PLOTS
from deepseek_desktop.widgets.telemetry_plots import TelemetryPlots

WINDOWS = {"1 min": 60, "5 min": 300, "15 min": 900, "60 min": 3600}


def gpu_details(row: dict, g: int, driver: Optional[str], cuda: Optional[str]) -> str:
    """One line on GPU ``g``: what it is, its clocks, bus and power limit, why it is throttled
    and which processes hold its memory. A field the device does not report reads N/A."""
    def field(name: str, unit: str = "", scale: float = 1.0, digits: int = 0) -> str:
        value = row.get(f"gpu{g}_{name}")
        if value is None or (isinstance(value, float) and math.isnan(value)):
            return "N/A"
        return f"{value * scale:.{digits}f}{unit}" if isinstance(value, (int, float)) else str(value)

    return " · ".join([
        f"{field('name')}", f"driver {driver or 'N/A'}, CUDA {cuda or 'N/A'}",
        f"SM {field('sm_clock_mhz', ' MHz')}, memory {field('mem_clock_mhz', ' MHz')}",
        f"PCIe TX {field('pcie_tx_kbps', ' MB/s', 1 / 1000, 1)}, RX {field('pcie_rx_kbps', ' MB/s', 1 / 1000, 1)}",
        f"power limit {field('power_limit_w', ' W')}", f"throttle: {field('throttle')}",
        f"processes: {field('processes')}",
    ])


class MonitorPanel(QWidget):
    def __init__(self, model: TelemetryModel, parent: Optional[QWidget] = None, theme: str = "dark",
                 notifier: Optional[Notifier] = None):
        super().__init__(parent)
        self.model = model
        self.notifier = notifier
        self.paused = False
        self.gpu_index = 0
        self._has_gpu = True  # until a sample says otherwise
        self._build(theme)
        model.row_added.connect(self._on_row)

    def _build(self, theme: str) -> None:
        layout = QVBoxLayout(self)
        layout.addLayout(self._build_toolbar())
        # Under the toolbar: why there is no GPU telemetry, or the selected GPU's fixed facts and
        # slow-moving state (not worth a plot each). A long reason must not widen the window: it
        # is cut, with the whole text in the tooltip.
        self.gpu_label = QLabel("")
        self.gpu_label.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
        self.gpu_label.hide()
        self.gpu_details = QLabel("")
        self.gpu_details.setWordWrap(True)
        self.gpu_details.hide()
        layout.addWidget(self.gpu_label)
        layout.addWidget(self.gpu_details)
        self.charts = TelemetryPlots(self.series, self.window_s(), theme)
        # The grid's own dicts and widgets, under the names tests and benchmarks read.
        self.plots, self.curves, self.grid, self.readout = (self.charts.plots, self.charts.curves,
                                                            self.charts.grid, self.charts.readout)
        layout.addWidget(self.charts, 1)
        self.window_box.currentTextChanged.connect(lambda _: (self.charts.set_window(self.window_s()),
                                                              self.charts.clear_readout(), self.redraw()))
        self.gpu_box.currentIndexChanged.connect(self._select_gpu)

    def _build_toolbar(self) -> QHBoxLayout:
        bar = QHBoxLayout()
        self.window_box = QComboBox()
        self.window_box.addItems(list(WINDOWS))
        self.window_box.setCurrentText("5 min")
        self.interval_box = QComboBox()
        self.interval_box.addItems(list(SAMPLE_EVERY))
        self.interval_box.setCurrentText("1 s")
        self.interval_box.setToolTip("How often GPU, host and engine are sampled")
        self.interval_box.currentTextChanged.connect(lambda text: self.model.set_interval(SAMPLE_EVERY[text]))
        self.vram_alert_box = QSpinBox(minimum=50, maximum=100, suffix=" %", maximumWidth=72)
        self.vram_alert_box.setValue(round(self.model.vram_threshold * 100))
        self.vram_alert_box.setToolTip("Alert (status bar and Logs) when a GPU's memory use reaches this")
        self.vram_alert_box.valueChanged.connect(lambda pct: setattr(self.model, "vram_threshold", pct / 100))
        self.gpu_box = QComboBox()
        self.pause_box = QCheckBox("Pause")
        self.detail_box = QCheckBox("Batching and cache")
        self.detail_box.toggled.connect(self._show_detail)
        self.pause_box.toggled.connect(self._set_paused)
        self.csv_button = QPushButton("Export CSV…")
        self.csv_button.clicked.connect(lambda: self._ask_path("CSV", "telemetry.csv",
                                                               lambda path: self.export("CSV", path)))
        self.png_button = QPushButton("Export PNGs…")
        self.png_button.clicked.connect(self._ask_png_folder)
        for w in (QLabel("Window"), self.window_box, QLabel("every"), self.interval_box, QLabel("GPU"),
                  self.gpu_box, QLabel("VRAM alert at"), self.vram_alert_box, self.pause_box, self.detail_box,
                  self.csv_button, self.png_button):
            bar.addWidget(w)
        bar.addStretch(1)
        return bar

    @property
    def theme(self) -> str:
        return self.charts.theme

    def set_theme(self, theme: str) -> None:
        self.charts.set_theme(theme, self.model_device_kind())

    def _arrange(self) -> None:
        self.charts.arrange(self.detail_box.isChecked(), self._has_gpu)

    def _show_detail(self, shown: bool) -> None:
        self._arrange()
        self.redraw()

    def _set_paused(self, paused: bool) -> None:
        self.paused = paused
        if not paused:
            self.redraw()

    def _select_gpu(self, index: int) -> None:
        self.gpu_index = max(0, index)
        self.redraw()
        self._show_gpu_details(self.model.last_row)

    def showEvent(self, event) -> None:
        super().showEvent(event)
        self.redraw()  # catch up on what arrived while hidden

    def _on_row(self, row: dict) -> None:
        if self.gpu_box.count() != self.model.gpu_count:
            self.gpu_box.blockSignals(True)
            self.gpu_box.clear()
            self.gpu_box.addItems([f"{i}: {row.get(f'gpu{i}_name') or 'GPU'}" for i in range(self.model.gpu_count)])
            self.gpu_box.blockSignals(False)
        has_gpu = self.model.gpu_count > 0
        if has_gpu != self._has_gpu:  # no GPU: its three plots fold into the line below the toolbar
            self._has_gpu = has_gpu
            self.gpu_box.setEnabled(has_gpu)
            self.vram_alert_box.setEnabled(has_gpu)
            self._arrange()
        gpu_text = "" if has_gpu else \
            (f"No NVIDIA GPU telemetry ({self.model.gpu_reason or 'no GPU'}): GPU utilization, VRAM, "
             "temperature and power N/A; RAM, CPU and the engine's figures below")
        if self.gpu_label.text() != gpu_text:
            self.gpu_label.setText(gpu_text)
            self.gpu_label.setToolTip(gpu_text)
            self.gpu_label.setVisible(bool(gpu_text))
        # Hidden plots cost nothing; wide windows are redrawn about once per pixel of time.
        if not self.paused and self.isVisible() and row["time"] - self.charts.newest >= self.redraw_every_s() * 0.99:
            self.redraw()
            self._show_gpu_details(row)

    def redraw_every_s(self) -> float:
        """Seconds between redraws: each sample up to 10 minutes shown; then one redraw per
        1/600 of the window (60 min: every 6 s), since a plot ~600 px wide would not move sooner."""
        return self.window_s() / 600 if self.window_s() > 600 else 0.0

    def _show_gpu_details(self, row: dict) -> None:
        text = gpu_details(row, self.gpu_index, self.model.gpu_driver, self.model.gpu_cuda) \
            if self.model.gpu_count else ""
        if self.gpu_details.text() != text:  # a new text re-lays out the panel: only on a change
            self.gpu_details.setText(text)
            self.gpu_details.setVisible(bool(text))

    def window_s(self) -> int:
        return WINDOWS[self.window_box.currentText()]

    def series_name(self, template: str) -> str:
        return template.format(g=self.gpu_index)

    def series(self, template: str) -> tuple[np.ndarray, np.ndarray]:
        """The series ``template`` names, for the GPU shown, over the chosen window."""
        return self.model.buffer.get(self.series_name(template), self.window_s())

    def model_device_kind(self) -> Optional[str]:
        """"cuda" or "cpu" while this engine has a model loaded (the weights/KV split is drawn on
        that memory's plot); None otherwise, or when the model is on another GPU than the one shown."""
        row = self.model.last_row
        device = row.get("engine_model_device")
        if not device:
            return None
        if not device.startswith("cuda"):
            return "cpu" if device == "cpu" else None
        # The GPU where NVML sees the engine's process holding memory: CUDA's numbering differs
        # from NVML's under CUDA_VISIBLE_DEVICES. Only when NVML cannot list processes: the index.
        holding = row.get(f"gpu{self.gpu_index}_engine_mem_bytes")
        if holding is not None:
            return "cuda" if holding > 0 else None
        return "cuda" if int(device.partition(":")[2] or 0) == self.gpu_index else None

    def visible(self) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """Every plotted series, and the totals the plots scale by, over the chosen window, in
        sample time (NaN where a value was N/A)."""
        names = [line.series for spec in PLOTS.values() for line in spec.lines] + list(CSV_EXTRA)
        return {self.series_name(n): self.series(n) for n in names}

    def redraw(self) -> None:
        self.charts.draw(self.model_device_kind())

    def title_text(self, title: str) -> str:
        """The plot's title as shown, without markup (tests, screen readers)."""
        return self.charts.title_text(title)

    def export_csv(self, path: Path) -> None:
        write_csv(path, self.visible())

    def export_pngs(self, folder: Path) -> list[Path]:
        return write_pngs(folder, self.plots)

    def restore_settings(self, store: QSettings) -> None:
        """The window of the last session (a garbled value keeps the default); the interval and
        the VRAM alert are the model's, which restored them at launch."""
        value = store.value("monitor/window")
        if isinstance(value, str) and self.window_box.findText(value) >= 0:
            self.window_box.setCurrentText(value)
        interval = next((text for text, s in SAMPLE_EVERY.items() if s == self.model.interval_s), None)
        if interval is not None:
            self.interval_box.setCurrentText(interval)

    def save_settings(self, store: QSettings) -> None:
        store.setValue("monitor/window", self.window_box.currentText())

    def export(self, kind: str, path: Path) -> bool:
        """``kind`` "CSV" (a file) or "PNG" (a folder); a path that cannot be written is said, not raised."""
        try:
            if kind == "CSV":
                self.export_csv(path)
                count = 1
            else:
                count = len(self.export_pngs(path))
        except OSError as exc:
            self._tell("error", f"exporting the Monitor's {kind} to {path} failed: {exc.strerror or exc}")
            return False
        self._tell("info", f"exported {count} file(s) to {path}")
        return True

    def _tell(self, level: str, message: str) -> None:
        """Said on screen, in the read-out line (an export's outcome), and in the Logs."""
        if self.notifier is not None:
            self.notifier.post(level, message)
        self.charts.say(message)

    def _ask_path(self, kind: str, default: str, action) -> None:
        path, _ = QFileDialog.getSaveFileName(self, f"Export {kind}", default, "CSV files (*.csv);;All files (*)")
        if path:
            action(Path(path))

    def _ask_png_folder(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Export plots as PNG")
        if folder:
            self.export("PNG", Path(folder))
