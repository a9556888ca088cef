"""GUI checks, each run in its own process by test_desktop_app.py.

They end with os._exit, as the app does: PySide 6.12 with several pyqtgraph plots crashes in the
interpreter's teardown (see deepseek_desktop.app.exit_now), which would fail the test run after
every test had passed.

Usage: python tests/gui_checks.py NAME [ARGS...]; exit status 0 when the check passed.
"""

import os
import sys
import time
import traceback
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def wait(app, predicate, timeout):
    deadline = time.monotonic() + timeout
    while not predicate() and time.monotonic() < deadline:
        app.processEvents()
        time.sleep(0.02)
    return predicate()


def torch_free():
    from PySide6.QtWidgets import QApplication

    from deepseek_desktop.app import MainWindow

    app = QApplication([])
    window = MainWindow()
    window.show()
    app.processEvents()
    loaded = [m for m in ("torch", "transformers") if m in sys.modules]
    assert not loaded, f"the GUI imported {loaded}"
    window.close()


def window_chat(model_dir):
    from PySide6.QtWidgets import QApplication

    from deepseek_desktop.app import MainWindow
    from deepseek_desktop.engine_process import EngineProcess

    app = QApplication([])
    engine = EngineProcess(model_dir)
    window = MainWindow(engine)
    engine.start()
    try:
        assert window.state_label.text() == "starting engine…"
        assert wait(app, lambda: window.send_button.isEnabled() and window.model_id, 120), window.state_label.text()
        assert window.model_id == Path(model_dir).name
        window.prompt.setText("Hello there")
        window.send()
        assert wait(app, window.send_button.isEnabled, 60)
        transcript = window.transcript.toPlainText()
        assert "You: Hello there" in transcript
        assert transcript.split("Model: ", 1)[1], (transcript, window.statusBar().currentMessage())
        assert wait(app, lambda: len(window.telemetry.buffer.get("worker_rss_bytes")[0]) >= 2, 10)
        assert window.telemetry.buffer.get("worker_rss_bytes")[1][-1] > 50e6  # the worker is sampled
    finally:
        window.close()
    assert engine._process.state().name == "NotRunning"


def killed_worker(model_dir):
    """kill -9 of the worker mid-session: the window says so, keeps the transcript, stays up."""
    import signal

    from PySide6.QtWidgets import QApplication

    from deepseek_desktop.app import MainWindow
    from deepseek_desktop.engine_process import EngineProcess

    app = QApplication([])
    engine = EngineProcess(model_dir)
    window = MainWindow(engine)
    engine.start()
    assert wait(app, lambda: window.send_button.isEnabled() and window.model_id, 120), window.state_label.text()
    window.transcript.appendPlainText("You: keep me")
    os.kill(engine.pid(), signal.SIGKILL)
    assert wait(app, lambda: window.state_label.text() == "engine stopped", 20), window.state_label.text()
    assert "exited" in window.statusBar().currentMessage()
    assert not window.send_button.isEnabled()
    assert "You: keep me" in window.transcript.toPlainText()
    wait(app, lambda: False, 2)  # two health-poll periods later the reason is still shown
    assert window.state_label.text() == "engine stopped"
    window.close()


def monitor(url, api_key, pid, out_dir):
    import httpx
    import numpy as np
    from PySide6.QtWidgets import QApplication

    from deepseek_desktop.panels.monitor import MonitorPanel
    from deepseek_desktop.telemetry import TelemetryModel

    app = QApplication([])
    model = TelemetryModel(interval_s=0.5)
    panel = MonitorPanel(model)
    panel.show()  # a hidden panel does not redraw
    model.attach(url, api_key, int(pid))
    model.start()
    httpx.post(url + "/v1/completions", headers={"Authorization": f"Bearer {api_key}"}, timeout=60,
               json={"model": "tiny-llama", "prompt": "Hello", "max_tokens": 8})
    assert wait(app, lambda: len(model.buffer.get("cpu_pct")[0]) >= 4, 20)
    times, rss = model.buffer.get("worker_rss_bytes")
    assert rss[-1] > 50e6
    xs, ys = panel.curves["RAM (GiB)"][1].getData()
    assert len(xs) >= 4 and ys[-1] > 0.04
    if model.gpu_count == 0:
        assert "No NVIDIA GPU telemetry" in panel.gpu_label.text()
        assert np.isnan(panel.visible()["gpu0_gpu_util_pct"][1]).all()  # N/A, never 0
    panel.window_box.setCurrentText("1 min")
    panel.pause_box.setChecked(True)
    frozen = len(panel.curves["CPU (%)"][0].getData()[0])
    before = len(model.buffer.get("cpu_pct")[0])
    assert wait(app, lambda: len(model.buffer.get("cpu_pct")[0]) > before, 5)
    assert len(panel.curves["CPU (%)"][0].getData()[0]) == frozen, "paused plots must not move"
    out = Path(out_dir)
    panel.export_csv(out / "t.csv")
    header = (out / "t.csv").read_text().splitlines()[0].split(",")
    assert header[0] == "time" and "engine_generation_tokens_per_s" in header
    pngs = panel.export_pngs(out)
    assert len(pngs) == 8 and all(p.stat().st_size > 1000 for p in pngs)
    model.stop()


if __name__ == "__main__":
    try:
        globals()[sys.argv[1]](*sys.argv[2:])
    except BaseException:
        traceback.print_exc()
        sys.stderr.flush()
        os._exit(1)
    print("OK", flush=True)
    os._exit(0)
