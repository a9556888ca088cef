"""MonitorPanel: live plots of GPU, host and engine telemetry, drawn from the model's buffers."""

from __future__ import annotations

import csv
import html
import math
import os
import re
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Optional, Union

import numpy as np
import pyqtgraph as pg
from pyqtgraph.exporters import ImageExporter
from PySide6.QtCore import QEvent, QSettings
from PySide6.QtWidgets import (
    QCheckBox, QComboBox, QFileDialog, QGridLayout, QHBoxLayout, QLabel, QPushButton, QSizePolicy, QSpinBox,
    QVBoxLayout, QWidget,
)

from deepseek_desktop.notifier import Notifier
from deepseek_desktop.telemetry import SAMPLE_EVERY, TelemetryModel
from deepseek_desktop.widgets.labels import ElidedLabel

WINDOWS = {"1 min": 60, "5 min": 300, "15 min": 900, "60 min": 3600}
GIB = 2**30
CORES = os.cpu_count() or 1
COLORS = ["#4fc3f7", "#ffb74d", "#81c784", "#e57373", "#ba68c8"]
NOT_AVAILABLE_MARK = " — N/A"
# plot background, axis and title text per app theme; the line colours read on both
PLOT_THEMES = {"dark": ("#000000", "#a0a0a0"), "light": ("#ffffff", "#505050")}


@dataclass(frozen=True)
class Line:
    series: str               # buffer series; {g} is the selected GPU's index
    legend: str
    scale: float = 1.0
    on: Optional[str] = None  # "cuda"/"cpu": drawn only while the model sits on that kind of device


@dataclass(frozen=True)
class PlotSpec:
    lines: tuple[Line, ...]
    top: Union[float, str, None] = None  # fixed top, a series holding it (VRAM total), or None: a round ceiling
    sparse: bool = False  # a value only for intervals with requests: lone samples drawn as dots
    detail: bool = False  # shown on demand ("Batching and cache")


def model_share(on: str) -> tuple[Line, ...]:
    """The loaded model's weights/KV split, on the plot of the memory it lives in."""
    return (Line("engine_weights_bytes", "weights", 1 / GIB, on), Line("engine_kv_cache_bytes", "KV", 1 / GIB, on),
            Line("engine_prefix_cache_ram_bytes", "prefix KV", 1 / GIB, on))


PLOTS = {
    "GPU utilization (%)": PlotSpec((Line("gpu{g}_gpu_util_pct", "GPU"), Line("gpu{g}_mem_util_pct", "memory bus")),
                                    top=100),
    # The top is the device's total: "used vs total" at a glance, and an axis that never moves.
    "VRAM (GiB)": PlotSpec((Line("gpu{g}_mem_used_bytes", "used", 1 / GIB),
                            Line("gpu{g}_engine_mem_bytes", "engine", 1 / GIB), *model_share("cuda")),
                           top="gpu{g}_mem_total_bytes"),
    "Temperature (°C) and power (W)": PlotSpec((Line("gpu{g}_temperature_c", "°C"), Line("gpu{g}_power_w", "W"))),
    "Tokens/s": PlotSpec((Line("engine_generation_tokens_per_s", "generated"),
                          Line("engine_prompt_tokens_per_s", "prompt"))),
    "Requests": PlotSpec((Line("engine_requests_running", "running"), Line("engine_requests_waiting", "waiting"))),
    "Time to first token (ms)": PlotSpec((Line("engine_ttft_p50_s", "p50", 1000), Line("engine_ttft_p99_s", "p99", 1000)),
                                         sparse=True),
    "Batch size (mean per step)": PlotSpec((Line("engine_batch_size_mean", "requests"),), sparse=True, detail=True),
    # prefix hits: ours; KV in use: vLLM's kv_cache_usage_perc (ours has no fixed KV pool)
    "Cache (%)": PlotSpec((Line("engine_prefix_cache_hit_rate", "prefix hits", 100),
                           Line("engine_kv_cache_usage", "KV in use", 100)), top=100, sparse=True, detail=True),
    "RAM (GiB)": PlotSpec((Line("ram_used_bytes", "host", 1 / GIB), Line("worker_rss_bytes", "engine", 1 / GIB),
                           *model_share("cpu"))),
    # psutil gives the host as % of all cores and a process as % of one: the engine is scaled to
    # the host's measure so both lines share one axis.
    "CPU (% of all cores)": PlotSpec((Line("cpu_pct", "host"), Line("worker_cpu_pct", "engine", 1 / CORES)), top=100),
}
# Exported with the plotted series: the totals the plots use as their scale.
CSV_EXTRA = ("gpu{g}_mem_total_bytes", "ram_total_bytes")
# Plots of NVML's figures: without a GPU they are not shown (the line under the toolbar says why).
GPU_PLOTS = tuple(title for title, spec in PLOTS.items() if spec.lines[0].series.startswith("gpu{g}"))


def csv_cell(name: str, value: float) -> str:
    """Bytes as integers (``1073981440``, not ``1.07398e+09``); other figures to 6 digits; N/A as such."""
    if np.isnan(value):
        return "N/A"
    return str(int(round(value))) if name.endswith("_bytes") else f"{value:.6g}"


def round_top(value: float) -> float:
    """The smallest 1, 2 or 5 x 10^k at or above ``value``: an axis that changes only when the
    data crosses such a step, not every second (a moving axis is most of a live redraw's cost)."""
    if not value > 0 or math.isinf(value):
        return 1.0
    power = 10 ** math.floor(math.log10(value))
    return next(step * power for step in (1, 2, 5, 10) if step * power >= value * (1 - 1e-9))


class AgoAxis(pg.AxisItem):
    """Time as "seconds ago" (the plots' x is the sample time minus the newest sample's): the
    range stays put while the data scrolls through it, so the axis is drawn once, not per sample."""

    STEPS = (5, 10, 15, 30, 60, 120, 300, 600, 900, 1800)

    def tickSpacing(self, minVal, maxVal, size):  # noqa: N802 (pyqtgraph's name)
        span = maxVal - minVal
        major = next((s for s in self.STEPS if span / s <= 6), self.STEPS[-1])
        return [(major, 0)]

    def tickStrings(self, values, scale, spacing):  # noqa: N802
        return [ago_label(v) for v in values]


def ago_label(seconds: float) -> str:
    seconds = round(-seconds)
    if seconds <= 0:
        return "now"
    if seconds % 60 == 0:
        return f"-{seconds // 60} min"
    if seconds < 60:
        return f"-{seconds} s"
    return f"-{seconds // 60}:{seconds % 60:02d}"


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


def legend_html(title: str, lines: list[tuple[str, str]]) -> str:
    """Title and legend in one label above the plot: a legend inside the plot area is repainted
    with every curve update."""
    keys = "&nbsp;&nbsp;".join(f'<span style="color:{color}">&#9632; {html.escape(legend)}</span>'
                               for color, legend in lines)
    return f"{html.escape(title)}&nbsp;&nbsp;&nbsp;{keys}"


class MonitorPanel(QWidget):
    def __init__(self, model: TelemetryModel, parent: Optional[QWidget] = None, theme: str = "dark",
                 notifier: Optional[Notifier] = None):
        super().__init__(parent)
        self.model = model
        self.notifier = notifier
        self.theme = theme
        self.paused = False
        self.gpu_index = 0
        self.plots: dict[str, pg.PlotWidget] = {}
        self.curves: dict[str, list] = {}
        self.newest = 0.0  # the time x = 0 stands for on every plot
        self._titles: dict[str, str] = {}
        self._tops: dict[str, float] = {}
        self._has_gpu = True  # until a sample says otherwise
        self._hovered: Optional[tuple] = None  # plot, title, scene position: the read-out follows new samples
        self._build()
        model.row_added.connect(self._on_row)

    def _build(self) -> None:
        layout = QVBoxLayout(self)
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
        self.vram_alert_box.setValue(round(self.model.alerts.vram_threshold * 100))
        self.vram_alert_box.setToolTip("Alert (status bar and Logs) when a GPU's memory use reaches this")
        self.vram_alert_box.valueChanged.connect(lambda pct: setattr(self.model.alerts, "vram_threshold", pct / 100))
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
        self.readout = ElidedLabel()
        self.readout.setObjectName("hint")
        for w in (QLabel("Window"), self.window_box, QLabel("every"), self.interval_box, QLabel("GPU"),
                  self.gpu_box, QLabel("VRAM alert at"), self.vram_alert_box, self.pause_box, self.detail_box,
                  self.csv_button, self.png_button):
            bar.addWidget(w)
        bar.addStretch(1)
        layout.addLayout(bar)
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
        # The hover read-out sits above the plots, beside where the eye is; it is cleared when the
        # pointer leaves a plot or the window changes, and follows new samples while it stays.
        layout.addWidget(self.readout)
        layout.addLayout(self._build_plots(), 1)
        self.window_box.currentTextChanged.connect(lambda _: (self._set_window(), self._clear_readout(),
                                                              self.redraw()))
        self.gpu_box.currentIndexChanged.connect(self._select_gpu)

    def _build_plots(self) -> QGridLayout:
        self.grid = QGridLayout()
        for title, spec in PLOTS.items():
            plot = pg.PlotWidget(axisItems={"bottom": AgoAxis("bottom")})
            # Ranges are set here, not by pyqtgraph's auto-range: fixed x, round y tops (see round_top).
            plot.setMouseEnabled(x=False, y=False)
            plot.setMenuEnabled(False)
            plot.hideButtons()
            plot.getPlotItem().disableAutoRange()
            plot.setDownsampling(auto=True, mode="peak")  # 60 min is 3,600 samples across a few hundred pixels
            plot.setClipToView(True)
            plot.getAxis("left").setWidth(44)  # plots stay aligned whatever the tick text
            # Dots of a later line are larger and drawn under the earlier ones: TTFT's p50 dots
            # stay visible on its p99 dots when both are alike.
            dots = lambda j: {"symbol": "o", "symbolSize": 5 + 4 * j, "symbolPen": None, "symbolBrush": COLORS[j]} \
                if spec.sparse else {}
            self.curves[title] = [plot.plot([], [], pen=pg.mkPen(COLORS[j], width=2), **dots(j))
                                  for j in range(len(spec.lines))]
            for j, curve in enumerate(self.curves[title]):
                curve.setZValue(len(spec.lines) - j)
            plot.scene().sigMouseMoved.connect(lambda pos, p=plot, t=title: self._hover(p, t, pos))
            plot.installEventFilter(self)
            self.plots[title] = plot
            self._set_title(title, readable=False)
        self._arrange()
        self._set_window()
        self.set_theme(self.theme)
        return self.grid

    def _arrange(self) -> None:
        """The plots shown, two a row with no gaps (no GPU: no GPU plots; "Batching and cache":
        two more); time labels under the lowest plot of each column."""
        shown = [title for title, spec in PLOTS.items()
                 if (self.detail_box.isChecked() or not spec.detail) and (self._has_gpu or title not in GPU_PLOTS)]
        for title, plot in self.plots.items():
            self.grid.removeWidget(plot)
            plot.setVisible(title in shown)
        for i, title in enumerate(shown):
            plot = self.plots[title]
            self.grid.addWidget(plot, i // 2, i % 2)
            plot.showAxis("bottom", i + 2 >= len(shown))
        rows = (len(shown) + 1) // 2
        for row in range(max(self.grid.rowCount(), rows)):  # rows share the height; emptied ones take none
            self.grid.setRowStretch(row, 1 if row < rows else 0)

    def eventFilter(self, watched, event) -> bool:  # noqa: N802 (Qt's name)
        if event.type() == QEvent.Type.Leave and watched in self.plots.values():
            self._clear_readout()
        return super().eventFilter(watched, event)

    def _clear_readout(self) -> None:
        self._hovered = None
        self.readout.clear()

    def set_theme(self, theme: str) -> None:
        self.theme = theme if theme in PLOT_THEMES else "dark"
        background, text = PLOT_THEMES[self.theme]
        device = self.model_device_kind()
        for title, plot in self.plots.items():
            plot.setBackground(background)
            for side in ("left", "bottom"):
                plot.getAxis(side).setPen(text)
                plot.getAxis(side).setTextPen(text)
            plot.getPlotItem().titleLabel.opts["color"] = text
            shown = self._titles.pop(title, None)  # set again, in the new colour
            self._set_title(title, shown is not None and not shown.endswith(NOT_AVAILABLE_MARK), device)

    def _set_window(self) -> None:
        # One timeline, set on each plot: pyqtgraph's X-link aligns plots by their pixel position,
        # which gives a hidden plot (no geometry yet) a range of its own.
        for plot in self.plots.values():
            plot.setXRange(-self.window_s(), 0, padding=0)

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
        if not self.paused and self.isVisible() and row["time"] - self.newest >= self.redraw_every_s() * 0.99:
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
        return {self.series_name(n): self.model.buffer.get(self.series_name(n), self.window_s()) for n in names}

    def redraw(self) -> None:
        data = self.visible()
        times = data[self.series_name("ram_used_bytes")][0]
        self.newest = float(times[-1]) if len(times) else 0.0
        device = self.model_device_kind()
        for title, spec in PLOTS.items():
            if self.plots[title].isHidden():
                continue  # drawn when shown (_show_detail redraws)
            readable, peak = False, 0.0
            for curve, line in zip(self.curves[title], spec.lines):
                times, values = data[self.series_name(line.series)]
                has_values = bool(len(values) and not np.isnan(values).all()) and line.on in (None, device)
                if has_values:
                    scaled = values * line.scale
                    curve.setData(times - self.newest, scaled, connect="finite")
                    peak = max(peak, float(np.nanmax(scaled)))
                elif curve.xData is None or len(curve.xData):  # N/A: cleared once, not redrawn each second
                    curve.setData([], [])
                readable = readable or has_values
            self._set_top(title, spec, peak, data)
            self._set_title(title, readable, device)
        if self._hovered is not None:
            self._hover(*self._hovered)

    def _set_top(self, title: str, spec: PlotSpec, peak: float, data: dict) -> None:
        if isinstance(spec.top, str):
            totals = data[self.series_name(spec.top)][1]
            known = totals[~np.isnan(totals)]
            top = float(known[-1]) / GIB if len(known) else round_top(peak)
        else:
            top = spec.top or round_top(peak)
        if self._tops.get(title) != top:  # a new range repaints the axis: only when it changes
            self._tops[title] = top
            self.plots[title].setYRange(0, top, padding=0.03)

    def _set_title(self, title: str, readable: bool, device: Optional[str] = None) -> None:
        """``device``: where the model's memory is drawn (``model_device_kind``, read once per redraw)."""
        spec = PLOTS[title]
        lines = [(COLORS[j], line.legend) for j, line in enumerate(spec.lines) if line.on in (None, device)]
        # A source that reports nothing reads N/A in the title, never a flat line at 0.
        text = legend_html(title, lines) if readable else html.escape(title) + NOT_AVAILABLE_MARK
        if self._titles.get(title) != text:  # a new title re-lays out and repaints the plot
            self._titles[title] = text
            self.plots[title].setTitle(text)

    def title_text(self, title: str) -> str:
        """The plot's title as shown, without markup (tests, screen readers)."""
        return re.sub(r"<[^>]+>", "", html.unescape(self._titles.get(title, ""))).replace("\xa0", " ")

    def _hover(self, plot: pg.PlotWidget, title: str, pos) -> None:
        if not plot.sceneBoundingRect().contains(pos):
            return
        self._hovered = (plot, title, pos)
        when = self.newest + plot.getPlotItem().vb.mapSceneToView(pos).x()
        parts = [time.strftime("%H:%M:%S", time.localtime(when))]
        for line in PLOTS[title].lines:
            times, values = self.model.buffer.get(self.series_name(line.series), self.window_s())
            if len(times):
                value = values[int(np.abs(times - when).argmin())] * line.scale
                parts.append(f"{line.legend}: {'N/A' if np.isnan(value) else f'{value:.3g}'}")
        self.readout.setText(f"{title} — " + ", ".join(parts))

    def export_csv(self, path: Path) -> None:
        data = self.visible()
        names = list(data)
        times = data[names[0]][0] if names else np.array([])
        with open(path, "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["time", "time_iso", *names])
            for i, t in enumerate(times):
                iso = datetime.fromtimestamp(float(t)).astimezone().isoformat(timespec="milliseconds")
                writer.writerow([f"{t:.3f}", iso, *(csv_cell(n, data[n][1][i]) for n in names)])

    def export_pngs(self, folder: Path) -> list[Path]:
        written = []
        for title, plot in self.plots.items():
            slug = re.sub(r"[^a-z0-9]+", "-", title.split(" (")[0].lower()).strip("-")
            path = Path(folder) / f"{slug}.png"
            if ImageExporter(plot.getPlotItem()).export(str(path)) is False:  # Qt says no more than that
                raise OSError(f"could not write {path}")
            written.append(path)
        return written

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
        self._hovered = None
        self.readout.setText(message)

    def _ask_path(self, kind: str, default: str, action) -> None:
        path, _ = QFileDialog.getSaveFileName(self, f"Export {kind}", default, "CSV files (*.csv);;All files (*)")
        if path:
            action(Path(path))

    def _ask_png_folder(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Export plots as PNG")
        if folder:
            self.export("PNG", Path(folder))
