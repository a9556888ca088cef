"""MonitorPanel: live plots of GPU, host and engine telemetry, drawn from the model's buffers."""

from __future__ import annotations

import csv
import re
import time
from pathlib import Path
from typing import Optional

import numpy as np
import pyqtgraph as pg
from pyqtgraph.exporters import ImageExporter
from PySide6.QtWidgets import (
    QCheckBox, QComboBox, QFileDialog, QGridLayout, QHBoxLayout, QLabel, QPushButton, QSizePolicy, QVBoxLayout,
    QWidget,
)

from deepseek_desktop.telemetry import TelemetryModel

WINDOWS = {"1 min": 60, "5 min": 300, "15 min": 900, "60 min": 3600}
GIB = 2**30

# plot title -> [(series, legend, scale)]; {g} is the selected GPU's index
PLOTS = {
    "GPU utilization (%)": [("gpu{g}_gpu_util_pct", "GPU", 1), ("gpu{g}_mem_util_pct", "memory bus", 1)],
    "VRAM (GiB)": [("gpu{g}_mem_used_bytes", "used", 1 / GIB), ("gpu{g}_mem_total_bytes", "total", 1 / GIB),
                   ("gpu{g}_engine_mem_bytes", "engine", 1 / GIB)],
    "Temperature (°C) and power (W)": [("gpu{g}_temperature_c", "°C", 1), ("gpu{g}_power_w", "W", 1)],
    "Tokens/s": [("engine_generation_tokens_per_s", "generated", 1), ("engine_prompt_tokens_per_s", "prompt", 1)],
    "Requests": [("engine_requests_running", "running", 1), ("engine_requests_waiting", "waiting", 1)],
    "Time to first token (ms)": [("engine_ttft_p50_s", "p50", 1000), ("engine_ttft_p99_s", "p99", 1000)],
    "Batch size (mean per step)": [("engine_batch_size_mean", "requests", 1)],
    # prefix hits: ours; KV in use: vLLM's kv_cache_usage_perc (ours has no fixed KV pool)
    "Cache (%)": [("engine_prefix_cache_hit_rate", "prefix hits", 100), ("engine_kv_cache_usage", "KV in use", 100)],
    "RAM (GiB)": [("ram_used_bytes", "host used", 1 / GIB), ("worker_rss_bytes", "engine", 1 / GIB)],
    "CPU (%)": [("cpu_pct", "host", 1), ("worker_cpu_pct", "engine", 1)],
}
COLORS = ["#4fc3f7", "#ffb74d", "#81c784", "#e57373"]
# Series with a value only for intervals that had requests: a lone sample between gaps is a
# dot, not nothing (a line needs two neighbours).
SPARSE = {"Time to first token (ms)", "Batch size (mean per step)", "Cache (%)"}
# Shown on demand ("Batching and cache"): two more live plots cost ~0.6% of a core at idle here.
DETAIL = ("Batch size (mean per step)", "Cache (%)")


class MonitorPanel(QWidget):
    def __init__(self, model: TelemetryModel, parent: Optional[QWidget] = None):
        super().__init__(parent)
        self.model = model
        self.paused = False
        self.gpu_index = 0
        self.plots: dict[str, pg.PlotWidget] = {}
        self.curves: dict[str, list] = {}
        self._titles: dict[str, str] = {}
        self._build()
        model.row_added.connect(self._on_row)

    def _build(self) -> None:
        layout = QVBoxLayout(self)
        bar = QHBoxLayout()
        self.window_box = QComboBox()
        self.window_box.addItems(list(WINDOWS))
        self.window_box.setCurrentText("5 min")
        self.gpu_box = QComboBox()
        self.pause_box = QCheckBox("Pause")
        self.detail_box = QCheckBox("Batching and cache")
        self.detail_box.toggled.connect(self._show_detail)
        self.pause_box.toggled.connect(self._set_paused)
        self.csv_button = QPushButton("Export CSV…")
        self.csv_button.clicked.connect(lambda: self._ask_path("CSV", "telemetry.csv", self.export_csv))
        self.png_button = QPushButton("Export PNGs…")
        self.png_button.clicked.connect(self._ask_png_folder)
        self.gpu_label = QLabel("")
        # a long reason must not widen the window: it is cut, with the whole text in the tooltip
        self.gpu_label.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
        self.readout = QLabel("")
        for w in (QLabel("Window"), self.window_box, QLabel("GPU"), self.gpu_box, self.pause_box, self.detail_box,
                  self.csv_button,
                  self.png_button):
            bar.addWidget(w)
        bar.addWidget(self.gpu_label, 1)
        layout.addLayout(bar)
        grid = QGridLayout()
        for i, (title, series) in enumerate(PLOTS.items()):
            plot = pg.PlotWidget(title=title, axisItems={"bottom": pg.DateAxisItem()})
            plot.addLegend(offset=(5, 5))
            dots = lambda j: {"symbol": "o", "symbolSize": 5, "symbolPen": None, "symbolBrush": COLORS[j]} \
                if title in SPARSE else {}
            self.curves[title] = [plot.plot([], [], name=legend, pen=pg.mkPen(COLORS[j], width=2), **dots(j))
                                  for j, (_, legend, _) in enumerate(series)]
            plot.scene().sigMouseMoved.connect(lambda pos, p=plot, t=title: self._hover(p, t, pos))
            self.plots[title] = plot
            grid.addWidget(plot, i // 2, i % 2)
        # One shared timeline: plots move together, and only the bottom row draws time labels
        # (axis text is most of the cost of a live redraw).
        # Linked to the RAM plot: the host always reports it, while an N/A plot has no data to
        # range the shared timeline on.
        plots = list(self.plots.values())
        timeline = self.plots["RAM (GiB)"]
        for i, plot in enumerate(plots):
            if plot is not timeline:
                plot.setXLink(timeline)
            if i < len(plots) - 2:
                plot.hideAxis("bottom")
        for title in DETAIL:
            self.plots[title].hide()
        layout.addLayout(grid, 1)
        layout.addWidget(self.readout)
        self.window_box.currentTextChanged.connect(lambda _: self.redraw())
        self.gpu_box.currentIndexChanged.connect(self._select_gpu)

    def _show_detail(self, shown: bool) -> None:
        for title in DETAIL:
            self.plots[title].setVisible(shown)
        self.redraw()

    def _set_paused(self, paused: bool) -> None:
        self.paused = paused
        if not paused:
            self.redraw()

    def _select_gpu(self, index: int) -> None:
        self.gpu_index = max(0, index)
        self.redraw()

    def showEvent(self, event) -> None:
        super().showEvent(event)
        self.redraw()  # catch up on what arrived while hidden

    def _on_row(self, row: dict) -> None:
        if self.gpu_box.count() != self.model.gpu_count:
            self.gpu_box.blockSignals(True)
            self.gpu_box.clear()
            self.gpu_box.addItems([f"{i}: {row.get(f'gpu{i}_name') or 'GPU'}" for i in range(self.model.gpu_count)])
            self.gpu_box.blockSignals(False)
        gpu_text = "" if self.model.gpu_count else \
            f"No NVIDIA GPU telemetry ({self.model.gpu_reason or 'no GPU'}): GPU plots show N/A"
        if self.gpu_label.text() != gpu_text:
            self.gpu_label.setText(gpu_text)
            self.gpu_label.setToolTip(gpu_text)
        if not self.paused and self.isVisible():  # hidden plots cost nothing
            self.redraw()

    def window_s(self) -> int:
        return WINDOWS[self.window_box.currentText()]

    def series_name(self, template: str) -> str:
        return template.format(g=self.gpu_index)

    def visible(self) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """Every plotted series over the chosen window (NaN where a value was N/A)."""
        out = {}
        for series in PLOTS.values():
            for template, _, _ in series:
                name = self.series_name(template)
                out[name] = self.model.buffer.get(name, self.window_s())
        return out

    def redraw(self) -> None:
        data = self.visible()
        for title, series in PLOTS.items():
            if self.plots[title].isHidden():
                continue  # drawn when shown (_show_detail redraws)
            readable = False
            for curve, (template, _, scale) in zip(self.curves[title], series):
                times, values = data[self.series_name(template)]
                has_values = bool(len(values) and not np.isnan(values).all())
                if has_values:
                    curve.setData(times, values * scale, connect="finite")
                elif curve.xData is None or len(curve.xData):  # N/A: cleared once, not redrawn each second
                    curve.setData([], [])
                readable = readable or has_values
            # A source that reports nothing reads N/A in the title, never a flat line at 0.
            shown = title if readable else f"{title} — N/A"
            if self._titles.get(title) != shown:  # a new title re-lays out and repaints the plot
                self._titles[title] = shown
                self.plots[title].setTitle(shown)

    def _hover(self, plot: pg.PlotWidget, title: str, pos) -> None:
        if not plot.sceneBoundingRect().contains(pos):
            return
        x = plot.getPlotItem().vb.mapSceneToView(pos).x()
        parts = [time.strftime("%H:%M:%S", time.localtime(x))]
        for template, legend, scale in PLOTS[title]:
            times, values = self.model.buffer.get(self.series_name(template), self.window_s())
            if len(times):
                value = values[int(np.abs(times - x).argmin())] * scale
                parts.append(f"{legend}: {'N/A' if np.isnan(value) else f'{value:.3g}'}")
        self.readout.setText(f"{title} — " + ", ".join(parts))

    def export_csv(self, path: Path) -> None:
        data = self.visible()
        names = list(data)
        times = data[names[0]][0] if names else np.array([])
        with open(path, "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["time", *names])
            for i, t in enumerate(times):
                writer.writerow([f"{t:.3f}", *("N/A" if np.isnan(data[n][1][i]) else f"{data[n][1][i]:.6g}"
                                               for n in names)])

    def export_pngs(self, folder: Path) -> list[Path]:
        written = []
        for title, plot in self.plots.items():
            slug = re.sub(r"[^a-z0-9]+", "-", title.split(" (")[0].lower()).strip("-")
            path = Path(folder) / f"{slug}.png"
            ImageExporter(plot.getPlotItem()).export(str(path))
            written.append(path)
        return written

    def _ask_path(self, kind: str, default: str, action) -> None:
        path, _ = QFileDialog.getSaveFileName(self, f"Export {kind}", default)
        if path:
            action(Path(path))

    def _ask_png_folder(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Export plots as PNG")
        if folder:
            self.export_pngs(Path(folder))
