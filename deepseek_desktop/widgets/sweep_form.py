"""SweepForm: the Tuning panel's sweep setup: the grid of settings (TOML), the workload (prompt
and output tokens, shared prefix, concurrency levels, requests or seconds per point), the
objective and its limits, with Run and Cancel. It reads the fields into ``engine.tuning``'s
``Workload`` and ``Objective``; the panel starts and cancels the sweep."""

from __future__ import annotations

from typing import Optional

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (
    QComboBox, QHBoxLayout, QLabel, QLineEdit, QPlainTextEdit, QPushButton, QSpinBox, QVBoxLayout, QWidget,
)

from deepseek_desktop.state.tuning_sweep import DEFAULT_GRID
from deepseek_desktop.widgets.card import Card
from engine import tuning


class SweepForm(Card):
    run_requested = Signal()
    cancel_requested = Signal()

    def __init__(self, parent: Optional[QWidget] = None):
        super().__init__(parent=parent)
        self.grid_edit = QPlainTextEdit(DEFAULT_GRID)
        self.grid_edit.setToolTip("TOML: one dotted run-time setting per line with a list of values")
        self.grid_edit.setFixedHeight(70)
        self.grid_edit.setMinimumWidth(250)
        self.run_button = QPushButton("Run sweep")
        self.run_button.setObjectName("primary")
        self.run_button.clicked.connect(self.run_requested)
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setEnabled(False)
        self.cancel_button.clicked.connect(self.cancel_requested)
        rows = QVBoxLayout()
        rows.addLayout(self._build_workload())
        rows.addLayout(self._build_objective())
        setup = QHBoxLayout()
        setup.addWidget(QLabel("Sweep"), 0, Qt.AlignmentFlag.AlignTop)
        setup.addWidget(self.grid_edit, 2)
        setup.addLayout(rows, 5)
        self.stack(setup)

    def _build_workload(self) -> QHBoxLayout:
        self.prompt_box = QSpinBox(minimum=1, maximum=1 << 20, value=128)
        self.output_box = QSpinBox(minimum=1, maximum=1 << 16, value=64)
        self.shared_box = QSpinBox(minimum=0, maximum=100, value=0, suffix=" %")
        self.shared_box.setToolTip("Share of each prompt that all requests share (a system prompt)")
        self.concurrency_edit = QLineEdit("1,4,8")
        self.concurrency_edit.setMaximumWidth(70)
        self.per_box = QComboBox()
        self.per_box.addItems(["requests", "seconds"])
        self.per_value = QSpinBox(minimum=1, maximum=100_000, value=16)
        for box in (self.prompt_box, self.output_box, self.shared_box, self.per_value):
            box.setMaximumWidth(76)
        row = QHBoxLayout()
        for widget in (QLabel("tokens in"), self.prompt_box, QLabel("out"), self.output_box, QLabel("shared"),
                       self.shared_box, QLabel("concurrency"), self.concurrency_edit, self.per_value, self.per_box):
            row.addWidget(widget)
        row.addStretch(1)
        return row

    def _build_objective(self) -> QHBoxLayout:
        self.goal_box = QComboBox()
        self.goal_box.addItem("highest tok/s", ("throughput", "e2e"))
        self.goal_box.addItem("lowest p99 E2E", ("latency", "e2e"))
        self.goal_box.addItem("lowest p99 TTFT", ("latency", "ttft"))
        self.max_ttft = QLineEdit()
        self.max_e2e = QLineEdit()
        self.min_tps = QLineEdit()
        for edit, tip in ((self.max_ttft, "p99 TTFT limit, ms"), (self.max_e2e, "p99 E2E limit, ms"),
                          (self.min_tps, "throughput floor, tok/s")):
            edit.setPlaceholderText("none")
            edit.setToolTip(tip)
            edit.setMaximumWidth(60)
        row = QHBoxLayout()
        for widget in (QLabel("objective"), self.goal_box, QLabel("p99 TTFT ≤"), self.max_ttft, QLabel("p99 E2E ≤"),
                       self.max_e2e, QLabel("tok/s ≥"), self.min_tps):
            row.addWidget(widget)
        row.addStretch(1)
        row.addWidget(self.cancel_button)
        row.addWidget(self.run_button)
        return row

    def grid_text(self) -> str:
        return self.grid_edit.toPlainText()

    def experiment(self) -> tuple[tuning.Workload, tuning.Objective]:
        """Raises: ValueError with what was refused."""
        try:
            levels = [int(c) for c in self.concurrency_edit.text().split(",") if c.strip()]
        except ValueError:
            raise ValueError(f"concurrency: positive integers separated by commas, got "
                             f"{self.concurrency_edit.text()!r}") from None
        per_seconds = self.per_box.currentText() == "seconds"
        workload = tuning.Workload(self.prompt_box.value(), self.output_box.value(), self.shared_box.value(), levels,
                                   self.per_value.value(), float(self.per_value.value()) if per_seconds else None)
        goal, latency = self.goal_box.currentData()
        try:
            ttft, e2e, floor = (_number(e.text()) for e in (self.max_ttft, self.max_e2e, self.min_tps))
        except ValueError:
            raise ValueError("limits: numbers in ms (latency) or tok/s, or empty for none") from None
        objective = tuning.Objective(goal=goal, latency=latency, min_tokens_per_s=floor,
                                     max_ttft_p99_s=ttft / 1000 if ttft is not None else None,
                                     max_e2e_p99_s=e2e / 1000 if e2e is not None else None)
        return workload, objective

    def set_admin(self, admin: bool) -> None:
        """Without the admin API the settings cannot change: only the concurrency levels are swept."""
        self.grid_edit.setEnabled(admin)
        if not admin:
            self.grid_edit.setToolTip("a workload-only sweep: the concurrency levels against the settings in force")

    def set_running(self, running: bool, can_start: bool) -> None:
        self.run_button.setEnabled(not running and can_start)
        self.cancel_button.setEnabled(running)


def _number(text: str) -> Optional[float]:
    text = text.strip()
    return float(text) if text else None
