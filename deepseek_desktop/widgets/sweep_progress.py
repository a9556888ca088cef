"""SweepProgress: one line on the sweep under way (the point, its settings, requests done, live
tok/s, time left) and a bar of points; after it, how it ended."""

from __future__ import annotations

from typing import Optional

from PySide6.QtWidgets import QHBoxLayout, QProgressBar, QWidget

from deepseek_desktop.state.engine_session import format_eta
from deepseek_desktop.widgets.labels import ElidedLabel
from engine import tuning


class SweepProgress(QWidget):
    def __init__(self, parent: Optional[QWidget] = None):
        super().__init__(parent)
        self.label = ElidedLabel("")
        self.bar = QProgressBar()
        self.bar.setMaximumWidth(200)
        self.bar.hide()
        layout = QHBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.label, 1)
        layout.addWidget(self.bar)

    def not_started(self, reason: str) -> None:
        self.label.setText(f"Not started: {reason}")

    def started(self, points: int) -> None:
        self.bar.setRange(0, points)
        self.bar.setValue(0)
        self.bar.show()
        self.label.setText(f"starting: {points} points …")

    def show_progress(self, event: dict) -> None:
        """``event``: engine.tuning's progress event."""
        settings = ", ".join(f"{k.partition('.')[2]}={v}" for k, v in event["config"].items()) or "settings in force"
        done = f"{event['done']}/{event['total']} requests" if event["total"] else f"{event['elapsed_s']:.0f} s"
        live = f" · ≈{event['tokens_per_s']:.0f} tok/s" if event.get("tokens_per_s") else ""
        self.label.setText(f"point {event['point']} of {event['points']} · {settings} · concurrency "
                           f"{event['concurrency']} · {done}{live} · {format_eta(event.get('eta_s'))}")
        self.bar.setValue(event["point"] - 1)

    def finished(self, record: tuning.SweepRecord) -> None:
        self.bar.hide()
        why = {"finished": "finished", "cancelled": "cancelled", "stopped": f"stopped: {record.stopped_reason}"}
        restored = {True: "; the settings found were restored", False: f"; {record.restore_error}", None: ""}
        self.label.setText(f"Sweep {why.get(record.status, record.status)} · {len(record.points)} points"
                           f"{restored[record.restored]}")

    def failed(self, message: str) -> None:
        self.bar.hide()
        self.label.setText(f"Sweep failed: {message}")
