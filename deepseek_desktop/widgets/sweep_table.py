"""SweepTable: a sweep's points one per row: its settings (a column per grid key), then its
figures (tok/s, against the reference, TTFT / ITL / E2E percentiles, errors, SLO). The recommended
point is starred, the Pareto front marked, points missing the objective's limits greyed."""

from __future__ import annotations

from typing import Optional

import pyqtgraph as pg
from PySide6.QtCore import Qt
from PySide6.QtWidgets import QAbstractItemView, QHeaderView, QTableWidget, QTableWidgetItem, QWidget

from deepseek_desktop.widgets.sweep_plot import GREY
from engine import tuning

# "#", then a column per grid key (settings), then the figures
COLUMNS = ["#", "settings", "conc.", "tok/s", "× ref", "TTFT p50/90/99 ms", "ITL p50/90/99 ms",
           "E2E p50/90/99 ms", "errors", "SLO"]
REFUSED = "#e5534b"


def percentiles_ms(values: dict) -> str:
    """``p50 / p90 / p99`` in ms, N/A where one was not measured."""
    return " / ".join("N/A" if values.get(p) is None else f"{values[p] * 1000:.0f}" for p in ("p50", "p90", "p99"))


class SweepTable(QTableWidget):
    def __init__(self, parent: Optional[QWidget] = None):
        super().__init__(0, len(COLUMNS), parent)
        self.setHorizontalHeaderLabels(COLUMNS)
        self.verticalHeader().hide()
        self.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.setAlternatingRowColors(True)
        header = self.horizontalHeader()
        header.setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        header.setStretchLastSection(True)

    def fill(self, record: Optional[tuning.SweepRecord], selected: Optional[int]) -> None:
        """One row per point, ``selected`` (a row) selected without signalling a choice."""
        points = record.points if record else []
        keys = list(record.grid) if record else []
        headers = COLUMNS[:1] + [k.partition(".")[2] for k in keys] + COLUMNS[2:]
        self.blockSignals(True)
        self.setColumnCount(len(headers))
        self.setHorizontalHeaderLabels(headers)
        self.setRowCount(len(points))
        best = record.recommended.index if record and record.recommended else None
        for row, p in enumerate(points):
            for col, text in enumerate(_cells(p, keys, best)):
                item = QTableWidgetItem(text)
                item.setData(Qt.ItemDataRole.UserRole, p.index)
                item.setToolTip(p.label() if col == 0 else text)
                if not p.meets_slo:
                    item.setForeground(pg.mkColor(GREY if p.measured else REFUSED))
                self.setItem(row, col, item)
        if selected is not None and selected < len(points):
            self.selectRow(selected)
        self.blockSignals(False)

    def select_quietly(self, row: int) -> None:
        """Select a row chosen elsewhere (the plot) without echoing it back as a choice."""
        self.blockSignals(True)
        self.selectRow(row)
        self.blockSignals(False)

    def selected_row(self) -> Optional[int]:
        rows = self.selectionModel().selectedRows()
        return rows[0].row() if rows else None


def _cells(p: tuning.Point, keys: list[str], best: Optional[int]) -> list[str]:
    marks = ("★" if p.index == best else "") + ("◆" if p.pareto else "") + ("ref" if p.reference else "")
    return [f"{p.index} {marks}".strip()] + [str(p.config.get(k, "")) for k in keys] + [
        str(p.concurrency),
        "refused" if p.refused else ("N/A" if p.output_tokens_per_s is None else f"{p.output_tokens_per_s:.1f}"),
        "" if p.ratio is None else f"{p.ratio:.2f}×", percentiles_ms(p.ttft_s), percentiles_ms(p.itl_s),
        percentiles_ms(p.e2e_s),
        p.refused or ", ".join(f"{k}: {v}" for k, v in p.errors.items()),
        "—" if not p.measured else ("yes" if p.meets_slo else "no")]
