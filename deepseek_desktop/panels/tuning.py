"""TuningPanel: the memory budget drawn per device, the run-time settings applied live, and sweeps
over them on a throughput / p99 latency plot with the Pareto front, a table, past runs and an
overlay. It draws ``state.tuning.TuningModel`` and forwards the user's actions to it."""

from __future__ import annotations

from typing import Callable, Optional

import pyqtgraph as pg
from PySide6.QtCore import Qt
from PySide6.QtWidgets import (
    QAbstractItemView, QComboBox, QFrame, QGridLayout, QHBoxLayout, QHeaderView, QLabel, QLineEdit, QMessageBox,
    QPlainTextEdit, QProgressBar, QPushButton, QSizePolicy, QSpinBox, QTableWidget, QTableWidgetItem, QVBoxLayout,
    QWidget,
)

from deepseek_desktop.notifier import Notifier
from deepseek_desktop.state.engine_session import format_eta
from deepseek_desktop.state.tuning import DEFAULT_GRID, KV_DTYPES, TuningModel
from deepseek_desktop.widgets.knob_row import KnobRow
from deepseek_desktop.widgets.labels import ElidedLabel
from deepseek_desktop.widgets.memory_bar import MemoryBar
from deepseek_desktop.widgets.sweep_plot import GREY, SweepPlot
from engine import tuning
from engine.memory import format_bytes

VERDICT_TEXT = {"fits": "Fits", "tight": "Tight", "will-not-fit": "Will not fit", "unknown": "N/A"}
# "#", then a column per grid key (settings), then the figures
COLUMNS = ["#", "settings", "conc.", "tok/s", "× ref", "TTFT p50/90/99 ms", "ITL p50/90/99 ms",
           "E2E p50/90/99 ms", "errors", "SLO"]


def _ms(values: dict) -> str:
    return " / ".join("N/A" if values.get(p) is None else f"{values[p] * 1000:.0f}" for p in ("p50", "p90", "p99"))


def _number(text: str) -> Optional[float]:
    text = text.strip()
    return float(text) if text else None


def _card(*widgets_or_layouts) -> QFrame:
    card = QFrame()
    card.setObjectName("card")
    layout = QVBoxLayout(card)
    for item in widgets_or_layouts:
        (layout.addLayout if not isinstance(item, QWidget) else layout.addWidget)(item)
    return card


def _heading(text: str) -> QLabel:
    label = QLabel(text)
    label.setObjectName("cta_title")
    return label


class TuningPanel(QWidget):
    def __init__(self, model: TuningModel, notifier: Notifier, theme: str = "dark", parent: Optional[QWidget] = None):
        super().__init__(parent)
        self.model, self.notifier, self.theme = model, notifier, theme
        self.selected: Optional[int] = None
        self.bars: list[tuple[MemoryBar, QLabel]] = []
        self.knobs: dict[str, KnobRow] = {}
        self._export_dialog = None
        # Questions go through these (tests answer them without a modal dialog).
        self.confirm: Callable[[str, str], bool] = self._ask
        self._build()
        model.engine_changed.connect(self._show_engine)
        model.config_changed.connect(self._show_config)
        model.budget_changed.connect(self._show_budget)
        model.refused.connect(self._show_refusals)
        model.applied.connect(lambda _: self._show_refusals({}))
        model.sweep_started.connect(self._on_started)
        model.sweep_progress.connect(self._on_progress)
        model.sweep_point.connect(lambda _: self.redraw())
        model.sweep_finished.connect(self._on_finished)
        model.sweep_failed.connect(self._on_failed)
        model.record_changed.connect(self.redraw)
        model.runs_changed.connect(self._show_runs)
        self._show_engine()
        self._show_config()
        self._show_budget(model.budgets)
        self._show_runs(model.runs)
        self.redraw()

    # ------------------------------------------------------------------ layout
    def _build(self) -> None:
        """Top: the budget and the settings side by side; below: the sweep (setup, plot and table,
        the chosen point, past runs), which takes the height left."""
        self.notice = QLabel("")
        self.notice.setWordWrap(True)
        self.notice.setObjectName("edit_banner")
        top = QWidget()
        band = QHBoxLayout(top)
        band.setContentsMargins(0, 0, 0, 0)
        budget = self._build_budget()
        budget.setFixedWidth(380)
        band.addWidget(budget, 0, Qt.AlignmentFlag.AlignTop)
        band.addWidget(self._build_knobs(), 1)
        layout = QVBoxLayout(self)
        layout.addWidget(self.notice)
        layout.addWidget(top)
        layout.addWidget(self._build_sweep(), 1)

    def _build_budget(self) -> QFrame:
        self.bars_box = QVBoxLayout()
        self.fit_label = QLabel("")
        self.fit_label.setWordWrap(True)
        self.context_box = QSpinBox(minimum=0, maximum=1 << 22, singleStep=512)
        self.context_box.setSpecialValueText("model's")
        self.context_box.setToolTip("What-if: a context cap (model.max_context) changes only with a reload; "
                                    "the bar shows what it would take")
        self.context_box.valueChanged.connect(lambda v: self.model.set_what_if(context=v or None))
        self.kv_dtype_box = QComboBox()
        self.kv_dtype_box.addItems(list(KV_DTYPES))
        self.kv_dtype_box.setToolTip("What-if: the KV cache's dtype (estimate only)")
        self.kv_dtype_box.currentTextChanged.connect(lambda t: self.model.set_what_if(self.context_box.value(), t))
        what_if = QHBoxLayout()
        for widget in (QLabel("if context"), self.context_box, QLabel("KV dtype"), self.kv_dtype_box):
            what_if.addWidget(widget)
        what_if.addStretch(1)
        card = _card(_heading("Memory budget"), self.bars_box, self.fit_label, what_if)
        self._show_budget([None])  # one bar from the start (N/A): the layout makes room for it
        return card

    def _build_knobs(self) -> QFrame:
        """Two settings a row: name (its trade-off in the tooltip), editor, the value in force;
        the engine's refusal under them."""
        grid = QGridLayout()
        grid.setHorizontalSpacing(6)
        grid.setVerticalSpacing(2)
        per_row = 2
        for i, (dotted, description) in enumerate(tuning.runtime_fields().items()):
            knob = KnobRow(dotted, description, self.model.set_edit)
            self.knobs[dotted] = knob
            row, col = 2 * (i // per_row), 3 * (i % per_row)
            grid.addWidget(knob.name, row, col)
            grid.addWidget(knob.editor, row, col + 1)
            grid.addWidget(knob.in_force, row, col + 2)
            grid.addWidget(knob.refusal, row + 1, col, 1, 3)
        for col in range(per_row):
            grid.setColumnStretch(3 * col + 1, 1)
        self.general_refusal = QLabel("")
        self.general_refusal.setWordWrap(True)
        self.general_refusal.setStyleSheet("color: #ff8a8a;")
        self.general_refusal.hide()
        self.apply_button = QPushButton("Apply")
        self.apply_button.setObjectName("primary")
        self.apply_button.setToolTip("PUT /admin/config: in force for new requests; running ones finish as they began")
        self.apply_button.clicked.connect(self.apply)
        self.revert_button = QPushButton("Revert")
        self.revert_button.clicked.connect(self.model.revert)
        head = QHBoxLayout()
        head.addWidget(_heading("Run-time settings"))
        hint = QLabel("edited ones in bold · grey: in force")
        hint.setObjectName("hint")
        head.addWidget(hint)
        head.addStretch(1)
        head.addWidget(self.revert_button)
        head.addWidget(self.apply_button)
        return _card(head, grid, self.general_refusal)

    def _build_sweep(self) -> QWidget:
        right = QWidget()
        layout = QVBoxLayout(right)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self._build_setup())
        self.progress_label = ElidedLabel("")
        self.progress_bar = QProgressBar()
        self.progress_bar.setMaximumWidth(200)
        self.progress_bar.hide()
        self.latency_box = QComboBox()
        self.latency_box.addItem("p99 E2E", "e2e")
        self.latency_box.addItem("p99 TTFT", "ttft")
        self.latency_box.setToolTip("The latency the plot and its Pareto front use")
        self.latency_box.currentIndexChanged.connect(lambda _: self.redraw())
        progress = QHBoxLayout()
        progress.addWidget(self.progress_label, 1)
        progress.addWidget(self.progress_bar)
        progress.addWidget(QLabel("plot tok/s against"))
        progress.addWidget(self.latency_box)
        layout.addLayout(progress)
        results = QHBoxLayout()
        self.sweep_plot = SweepPlot(self.theme)
        self.sweep_plot.point_clicked.connect(self.select)
        plot, table = self.sweep_plot, self._build_table()
        for widget in (plot, table):  # the stretch factors share the width, not the contents
            widget.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Expanding)
        results.addWidget(plot, 4)
        results.addWidget(table, 5)
        layout.addLayout(results, 1)
        layout.addWidget(self._build_details())
        layout.addLayout(self._build_runs())
        return right

    def _build_setup(self) -> QFrame:
        self.grid_edit = QPlainTextEdit(DEFAULT_GRID)
        self.grid_edit.setToolTip("TOML: one dotted run-time setting per line with a list of values")
        self.grid_edit.setFixedHeight(70)
        self.grid_edit.setMinimumWidth(250)
        self.prompt_box = QSpinBox(minimum=1, maximum=1 << 20, value=128)
        self.output_box = QSpinBox(minimum=1, maximum=1 << 16, value=64)
        self.shared_box = QSpinBox(minimum=0, maximum=100, value=0, suffix=" %")
        self.shared_box.setToolTip("Share of each prompt that all requests share (a system prompt)")
        self.concurrency_edit = QLineEdit("1,4,8")
        self.concurrency_edit.setMaximumWidth(70)
        self.per_box = QComboBox()
        self.per_box.addItems(["requests", "seconds"])
        self.per_value = QSpinBox(minimum=1, maximum=100_000, value=16)
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
        for box in (self.prompt_box, self.output_box, self.shared_box, self.per_value):
            box.setMaximumWidth(76)
        self.run_button = QPushButton("Run sweep")
        self.run_button.setObjectName("primary")
        self.run_button.clicked.connect(self.run_sweep)
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setEnabled(False)
        self.cancel_button.clicked.connect(self.model.cancel_sweep)
        workload = QHBoxLayout()
        for widget in (QLabel("tokens in"), self.prompt_box, QLabel("out"), self.output_box, QLabel("shared"),
                       self.shared_box, QLabel("concurrency"), self.concurrency_edit, self.per_value, self.per_box):
            workload.addWidget(widget)
        workload.addStretch(1)
        objective = QHBoxLayout()
        for widget in (QLabel("objective"), self.goal_box, QLabel("p99 TTFT ≤"), self.max_ttft, QLabel("p99 E2E ≤"),
                       self.max_e2e, QLabel("tok/s ≥"), self.min_tps):
            objective.addWidget(widget)
        objective.addStretch(1)
        objective.addWidget(self.cancel_button)
        objective.addWidget(self.run_button)
        rows = QVBoxLayout()
        rows.addLayout(workload)
        rows.addLayout(objective)
        setup = QHBoxLayout()
        setup.addWidget(QLabel("Sweep"), 0, Qt.AlignmentFlag.AlignTop)
        setup.addWidget(self.grid_edit, 2)
        setup.addLayout(rows, 5)
        return _card(setup)

    def _build_table(self) -> QTableWidget:
        self.table = QTableWidget(0, len(COLUMNS))
        self.table.setHorizontalHeaderLabels(COLUMNS)
        self.table.verticalHeader().hide()
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.table.setAlternatingRowColors(True)
        header = self.table.horizontalHeader()
        header.setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        header.setStretchLastSection(True)
        self.table.itemSelectionChanged.connect(self._on_table_selection)
        return self.table

    def _build_details(self) -> QFrame:
        self.details = QLabel("Click a point on the plot or a row of the table.")
        self.details.setWordWrap(True)
        self.details.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
        self.apply_point_button = QPushButton("Apply to engine")
        self.apply_point_button.clicked.connect(self.apply_selected)
        self.export_button = QPushButton("Export…")
        self.export_button.setToolTip("Export this point's settings (engine TOML, vLLM, compose…)")
        self.export_button.clicked.connect(self.export_selected)
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
        card = QFrame()
        card.setObjectName("card")
        card.setLayout(row)
        return card

    def _build_runs(self) -> QHBoxLayout:
        self.runs_box = QComboBox()
        self.runs_box.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
        self.runs_box.setMinimumContentsLength(30)
        self.open_button = QPushButton("Open")
        self.open_button.setToolTip("Show this kept run (nothing is measured again)")
        self.open_button.clicked.connect(lambda: self._open_run(overlay=False))
        self.overlay_button = QPushButton("Overlay")
        self.overlay_button.setToolTip("Draw this run's front under the one shown (before / after a change)")
        self.overlay_button.clicked.connect(lambda: self._open_run(overlay=True))
        self.clear_overlay_button = QPushButton("Clear overlay")
        self.clear_overlay_button.clicked.connect(self.model.clear_overlay)
        row = QHBoxLayout()
        row.addWidget(QLabel("Past runs"))
        row.addWidget(self.runs_box, 1)
        for button in (self.open_button, self.overlay_button, self.clear_overlay_button):
            row.addWidget(button)
        return row

    # ------------------------------------------------------------------ the engine, the settings, the budget
    def _show_engine(self) -> None:
        engine = self.model.engine
        self.notice.setText("" if engine.admin else f"Settings cannot be changed here: {engine.reason}.")
        self.notice.setVisible(not engine.admin)
        for knob in self.knobs.values():
            knob.editor.setEnabled(engine.admin)
        self.grid_edit.setEnabled(engine.admin)
        if not engine.admin:
            self.grid_edit.setToolTip("a workload-only sweep: the concurrency levels against the settings in force")
        self._update_buttons()

    def _show_config(self) -> None:
        for dotted, knob in self.knobs.items():
            knob.show_value(self.model.in_force.get(dotted), self.model.value(dotted), dotted in self.model.edits)
        self._update_buttons()

    def _update_buttons(self) -> None:
        pending = bool(self.model.edits) and self.model.engine.admin
        self.apply_button.setEnabled(pending)
        self.revert_button.setEnabled(bool(self.model.edits))
        running = self.model.running
        self.run_button.setEnabled(not running and self.model.engine.url is not None)
        self.cancel_button.setEnabled(running)
        point = self.selected_point()
        self.apply_point_button.setEnabled(point is not None and point.measured and bool(point.config)
                                           and self.model.engine.admin and not running)
        self.export_button.setEnabled(point is not None and point.refused is None)

    def _show_budget(self, budgets: list) -> None:
        while len(self.bars) < len(budgets):
            bar, verdict = MemoryBar(self.theme), QLabel("")
            verdict.setObjectName("verdict")
            self.bars_box.addWidget(verdict)
            self.bars_box.addWidget(bar)
            self.bars.append((bar, verdict))
        for i, (bar, verdict) in enumerate(self.bars):
            shown = i < len(budgets)
            bar.setVisible(shown)
            verdict.setVisible(shown)
            if shown:
                verdict.setWordWrap(True)
                b = budgets[i]
                bar.set_budget(b)
                if b is None:
                    verdict.setText("Memory: N/A until a model is served")
                    continue
                verdict.setText(f"{_device_name(b.device)}: {VERDICT_TEXT[b.verdict]} · needs "
                                f"{format_bytes(b.need_bytes)} of {format_bytes(b.available_bytes)}")
                verdict.setToolTip("the engine's need under the edited settings, of what other processes leave")
                verdict.setProperty("verdict", b.verdict)
                verdict.style().unpolish(verdict)
                verdict.style().polish(verdict)
        self.fit_label.setText(self._fit_text(budgets))

    def _fit_text(self, budgets: list) -> str:
        kv = [b for b in budgets if b is not None and b.max_batch is not None]
        if not kv:
            return ("No model served: the budget is drawn once one is." if not self.model.engine.status.get("path")
                    else "Reading the model and the devices…")
        context = self.model.context_in_use() or 0
        batch = self.model.value("batching.max_batch_size")
        return (f"Largest batch at {context:,} tokens: <b>{min(b.max_batch for b in kv):,}</b> · longest "
                f"context at batch {batch}: <b>{min(b.max_context for b in kv):,}</b> (≈: estimated)")

    def _show_refusals(self, refused: dict) -> None:
        for dotted, knob in self.knobs.items():
            knob.set_refusal(refused.get(dotted, ""))
        general = refused.get("", "")
        self.general_refusal.setText(general)
        self.general_refusal.setVisible(bool(general))

    def apply(self) -> None:
        if self.model.over_budget() and not self.confirm(
                "Over the memory budget", "These settings need more memory than the device has left "
                "(Will not fit). Apply them all the same?"):
            return
        self.model.apply(confirmed=True)

    # ------------------------------------------------------------------ sweeps
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

    def run_sweep(self) -> None:
        try:
            workload, objective = self.experiment()
            grid, points = self.model.prepare_sweep(self.grid_edit.toPlainText(), workload, objective)
        except ValueError as exc:
            self.progress_label.setText(f"Not started: {exc}")
            self.notifier.warning(f"sweep not started: {exc}")
            return
        if points > tuning.ASK_ABOVE_POINTS and not self.confirm(
                "A long sweep", f"This sweep measures {points} points. Start it?"):
            return
        self.selected = None
        self.model.start_sweep(grid, workload, objective)

    def _on_started(self, points: int) -> None:
        self.progress_bar.setRange(0, points)
        self.progress_bar.setValue(0)
        self.progress_bar.show()
        self.progress_label.setText(f"starting: {points} points …")
        self._update_buttons()

    def _on_progress(self, event: dict) -> None:
        settings = ", ".join(f"{k.partition('.')[2]}={v}" for k, v in event["config"].items()) or "settings in force"
        done = f"{event['done']}/{event['total']} requests" if event["total"] else f"{event['elapsed_s']:.0f} s"
        live = f" · ≈{event['tokens_per_s']:.0f} tok/s" if event.get("tokens_per_s") else ""
        self.progress_label.setText(f"point {event['point']} of {event['points']} · {settings} · concurrency "
                                    f"{event['concurrency']} · {done}{live} · {format_eta(event.get('eta_s'))}")
        self.progress_bar.setValue(event["point"] - 1)

    def _on_finished(self, record: tuning.SweepRecord) -> None:
        self.progress_bar.hide()
        why = {"finished": "finished", "cancelled": "cancelled", "stopped": f"stopped: {record.stopped_reason}"}
        restored = {True: "; the settings found were restored", False: f"; {record.restore_error}", None: ""}
        self.progress_label.setText(f"Sweep {why.get(record.status, record.status)} · {len(record.points)} points"
                                    f"{restored[record.restored]}")
        self._update_buttons()

    def _on_failed(self, message: str) -> None:
        self.progress_bar.hide()
        self.progress_label.setText(f"Sweep failed: {message}")
        self._update_buttons()

    # ------------------------------------------------------------------ drawing a record
    def latency(self) -> str:
        return self.latency_box.currentData()

    def redraw(self) -> None:
        record = self.model.record
        self.sweep_plot.draw(record, self.model.overlay, self.latency())
        self._fill_table(record)
        self._show_selected()
        self.recommendation.setText(self._recommendation_text(record))
        self._update_buttons()

    def _recommendation_text(self, record: Optional[tuning.SweepRecord]) -> str:
        if record is None:
            return ""
        head = "<b>Recommended:</b> " if record.recommended else "<b>No recommendation:</b> "
        return head + record.recommendation

    def _fill_table(self, record: Optional[tuning.SweepRecord]) -> None:
        """One row per point: its settings (a column per grid key), then its figures."""
        points = record.points if record else []
        keys = list(record.grid) if record else []
        headers = COLUMNS[:1] + [k.partition(".")[2] for k in keys] + COLUMNS[2:]
        self.table.blockSignals(True)
        self.table.setColumnCount(len(headers))
        self.table.setHorizontalHeaderLabels(headers)
        self.table.setRowCount(len(points))
        best = record.recommended.index if record and record.recommended else None
        for row, p in enumerate(points):
            marks = ("★" if p.index == best else "") + ("◆" if p.pareto else "") + ("ref" if p.reference else "")
            cells = [f"{p.index} {marks}".strip()] + [str(p.config.get(k, "")) for k in keys] + [
                str(p.concurrency),
                "refused" if p.refused else ("N/A" if p.output_tokens_per_s is None else f"{p.output_tokens_per_s:.1f}"),
                "" if p.ratio is None else f"{p.ratio:.2f}×", _ms(p.ttft_s), _ms(p.itl_s), _ms(p.e2e_s),
                p.refused or ", ".join(f"{k}: {v}" for k, v in p.errors.items()),
                "—" if not p.measured else ("yes" if p.meets_slo else "no")]
            for col, text in enumerate(cells):
                item = QTableWidgetItem(text)
                item.setData(Qt.ItemDataRole.UserRole, p.index)
                item.setToolTip(p.label() if col == 0 else text)
                if not p.meets_slo:
                    item.setForeground(pg.mkColor(GREY if p.measured else "#e5534b"))
                self.table.setItem(row, col, item)
        if self.selected is not None and self.selected < len(points):
            self.table.selectRow(self.selected)
        self.table.blockSignals(False)

    # ------------------------------------------------------------------ a chosen point
    def selected_point(self) -> Optional[tuning.Point]:
        record = self.model.record
        if record is None or self.selected is None or self.selected >= len(record.points):
            return None
        return record.points[self.selected]

    def select(self, index: Optional[int]) -> None:
        self.selected = index
        if index is not None:
            self.table.blockSignals(True)
            self.table.selectRow(index)
            self.table.blockSignals(False)
        self._show_selected()
        self._update_buttons()

    def _on_table_selection(self) -> None:
        rows = self.table.selectionModel().selectedRows()
        if rows:
            self.select(rows[0].row())

    def _show_selected(self) -> None:
        p = self.selected_point()
        self.sweep_plot.mark(p, self.latency())
        if p is None:
            self.details.setText("Click a point on the plot or a row of the table.")
            return
        settings = ", ".join(f"{k} = {v}" for k, v in p.config.items()) or "the settings in force"
        if p.refused:
            self.details.setText(f"<b>#{p.index}</b> {settings}: refused by the engine — {p.refused}")
            return
        figures = "no request answered" if not p.measured else (
            f"{p.output_tokens_per_s:.1f} tok/s{'' if p.ratio is None else f' ({p.ratio:.2f}× the reference)'} · "
            f"TTFT {_ms(p.ttft_s)} · ITL {_ms(p.itl_s)} · E2E {_ms(p.e2e_s)} ms (p50/p90/p99) · "
            f"{p.ok}/{p.requests} answered")
        self.details.setText(f"<b>#{p.index}</b> {settings} at concurrency {p.concurrency}: {figures}")

    def apply_selected(self) -> None:
        point = self.selected_point()
        if point is not None:
            self.model.apply_point(point)

    def export_selected(self) -> None:
        """Opens the export dialog (issue 12) on the chosen point."""
        point, record = self.selected_point(), self.model.record
        if point is None or record is None:
            return
        from deepseek_desktop.widgets.export_dialog import ExportDialog

        engine = self.model.engine
        self._export_dialog = ExportDialog.for_sweep_point(
            record.to_dict(), point.index, self.notifier, self,
            engine_url=engine.url if engine.admin else None, api_key=engine.api_key)
        self._export_dialog.open()

    # ------------------------------------------------------------------ past runs
    def _show_runs(self, runs: list) -> None:
        current = self.runs_box.currentData()
        self.runs_box.blockSignals(True)
        self.runs_box.clear()
        for path, title in runs:
            self.runs_box.addItem(title, path)
        index = self.runs_box.findData(current)
        self.runs_box.setCurrentIndex(max(index, 0))
        self.runs_box.blockSignals(False)
        has = bool(runs)
        self.open_button.setEnabled(has)
        self.overlay_button.setEnabled(has)

    def _open_run(self, overlay: bool) -> None:
        path = self.runs_box.currentData()
        if path:
            if not overlay:
                self.selected = None
            self.model.open_run(path, overlay=overlay)

    # ------------------------------------------------------------------ look
    def set_theme(self, theme: str) -> None:
        self.theme = theme
        self.sweep_plot.set_theme(theme)
        self.redraw()  # the legend's colours follow the theme
        for bar, _ in self.bars:
            bar.set_theme(theme)

    def _ask(self, title: str, question: str) -> bool:
        answer = QMessageBox.question(self, title, question)
        return answer == QMessageBox.StandardButton.Yes

    def shutdown(self) -> None:
        self.model.shutdown()


def _device_name(device: str) -> str:
    return "Host RAM" if device == "cpu" else device.replace("cuda:", "GPU ")
