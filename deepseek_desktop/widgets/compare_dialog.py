"""Engine → Compare endpoints…: the same bench workload on the app's engine and any other
OpenAI-compatible URL (vLLM, another machine), in one table and one chart (output tokens/s and
p99 TTFT per concurrency); the run is saved as a record. The work is ``CompareRun``'s."""

from __future__ import annotations

from typing import Optional

import pyqtgraph as pg
from PySide6.QtWidgets import (
    QDialog, QFormLayout, QHBoxLayout, QLabel, QLineEdit, QPushButton, QSpinBox, QTableWidget, QTableWidgetItem,
    QVBoxLayout, QWidget,
)

from deepseek_desktop.state.compare import CompareRun

COLUMNS = ("endpoint", "concurrency", "ok", "tokens/s", "TTFT p50 ms", "TTFT p99 ms")
PENS = ("#4c9be8", "#e8684c", "#5cc46b", "#e8c04c", "#a97be8")


class CompareDialog(QDialog):
    def __init__(self, run: CompareRun, endpoints: list[dict], parent: Optional[QWidget] = None):
        """``endpoints``: rows to start with (url, api_key, label): the app's engine, typically."""
        super().__init__(parent)
        self.setWindowTitle("Compare endpoints")
        self.resize(1000, 720)
        self.run = run
        self.endpoints = QTableWidget(0, 3)
        self.endpoints.setHorizontalHeaderLabels(("URL", "API key", "label"))
        self.endpoints.horizontalHeader().setStretchLastSection(True)
        for row in endpoints + [{}]:
            self.add_endpoint(row)
        add = QPushButton("Add URL", clicked=lambda: self.add_endpoint({}))
        self.levels = QLineEdit("1,4,8")
        self.requests = QSpinBox(minimum=1, maximum=4096, value=8)
        self.prompt_tokens = QSpinBox(minimum=1, maximum=32768, value=64)
        self.output_tokens = QSpinBox(minimum=1, maximum=8192, value=32)
        form = QFormLayout()
        for label, widget in (("Concurrency levels", self.levels), ("Requests per level", self.requests),
                              ("Prompt tokens", self.prompt_tokens), ("Output tokens", self.output_tokens)):
            form.addRow(label, widget)
        self.run_button = QPushButton("Run", clicked=self.start)
        self.status = QLabel("")
        self.results = QTableWidget(0, len(COLUMNS))
        self.results.setHorizontalHeaderLabels(COLUMNS)
        self.speed_plot, self.ttft_plot = pg.PlotWidget(title="output tokens/s"), pg.PlotWidget(title="p99 TTFT (ms)")
        for plot in (self.speed_plot, self.ttft_plot):
            plot.setLabel("bottom", "concurrency")
            plot.addLegend()
        charts = QHBoxLayout()
        charts.addWidget(self.speed_plot)
        charts.addWidget(self.ttft_plot)
        buttons = QHBoxLayout()
        buttons.addWidget(add)
        buttons.addStretch(1)
        buttons.addWidget(self.status)
        buttons.addWidget(self.run_button)
        layout = QVBoxLayout(self)
        layout.addWidget(self.endpoints)
        layout.addLayout(form)
        layout.addLayout(buttons)
        layout.addWidget(self.results)
        layout.addLayout(charts, 1)
        self._points: dict[str, list[tuple[int, float, Optional[float]]]] = {}
        run.level_done.connect(self.on_level)
        run.finished.connect(self.on_finished)
        run.failed.connect(lambda message: self.status.setText(f"failed: {message}"))
        run.busy_changed.connect(lambda busy: self.run_button.setEnabled(not busy))

    def add_endpoint(self, row: dict) -> None:
        index = self.endpoints.rowCount()
        self.endpoints.insertRow(index)
        for column, key in enumerate(("url", "api_key", "label")):
            self.endpoints.setItem(index, column, QTableWidgetItem(row.get(key) or ""))

    def endpoint_rows(self) -> list[dict]:
        rows = []
        for r in range(self.endpoints.rowCount()):
            values = [self.endpoints.item(r, c).text().strip() if self.endpoints.item(r, c) else "" for c in range(3)]
            if values[0]:
                rows.append(dict(zip(("url", "api_key", "label"), values)))
        return rows

    def start(self) -> None:
        try:
            levels = [int(part) for part in self.levels.text().split(",") if part.strip()]
        except ValueError:
            self.status.setText("concurrency levels: whole numbers separated by commas")
            return
        self.results.setRowCount(0)
        self._points.clear()
        for plot in (self.speed_plot, self.ttft_plot):
            plot.clear()
        if self.run.start(self.endpoint_rows(), levels, self.requests.value(), self.prompt_tokens.value(),
                          self.output_tokens.value()):
            self.status.setText("running…")

    def on_level(self, name: str, level: dict) -> None:
        p50, p99 = level["ttft_s"]["p50"], level["ttft_s"]["p99"]
        cells = (name, str(level["concurrency"]), f"{level['ok']}/{level['requests']}",
                 f"{level['output_tokens_per_s']:.1f}", _ms(p50), _ms(p99))
        row = self.results.rowCount()
        self.results.insertRow(row)
        for column, text in enumerate(cells):
            self.results.setItem(row, column, QTableWidgetItem(text))
        self._points.setdefault(name, []).append((level["concurrency"], level["output_tokens_per_s"], p99))
        self._redraw()

    def _redraw(self) -> None:
        for plot in (self.speed_plot, self.ttft_plot):
            plot.clear()
        for i, (name, points) in enumerate(self._points.items()):
            pen = pg.mkPen(PENS[i % len(PENS)], width=2)
            xs = [c for c, _, _ in points]
            self.speed_plot.plot(xs, [s for _, s, _ in points], pen=pen, symbol="o", name=name)
            known = [(c, t * 1000) for c, _, t in points if t is not None]
            self.ttft_plot.plot([c for c, _ in known], [t for _, t in known], pen=pen, symbol="o", name=name)

    def on_finished(self, record: dict) -> None:
        self.status.setText(f"saved {self.run.saved_to}")


def _ms(value: Optional[float]) -> str:
    return "N/A" if value is None else f"{value * 1000:.0f}"
