"""SweepPlot: a sweep's points as output tokens/s against p99 latency (pyqtgraph): the Pareto front
as a line, the objective's limits as dashed lines, points over a limit greyed, the reference as
squares, the recommended point starred, another run's front as an overlay. Drawing only: the
points and their judgement come from ``engine.tuning``."""

from __future__ import annotations

from typing import Optional

import pyqtgraph as pg
from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import QLabel, QVBoxLayout, QWidget

from engine import tuning

PLOT_THEMES = {"dark": ("#000000", "#a0a0a0", "#e6e8ec"), "light": ("#ffffff", "#505050", "#1f2328")}
ACCENT, FRONT, GREY, OVERLAY, STAR, LIMIT = "#4fc3f7", "#ffb74d", "#6b7280", "#ba68c8", "#ffd54f", "#e5534b"


def plotted(record: Optional[tuning.SweepRecord], latency: str) -> list[tuning.Point]:
    """The points that have a place on the plot: measured, with that latency."""
    return [p for p in (record.points if record else []) if p.measured and p.p99(latency) is not None]


def _xy(points: list[tuning.Point], latency: str) -> tuple[list[float], list[float]]:
    return [p.p99(latency) * 1000 for p in points], [p.output_tokens_per_s for p in points]


class SweepPlot(QWidget):
    point_clicked = Signal(int)  # the point's index in its record

    def __init__(self, theme: str = "dark", parent: Optional[QWidget] = None):
        super().__init__(parent)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        self.plot = pg.PlotWidget()
        self.plot.setMenuEnabled(False)
        self.plot.showGrid(x=True, y=True, alpha=0.15)
        self.plot.setLabel("left", "output tok/s")
        self.plot.setLabel("bottom", "p99 latency (ms)")
        for name in ("left", "bottom"):
            self.plot.getAxis(name).enableAutoSIPrefix(False)
        self.overlay_front = self.plot.plot([], [], pen=pg.mkPen(OVERLAY, width=2, style=Qt.PenStyle.DashLine))
        self.overlay_scatter = pg.ScatterPlotItem(size=7, pen=None, brush=pg.mkBrush(OVERLAY + "80"))
        self.front_line = self.plot.plot([], [], pen=pg.mkPen(FRONT, width=2))
        self.scatter = pg.ScatterPlotItem(size=10, hoverable=True)
        self.scatter.sigClicked.connect(self._on_click)
        self.best_marker = pg.ScatterPlotItem(size=22, symbol="star", pen=pg.mkPen("#000000"), brush=pg.mkBrush(STAR))
        self.selected_marker = pg.ScatterPlotItem(size=18, symbol="o", pen=pg.mkPen("#ffffff", width=2), brush=None)
        for item in (self.overlay_scatter, self.scatter, self.best_marker, self.selected_marker):
            self.plot.addItem(item)
        self.best_label = pg.TextItem("", anchor=(0, 1))
        self.plot.addItem(self.best_label)
        self.limit_lines: list[pg.InfiniteLine] = []
        self.legend = QLabel("")
        self.legend.setTextFormat(Qt.TextFormat.RichText)
        self.legend.setWordWrap(True)
        layout.addWidget(self.plot, 1)
        layout.addWidget(self.legend)
        self.set_theme(theme)

    def draw(self, record: Optional[tuning.SweepRecord], overlay: Optional[tuning.SweepRecord], latency: str) -> None:
        points = plotted(record, latency)
        self.scatter.setData([{"pos": (p.p99(latency) * 1000, p.output_tokens_per_s), "data": p.index,
                               "symbol": "s" if p.reference else "o",
                               "pen": pg.mkPen("#ffffff" if p.reference else None),
                               "brush": pg.mkBrush(ACCENT if p.meets_slo else GREY)} for p in points])
        self.front_line.setData(*_xy(tuning.front(points, latency), latency))
        others = plotted(overlay, latency) if overlay is not None and overlay is not record else []
        self.overlay_scatter.setData(*_xy(others, latency))
        self.overlay_front.setData(*_xy(tuning.front(others, latency), latency))
        if points or others:
            self.plot.enableAutoRange()
        else:  # an empty plot: round axes, not pyqtgraph's -0.5..0.5
            self.plot.setRange(xRange=(0, 1000), yRange=(0, 100), padding=0)
        self._draw_limits(record.objective_obj() if record else tuning.Objective(), latency)
        self._draw_best(record, latency)
        self.legend.setText(self._legend_html(overlay if others else None))

    def mark(self, point: Optional[tuning.Point], latency: str) -> None:
        """Ring the chosen point."""
        if point is None or not point.measured or point.p99(latency) is None:
            self.selected_marker.setData([], [])
        else:
            self.selected_marker.setData(*_xy([point], latency))

    def _draw_limits(self, objective: tuning.Objective, latency: str) -> None:
        for line in self.limit_lines:
            self.plot.removeItem(line)
        self.limit_lines = []
        limit = objective.max_e2e_p99_s if latency == "e2e" else objective.max_ttft_p99_s
        pen = pg.mkPen(LIMIT, width=1, style=Qt.PenStyle.DashLine)
        if limit is not None:
            self.limit_lines.append(pg.InfiniteLine(pos=limit * 1000, angle=90, pen=pen,
                                                    label=f"p99 ≤ {limit * 1000:g} ms",
                                                    labelOpts={"position": 0.08, "color": LIMIT}))
        if objective.min_tokens_per_s is not None:
            self.limit_lines.append(pg.InfiniteLine(pos=objective.min_tokens_per_s, angle=0, pen=pen,
                                                    label=f"≥ {objective.min_tokens_per_s:g} tok/s",
                                                    labelOpts={"position": 0.9, "color": LIMIT}))
        for line in self.limit_lines:
            self.plot.addItem(line)

    def _draw_best(self, record: Optional[tuning.SweepRecord], latency: str) -> None:
        best = record.recommended if record else None
        if best is None or best.p99(latency) is None:
            self.best_marker.setData([], [])
            self.best_label.setText("")
            return
        x, y = best.p99(latency) * 1000, best.output_tokens_per_s
        self.best_marker.setData([x], [y])
        self.best_label.setText("recommended")
        self.best_label.setPos(x, y)

    def _legend_html(self, overlay: Optional[tuning.SweepRecord]) -> str:
        keys = [(ACCENT, "&#9679; meets the objective"), (GREY, "&#9679; over a limit / errors"),
                (self._text, "&#9632; reference (settings in force)"), (FRONT, "&#9472; Pareto front"),
                (STAR, "&#9733; recommended")]
        if overlay is not None:
            keys.append((OVERLAY, f"- - overlay: {overlay.title()}"))
        return "&nbsp;&nbsp;".join(f'<span style="color:{c}">{t}</span>' for c, t in keys)

    def _on_click(self, _item, spots, *_) -> None:
        if len(spots):
            self.point_clicked.emit(int(spots[0].data()))

    def set_theme(self, theme: str) -> None:
        background, axis, self._text = PLOT_THEMES.get(theme, PLOT_THEMES["dark"])
        self.plot.setBackground(background)
        for name in ("left", "bottom"):
            self.plot.getAxis(name).setPen(axis)
            self.plot.getAxis(name).setTextPen(axis)
        self.best_label.setColor(self._text)
