"""CompareRun: the Compare view's model (no widgets). It runs ``engine.bench_compare`` on several
endpoints off the GUI thread, says each level's figures as they come, and saves the whole run as a
record (JSON, as ``deepseek-engine bench --url A --url B --json`` writes it) in the data folder."""

from __future__ import annotations

import json
import time
from dataclasses import asdict
from pathlib import Path
from typing import Optional

from PySide6.QtCore import QObject, Signal

from deepseek_desktop.tasks import run_task
from engine.paths import data_dir


def comparisons_dir() -> Path:
    return data_dir() / "comparisons"


class CompareRun(QObject):
    level_done = Signal(str, dict)   # endpoint name, one LevelReport as a dict
    finished = Signal(dict)          # the record (kind bench-comparison), saved
    failed = Signal(str)
    busy_changed = Signal(bool)

    def __init__(self, parent: Optional[QObject] = None):
        super().__init__(parent)
        self.busy = False
        self.record: Optional[dict] = None
        self.saved_to: Optional[Path] = None

    def start(self, endpoints: list[dict], concurrency: list[int], requests: int, prompt_tokens: int,
              output_tokens: int) -> bool:
        """``endpoints``: url, api_key, label. False (and a ``failed``) when the input cannot run."""
        if self.busy:
            return False
        endpoints = [e for e in endpoints if e.get("url")]
        if len(endpoints) < 1 or not concurrency or min(concurrency) < 1:
            self.failed.emit("give at least one URL and concurrency levels of 1 or more")
            return False
        self.busy = True
        self.busy_changed.emit(True)

        def work(signals):
            from engine import bench_compare

            targets = [bench_compare.Endpoint(e["url"], e.get("api_key") or None, e.get("model") or None,
                                              e.get("label") or None) for e in endpoints]
            workload = bench_compare.Workload(concurrency, requests, prompt_tokens, output_tokens)
            return bench_compare.compare(targets, workload,
                                         on_level=lambda name, report: signals.chunk.emit((name, asdict(report))))
        run_task(work, self._on_done, self._on_failed, lambda piece: self.level_done.emit(*piece))
        return True

    def _on_done(self, comparison) -> None:
        self.record = comparison.record()
        folder = comparisons_dir()
        folder.mkdir(parents=True, exist_ok=True)
        self.saved_to = folder / time.strftime("compare-%Y%m%d-%H%M%S.json")
        self.saved_to.write_text(json.dumps(self.record, indent=2))
        self._idle()
        self.finished.emit(self.record)

    def _on_failed(self, message: str) -> None:
        self._idle()
        self.failed.emit(message)

    def _idle(self) -> None:
        self.busy = False
        self.busy_changed.emit(False)
