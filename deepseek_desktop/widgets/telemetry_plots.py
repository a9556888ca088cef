"""TelemetryPlots: the Monitor's grid of pyqtgraph plots (one per ``PLOTS`` entry) and the hover
read-out above it. It draws what a reader hands it and never queries the samplers itself."""

from __future__ import annotations

import html
import math
import re
import time
from typing import Callable, Optional

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import QEvent
from PySide6.QtWidgets import QGridLayout, QVBoxLayout, QWidget

from deepseek_desktop.widgets.labels import ElidedLabel
from deepseek_desktop.widgets.telemetry_plot_specs import COLORS, GIB, GPU_PLOTS, PLOTS, PlotSpec

NOT_AVAILABLE_MARK = " — N/A"
# plot background, axis and title text per app theme; the line colours read on both
PLOT_THEMES = {"dark": ("#000000", "#a0a0a0"), "light": ("#ffffff", "#505050")}
# A series template ({g}: the GPU shown) -> its sample times and values over the window shown.
SeriesReader = Callable[[str], tuple[np.ndarray, np.ndarray]]


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


def legend_html(title: str, lines: list[tuple[str, str]]) -> str:
    """Title and legend in one label above the plot: a legend inside the plot area is repainted
    with every curve update."""
    keys = "&nbsp;&nbsp;".join(f'<span style="color:{color}">&#9632; {html.escape(legend)}</span>'
                               for color, legend in lines)
    return f"{html.escape(title)}&nbsp;&nbsp;&nbsp;{keys}"


class TelemetryPlots(QWidget):
    """``read`` gives a series over the window shown; ``device`` arguments say where the loaded
    model's memory is drawn ("cuda", "cpu" or None: its weights/KV lines are hidden)."""

    def __init__(self, read: SeriesReader, window_s: int, theme: str = "dark", parent: Optional[QWidget] = None):
        super().__init__(parent)
        self.read = read
        self.theme = theme
        self.plots: dict[str, pg.PlotWidget] = {}
        self.curves: dict[str, list] = {}
        self.newest = 0.0  # the time x = 0 stands for on every plot
        self._titles: dict[str, str] = {}
        self._tops: dict[str, float] = {}
        self._hovered: Optional[tuple] = None  # plot, title, scene position: the read-out follows new samples
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        # The hover read-out sits above the plots, beside where the eye is; it is cleared when the
        # pointer leaves a plot or the window changes, and follows new samples while it stays.
        self.readout = ElidedLabel()
        self.readout.setObjectName("hint")
        layout.addWidget(self.readout)
        self.grid = QGridLayout()
        for title, spec in PLOTS.items():
            self._add_plot(title, spec)
        layout.addLayout(self.grid, 1)
        self.arrange(detail=False, has_gpu=True)
        self.set_window(window_s)
        self.set_theme(theme)

    def _add_plot(self, title: str, spec: PlotSpec) -> None:
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

    def arrange(self, detail: bool, has_gpu: bool) -> None:
        """The plots shown, two a row with no gaps (no GPU: no GPU plots; ``detail``, "Batching
        and cache": two more); time labels under the lowest plot of each column."""
        shown = [title for title, spec in PLOTS.items()
                 if (detail or not spec.detail) and (has_gpu or title not in GPU_PLOTS)]
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
            self.clear_readout()
        return super().eventFilter(watched, event)

    def clear_readout(self) -> None:
        self._hovered = None
        self.readout.clear()

    def say(self, message: str) -> None:
        """A message in the read-out line (an export's outcome), in place of the hover figures."""
        self._hovered = None
        self.readout.setText(message)

    def set_theme(self, theme: str, device: Optional[str] = None) -> None:
        self.theme = theme if theme in PLOT_THEMES else "dark"
        background, text = PLOT_THEMES[self.theme]
        for title, plot in self.plots.items():
            plot.setBackground(background)
            for side in ("left", "bottom"):
                plot.getAxis(side).setPen(text)
                plot.getAxis(side).setTextPen(text)
            plot.getPlotItem().titleLabel.opts["color"] = text
            shown = self._titles.pop(title, None)  # set again, in the new colour
            self._set_title(title, shown is not None and not shown.endswith(NOT_AVAILABLE_MARK), device)

    def set_window(self, window_s: int) -> None:
        # One timeline, set on each plot: pyqtgraph's X-link aligns plots by their pixel position,
        # which gives a hidden plot (no geometry yet) a range of its own.
        for plot in self.plots.values():
            plot.setXRange(-window_s, 0, padding=0)

    def draw(self, device: Optional[str]) -> None:
        """Every shown plot from the reader's current data, x = 0 at the newest sample."""
        times = self.read("ram_used_bytes")[0]
        self.newest = float(times[-1]) if len(times) else 0.0
        for title, spec in PLOTS.items():
            if self.plots[title].isHidden():
                continue  # drawn when shown (the panel redraws after arrange)
            readable, peak = False, 0.0
            for curve, line in zip(self.curves[title], spec.lines):
                times, values = self.read(line.series)
                has_values = bool(len(values) and not np.isnan(values).all()) and line.on in (None, device)
                if has_values:
                    scaled = values * line.scale
                    curve.setData(times - self.newest, scaled, connect="finite")
                    peak = max(peak, float(np.nanmax(scaled)))
                elif curve.xData is None or len(curve.xData):  # N/A: cleared once, not redrawn each second
                    curve.setData([], [])
                readable = readable or has_values
            self._set_top(title, spec, peak)
            self._set_title(title, readable, device)
        if self._hovered is not None:
            self._hover(*self._hovered)

    def _set_top(self, title: str, spec: PlotSpec, peak: float) -> None:
        if isinstance(spec.top, str):
            totals = self.read(spec.top)[1]
            known = totals[~np.isnan(totals)]
            top = float(known[-1]) / GIB if len(known) else round_top(peak)
        else:
            top = spec.top or round_top(peak)
        if self._tops.get(title) != top:  # a new range repaints the axis: only when it changes
            self._tops[title] = top
            self.plots[title].setYRange(0, top, padding=0.03)

    def _set_title(self, title: str, readable: bool, device: Optional[str] = None) -> None:
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
            times, values = self.read(line.series)
            if len(times):
                value = values[int(np.abs(times - when).argmin())] * line.scale
                parts.append(f"{line.legend}: {'N/A' if np.isnan(value) else f'{value:.3g}'}")
        self.readout.setText(f"{title} — " + ", ".join(parts))
