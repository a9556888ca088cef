"""SweepModel: the sweep half of the Tuning panel, without widgets. It runs sweeps
(``engine.tuning``, shared with the CLI) on its own thread, points arriving as signals; keeps the
record shown (the live one, or a kept run reopened) and another run's under it; and lists the runs
kept in the data folder. The sweep restores the settings it found when it ends, is cancelled, or
the app quits mid-sweep (``shutdown``)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

from PySide6.QtCore import QObject, QThreadPool, Signal

from deepseek_desktop.notifier import Notifier
from deepseek_desktop.state.engine_session import EngineSession
from deepseek_desktop.state.tuning_engine import EngineView
from deepseek_desktop.tasks import run_task
from engine import tuning

DEFAULT_GRID = '"batching.max_batch_size" = [1, 4, 8]\n"batching.max_wait_ms" = [0, 50]\n'
SHUTDOWN_WAIT_MS = 20_000


class SweepModel(QObject):
    sweep_started = Signal(int)          # points to measure
    sweep_progress = Signal(dict)        # engine.tuning's progress event
    sweep_point = Signal(object)         # tuning.Point, judged with the others
    sweep_finished = Signal(object)      # tuning.SweepRecord (kept in the data folder)
    sweep_failed = Signal(str)
    record_changed = Signal()            # a past run opened, or the overlay chosen
    runs_changed = Signal(list)          # [(path, title)], newest first

    def __init__(self, session: EngineSession, notifier: Notifier, engine: EngineView,
                 parent: Optional[QObject] = None):
        """``engine`` is the tuning model's view of the engine, read (never written) when a sweep
        is prepared and started."""
        super().__init__(parent)
        self.session, self.notifier, self.engine = session, notifier, engine
        self.record: Optional[tuning.SweepRecord] = None   # shown: live, or reopened
        self.overlay: Optional[tuning.SweepRecord] = None
        self.runs: list[tuple[str, str]] = []
        self.sweep: Optional[tuning.Sweep] = None
        self.last_progress: Optional[dict] = None
        self._pool = QThreadPool(self)           # a sweep holds a thread for minutes: not the global pool's
        self._pool.setMaxThreadCount(1)
        self.refresh_runs()

    @property
    def running(self) -> bool:
        return self.sweep is not None

    # ------------------------------------------------------------------ a sweep
    def prepare_sweep(self, grid_text: str, workload: tuning.Workload, objective: tuning.Objective
                      ) -> tuple[dict, int]:
        """The grid and the number of points.

        Raises:
            ValueError: the grid, the workload or the objective was refused (the message says why).
        """
        grid = tuning.parse_grid(grid_text, "the grid") if grid_text.strip() and self.engine.admin else {}
        workload.check()
        objective.check()
        return grid, tuning.count_points(grid, len(workload.concurrency))

    def start_sweep(self, grid: dict, workload: tuning.Workload, objective: tuning.Objective) -> None:
        if self.running or self.engine.url is None:
            return
        self.overlay = None if self.overlay is self.record else self.overlay
        self.record = tuning.SweepRecord(url=self.engine.url, model=self.session.model_id or "",
                                         workload=workload.__dict__, grid=grid, objective=objective.__dict__)
        self.record.status = "running"
        sweep = self.sweep = tuning.Sweep(self.engine.url, self.engine.api_key, grid, workload, objective,
                                          model=self.session.model_id)

        def work(signals):
            sweep.on_event = signals.chunk.emit
            record = sweep.run()
            tuning.keep(record)
            return record
        self.sweep_started.emit(tuning.count_points(grid, len(workload.concurrency)))
        self.record_changed.emit()
        run_task(work, self._on_sweep_done, self._on_sweep_failed, self._on_sweep_event, pool=self._pool)

    def _on_sweep_event(self, event: dict) -> None:
        if self.sweep is None or self.record is None:
            return
        if event["type"] == "progress":
            self.last_progress = event
            self.sweep_progress.emit(event)
        elif event["type"] == "point":
            point = tuning.Point.from_dict(event["point"])
            self.record.points.append(point)
            self.record.finish()
            self.sweep_point.emit(point)

    def _on_sweep_done(self, record: tuning.SweepRecord) -> None:
        self.sweep, self.last_progress = None, None
        self.record = record
        if record.status == "stopped":
            self.notifier.error(f"sweep stopped: {record.stopped_reason}; the points done are kept")
        if record.restored is False:
            self.notifier.error(f"sweep: {record.restore_error}")
        self.sweep_finished.emit(record)
        self.record_changed.emit()
        self.refresh_runs()

    def _on_sweep_failed(self, message: str) -> None:
        self.sweep, self.last_progress = None, None
        self.record = None
        self.notifier.error(f"sweep: {message}")
        self.sweep_failed.emit(message)
        self.record_changed.emit()

    def cancel_sweep(self) -> None:
        if self.sweep is not None:
            self.sweep.cancel()

    def shutdown(self) -> None:
        """The app quits: a sweep under way is cancelled and puts back the settings it found."""
        if self.sweep is not None:
            self.sweep.cancel()
            self._pool.waitForDone(SHUTDOWN_WAIT_MS)

    # ------------------------------------------------------------------ kept runs
    def refresh_runs(self) -> None:
        run_task(lambda _: _titles(), self._on_runs, lambda m: self.notifier.warning(f"sweeps: {m}"))

    def _on_runs(self, runs: list) -> None:
        self.runs = runs
        self.runs_changed.emit(runs)

    def open_run(self, path: str, overlay: bool = False) -> None:
        """Show a kept run (or draw its front under the one shown) without measuring again."""
        def done(record: tuning.SweepRecord) -> None:
            if overlay:
                self.overlay = record
            elif not self.running:
                self.record = record
            self.record_changed.emit()
        run_task(lambda _: tuning.SweepRecord.read(path), done,
                 lambda m: self.notifier.error(f"cannot open the sweep {Path(path).name}: {m}"))

    def clear_overlay(self) -> None:
        self.overlay = None
        self.record_changed.emit()


def _titles() -> list[tuple[str, str]]:
    out = []
    for path in tuning.list_records():
        try:
            out.append((str(path), tuning.SweepRecord.read(path).title()))
        except (OSError, ValueError, TypeError, KeyError) as exc:
            out.append((str(path), f"{path.name} (unreadable: {exc})"))
    return out
