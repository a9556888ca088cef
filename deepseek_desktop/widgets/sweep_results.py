"""SweepResults: the sweep shown (live, or a kept run reopened) as a plot of tok/s against p99
latency and a table side by side, the recommendation, and the chosen point's figures with Apply
to engine and Export. It draws ``SweepModel.record`` (and its ``overlay``) and keeps which point
is chosen; the panel wires Apply and Export."""

from __future__ import annotations

from typing import Optional

from PySide6.QtWidgets import QComboBox, QHBoxLayout, QLabel, QPushButton, QSizePolicy, QVBoxLayout, QWidget

from deepseek_desktop.state.tuning_sweep import SweepModel
from deepseek_desktop.widgets.card import Card
from deepseek_desktop.widgets.sweep_plot import SweepPlot
from deepseek_desktop.widgets.sweep_table import SweepTable, percentiles_ms
from engine import tuning

NOTHING_CHOSEN = "Click a point on the plot or a row of the table."


class SweepResults(QWidget):
    def __init__(self, sweeps: SweepModel, theme: str = "dark", parent: Optional[QWidget] = None):
        super().__init__(parent)
        self.sweeps = sweeps
        self.selected: Optional[int] = None      # the chosen point's index in the record shown
        self.can_apply = False                   # the engine takes settings and no sweep runs
        # The latency the plot and its front use; the panel puts it on the progress line, above the plot.
        self.latency_box = QComboBox()
        self.latency_box.addItem("p99 E2E", "e2e")
        self.latency_box.addItem("p99 TTFT", "ttft")
        self.latency_box.setToolTip("The latency the plot and its Pareto front use")
        self.latency_box.currentIndexChanged.connect(lambda _: self.redraw())
        self.sweep_plot = SweepPlot(theme)
        self.sweep_plot.point_clicked.connect(self.select)
        self.table = SweepTable()
        self.table.itemSelectionChanged.connect(self._on_table_selection)
        results = QHBoxLayout()
        for widget, stretch in ((self.sweep_plot, 4), (self.table, 5)):
            widget.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Expanding)  # the stretch shares
            results.addWidget(widget, stretch)                                                # the width
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addLayout(results, 1)
        layout.addWidget(self._build_details())
        sweeps.sweep_point.connect(lambda _: self.redraw())
        sweeps.record_changed.connect(self.redraw)
        self.redraw()

    def _build_details(self) -> Card:
        self.details = QLabel(NOTHING_CHOSEN)
        self.details.setWordWrap(True)
        self.details.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
        self.apply_point_button = QPushButton("Apply to engine")
        self.export_button = QPushButton("Export…")
        self.export_button.setToolTip("Export this point's settings (engine TOML, vLLM, compose…)")
        self.recommendation = QLabel("")
        self.recommendation.setWordWrap(True)
        self.recommendation.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
        text = QVBoxLayout()
        text.addWidget(self.recommendation)
        text.addWidget(self.details)
        row = QHBoxLayout()
        row.addLayout(text, 1)
        row.addWidget(self.apply_point_button)
        row.addWidget(self.export_button)
        card = Card()
        card.setLayout(row)
        return card

    # ------------------------------------------------------------------ drawing the record
    def latency(self) -> str:
        return self.latency_box.currentData()

    def redraw(self) -> None:
        record = self.sweeps.record
        self.sweep_plot.draw(record, self.sweeps.overlay, self.latency())
        self.table.fill(record, self.selected)
        self._show_selected()
        self.recommendation.setText(_recommendation_text(record))
        self._update_buttons()

    def set_theme(self, theme: str) -> None:
        self.sweep_plot.set_theme(theme)
        self.redraw()  # the legend's colours follow the theme

    # ------------------------------------------------------------------ the chosen point
    def selected_point(self) -> Optional[tuning.Point]:
        record = self.sweeps.record
        if record is None or self.selected is None or self.selected >= len(record.points):
            return None
        return record.points[self.selected]

    def select(self, index: Optional[int]) -> None:
        self.selected = index
        if index is not None:
            self.table.select_quietly(index)
        self._show_selected()
        self._update_buttons()

    def forget_selection(self) -> None:
        """Another record is coming: its points are other points (drawn when it arrives)."""
        self.selected = None

    def set_can_apply(self, can_apply: bool) -> None:
        self.can_apply = can_apply
        self._update_buttons()

    def _on_table_selection(self) -> None:
        row = self.table.selected_row()
        if row is not None:
            self.select(row)

    def _show_selected(self) -> None:
        p = self.selected_point()
        self.sweep_plot.mark(p, self.latency())
        self.details.setText(NOTHING_CHOSEN if p is None else _point_text(p))

    def _update_buttons(self) -> None:
        point = self.selected_point()
        self.apply_point_button.setEnabled(point is not None and point.measured and bool(point.config)
                                           and self.can_apply)
        self.export_button.setEnabled(point is not None and point.refused is None)


def _recommendation_text(record: Optional[tuning.SweepRecord]) -> str:
    if record is None:
        return ""
    head = "<b>Recommended:</b> " if record.recommended else "<b>No recommendation:</b> "
    return head + record.recommendation


def _point_text(p: tuning.Point) -> str:
    settings = ", ".join(f"{k} = {v}" for k, v in p.config.items()) or "the settings in force"
    if p.refused:
        return f"<b>#{p.index}</b> {settings}: refused by the engine — {p.refused}"
    figures = "no request answered" if not p.measured else (
        f"{p.output_tokens_per_s:.1f} tok/s{'' if p.ratio is None else f' ({p.ratio:.2f}× the reference)'} · "
        f"TTFT {percentiles_ms(p.ttft_s)} · ITL {percentiles_ms(p.itl_s)} · E2E {percentiles_ms(p.e2e_s)} ms "
        f"(p50/p90/p99) · {p.ok}/{p.requests} answered")
    return f"<b>#{p.index}</b> {settings} at concurrency {p.concurrency}: {figures}"
