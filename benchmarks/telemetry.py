"""Telemetry figures (issue 6), measured in one run:

  * CPU used by the desktop app idle (offscreen, attached to an engine, telemetry at 1 s), on
    the Chat panel and on the Monitor panel drawing 8 live plots, as % of one core (target < 2%);
  * CPU per sample of the Monitor's redraw and paint, in this process, with the number of curves
    that had data in view (a figure from plots drawing nothing would mislead);
  * CPU used by the headless recorder (`deepseek-engine monitor`, 1 s interval, engine URL set);
  * memory of an hour of samples of every series in the ring buffers (target < 20 MB).

Usage: python benchmarks/telemetry.py [--model DIR] [--seconds 30]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
from helpers import EngineServer  # noqa: E402

from engine.telemetry.recorder import Recorder, SeriesBuffer  # noqa: E402


def cpu_percent(process: psutil.Process, seconds: float) -> float:
    before = process.cpu_times()
    time.sleep(seconds)
    after = process.cpu_times()
    return (after.user + after.system - before.user - before.system) / seconds * 100


def app_cpu_percent(srv: EngineServer, seconds: float, panel: str) -> float:
    """The desktop app (offscreen), attached to the engine, idle on ``panel``."""
    # A profile of its own: the user's settings (window geometry…) are not touched.
    env = {**os.environ, "QT_QPA_PLATFORM": "offscreen", "DEEPSEEK_DESKTOP_DATA": tempfile.mkdtemp(prefix="bench-app-")}
    app = subprocess.Popen([sys.executable, "-m", "deepseek_desktop.app", "--engine-url", srv.url, "--api-key",
                            srv.api_key, "--panel", panel], cwd=ROOT, env=env,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        time.sleep(6)  # start-up and the first samples
        return cpu_percent(psutil.Process(app.pid), seconds)
    finally:
        app.terminate()
        app.wait(10)


def monitor_redraw_cost(row: dict, window: str, history_s: int, updates: int = 60) -> tuple[float, int]:
    """CPU ms per new sample for the Monitor panel (redraw and paint, offscreen, 1220x860, over
    ``window`` with ``history_s`` samples already buffered), and how many curves had data in view: a figure from plots that draw nothing is no
    figure (an earlier run read 1.4% from lines that sat outside the view)."""
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    from PySide6.QtWidgets import QApplication

    from deepseek_desktop.panels.monitor import MonitorPanel
    from deepseek_desktop.telemetry import TelemetryModel

    app = QApplication.instance() or QApplication([])
    model = TelemetryModel()
    panel = MonitorPanel(model)
    panel.resize(1220, 860)
    panel.show()
    panel.window_box.setCurrentText(window)
    start = row["time"] - history_s
    for t in range(history_s):
        model.buffer.append({**row, "time": start + t})
    model.last_row = row
    app.processEvents()
    before = time.process_time()
    for t in range(updates):
        model._on_row({**row, "time": start + history_s + t})
        app.processEvents()
    per_update_ms = (time.process_time() - before) / updates * 1000
    in_view = 0
    for title, curves in panel.curves.items():
        left, right = panel.plots[title].getViewBox().viewRange()[0]
        for curve in curves:
            xs = curve.getData()[0]
            if xs is not None and len(xs) and left <= xs[-1] <= right and not panel.plots[title].isHidden():
                in_view += 1
    panel.close()
    return per_update_ms, in_view


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, help="a model to serve (default: none loaded)")
    parser.add_argument("--seconds", type=float, default=30)
    args = parser.parse_args()
    srv = EngineServer(args.model).start(wait_ready=bool(args.model))
    with tempfile.TemporaryDirectory() as tmp:
        monitor = subprocess.Popen([sys.executable, "-m", "engine", "monitor", "--url", srv.url, "--api-key",
                                    srv.api_key, "--worker-pid", str(srv.proc.pid), "--interval", "1",
                                    "--duration", str(args.seconds + 5), "--csv", f"{tmp}/t.csv"],
                                   cwd=ROOT, stderr=subprocess.DEVNULL)
        proc = psutil.Process(monitor.pid)
        time.sleep(4)  # past imports and start-up
        before = proc.cpu_times()
        time.sleep(args.seconds)
        after = proc.cpu_times()
        monitor.terminate()
        monitor.wait()
        cpu = (after.user + after.system - before.user - before.system) / args.seconds * 100
        row = Recorder(srv.url, srv.api_key, srv.proc.pid).sample()
        app_cpu = {panel: app_cpu_percent(srv, args.seconds, panel) for panel in ("chat", "monitor")}
    srv.stop()
    redraw = {window: monitor_redraw_cost(row, window, history) for window, history in (("5 min", 300), ("60 min", 3600))}
    buffer = SeriesBuffer(capacity=7200)  # the app's: an hour at the fastest interval, 0.5 s
    for t in range(7200):
        row["time"] = t / 2
        buffer.append(row)
    numeric = sum(1 for k, v in row.items() if k != "time" and not isinstance(v, str))
    for panel, cpu_pct in app_cpu.items():
        print(f"desktop app idle on the {panel} panel, telemetry sampled at 1 s: {cpu_pct:.2f}% of one core "
              f"over {args.seconds:.0f} s (target < 2%)")
    for window, (redraw_ms, in_view) in redraw.items():
        print(f"Monitor panel, {window} window full of samples: redraw and paint {redraw_ms:.1f} ms of CPU per "
              f"sample ({in_view} curves with data in view)")
    print(f"headless recorder at 1 s: {cpu:.2f}% of one core over {args.seconds:.0f} s")
    print(f"an hour of {numeric} series at 0.5 s: {buffer.nbytes / 2**20:.1f} MiB (target < 20 MB)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
