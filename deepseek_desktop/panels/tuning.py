"""TuningPanel: the memory budget drawn per device, the run-time settings applied live, and sweeps
over them on a throughput / p99 latency plot with the Pareto front, a table, past runs and an
overlay. It lays out its sections (``widgets/``: memory_budget, knobs_section, sweep_form,
sweep_progress, sweep_results, past_runs), wires them to ``state.tuning.TuningModel`` and its
``sweeps``, and asks the user's questions."""

from __future__ import annotations

from typing import Callable, Optional

from PySide6.QtCore import Qt
from PySide6.QtWidgets import QHBoxLayout, QLabel, QMessageBox, QVBoxLayout, QWidget

from deepseek_desktop.notifier import Notifier
from deepseek_desktop.state.tuning import TuningModel
from deepseek_desktop.widgets.knobs_section import KnobsSection
from deepseek_desktop.widgets.memory_budget import MemoryBudgetCard
from deepseek_desktop.widgets.past_runs import PastRuns
from deepseek_desktop.widgets.sweep_form import SweepForm
from deepseek_desktop.widgets.sweep_progress import SweepProgress
from deepseek_desktop.widgets.sweep_results import SweepResults
from engine import tuning

BUDGET_WIDTH = 380


class TuningPanel(QWidget):
    def __init__(self, model: TuningModel, notifier: Notifier, theme: str = "dark", parent: Optional[QWidget] = None):
        super().__init__(parent)
        self.model, self.notifier, self.theme = model, notifier, theme
        self._export_dialog = None
        # Questions go through these (tests answer them without a modal dialog).
        self.confirm: Callable[[str, str], bool] = self._ask
        self._build()
        self._wire()
        self._show_engine()
        self.past_runs.show_runs(model.runs)

    # ------------------------------------------------------------------ layout
    def _build(self) -> None:
        """Top: the budget and the settings side by side; below: the sweep (setup, progress, plot
        and table, the chosen point, past runs), which takes the height left."""
        self.notice = QLabel("")
        self.notice.setWordWrap(True)
        self.notice.setObjectName("edit_banner")
        self.budget = MemoryBudgetCard(self.model, self.theme)
        self.budget.setFixedWidth(BUDGET_WIDTH)
        self.knobs_section = KnobsSection(self.model, lambda title, question: self.confirm(title, question))
        top = QWidget()
        band = QHBoxLayout(top)
        band.setContentsMargins(0, 0, 0, 0)
        band.addWidget(self.budget, 0, Qt.AlignmentFlag.AlignTop)
        band.addWidget(self.knobs_section, 1)
        self.form = SweepForm()
        self.progress = SweepProgress()
        self.results = SweepResults(self.model.sweeps, self.theme)
        self.past_runs = PastRuns()
        progress = QHBoxLayout()
        progress.addWidget(self.progress, 1)
        progress.addWidget(QLabel("plot tok/s against"))
        progress.addWidget(self.results.latency_box)
        sweep = QWidget()
        below = QVBoxLayout(sweep)
        below.setContentsMargins(0, 0, 0, 0)
        below.addWidget(self.form)
        below.addLayout(progress)
        below.addWidget(self.results, 1)
        below.addWidget(self.past_runs)
        layout = QVBoxLayout(self)
        layout.addWidget(self.notice)
        layout.addWidget(top)
        layout.addWidget(sweep, 1)
        self._name_controls()

    def _name_controls(self) -> None:
        """The sections' controls that the tests, scripts/screenshots.py and benchmarks/tuning.py
        drive, under the panel's own names."""
        k, f, r = self.knobs_section, self.form, self.results
        self.bars, self.knobs, self.apply_button, self.revert_button = (self.budget.bars, k.knobs, k.apply_button,
                                                                        k.revert_button)
        self.grid_edit, self.concurrency_edit, self.per_value = f.grid_edit, f.concurrency_edit, f.per_value
        self.prompt_box, self.output_box, self.max_e2e = f.prompt_box, f.output_box, f.max_e2e
        self.run_button, self.cancel_button = f.run_button, f.cancel_button
        self.sweep_plot, self.table, self.latency_box = r.sweep_plot, r.table, r.latency_box
        self.details, self.recommendation = r.details, r.recommendation
        self.apply_point_button, self.export_button = r.apply_point_button, r.export_button
        self.open_button, self.overlay_button = self.past_runs.open_button, self.past_runs.overlay_button
        self.select = r.select

    def _wire(self) -> None:
        model, sweeps = self.model, self.model.sweeps
        model.engine_changed.connect(self._show_engine)
        self.form.run_requested.connect(self.run_sweep)
        self.form.cancel_requested.connect(sweeps.cancel_sweep)
        sweeps.sweep_started.connect(self._on_started)
        sweeps.sweep_progress.connect(self.progress.show_progress)
        sweeps.sweep_finished.connect(self._on_finished)
        sweeps.sweep_failed.connect(self._on_failed)
        self.results.apply_point_button.clicked.connect(self.apply_selected)
        self.results.export_button.clicked.connect(self.export_selected)
        sweeps.runs_changed.connect(self.past_runs.show_runs)
        self.past_runs.open_requested.connect(self._open_run)
        self.past_runs.clear_overlay_requested.connect(sweeps.clear_overlay)

    # ------------------------------------------------------------------ the engine
    def _show_engine(self) -> None:
        engine = self.model.engine
        self.notice.setText("" if engine.admin else f"Settings cannot be changed here: {engine.reason}.")
        self.notice.setVisible(not engine.admin)
        self.form.set_admin(engine.admin)
        self._update_buttons()

    def _update_buttons(self) -> None:
        engine, running = self.model.engine, self.model.sweeps.running
        self.form.set_running(running, can_start=engine.url is not None)
        self.results.set_can_apply(engine.admin and not running)

    # ------------------------------------------------------------------ sweeps
    def run_sweep(self) -> None:
        try:
            workload, objective = self.form.experiment()
            grid, points = self.model.sweeps.prepare_sweep(self.form.grid_text(), workload, objective)
        except ValueError as exc:
            self.progress.not_started(str(exc))
            self.notifier.warning(f"sweep not started: {exc}")
            return
        if points > tuning.ASK_ABOVE_POINTS and not self.confirm(
                "A long sweep", f"This sweep measures {points} points. Start it?"):
            return
        self.results.forget_selection()
        self.model.sweeps.start_sweep(grid, workload, objective)

    def _on_started(self, points: int) -> None:
        self.progress.started(points)
        self._update_buttons()

    def _on_finished(self, record: tuning.SweepRecord) -> None:
        self.progress.finished(record)
        self._update_buttons()

    def _on_failed(self, message: str) -> None:
        self.progress.failed(message)
        self._update_buttons()

    def _open_run(self, path: str, overlay: bool) -> None:
        if not overlay:
            self.results.forget_selection()
        self.model.sweeps.open_run(path, overlay=overlay)

    # ------------------------------------------------------------------ a chosen point
    def apply_selected(self) -> None:
        point = self.results.selected_point()
        if point is not None:
            self.model.apply_point(point)

    def export_selected(self) -> None:
        """Opens the export dialog (issue 12) on the chosen point."""
        point, record = self.results.selected_point(), self.model.record
        if point is None or record is None:
            return
        from deepseek_desktop.widgets.export_dialog import ExportDialog

        engine = self.model.engine
        self._export_dialog = ExportDialog.for_sweep_point(
            record.to_dict(), point.index, self.notifier, self,
            engine_url=engine.url if engine.admin else None, api_key=engine.api_key)
        self._export_dialog.open()

    # ------------------------------------------------------------------ look
    def set_theme(self, theme: str) -> None:
        self.theme = theme
        self.results.set_theme(theme)
        self.budget.set_theme(theme)

    def _ask(self, title: str, question: str) -> bool:
        answer = QMessageBox.question(self, title, question)
        return answer == QMessageBox.StandardButton.Yes

    def shutdown(self) -> None:
        self.model.shutdown()
