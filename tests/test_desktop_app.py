"""The desktop app's first version: torch-free, starts a real worker, chats with it."""

import subprocess
import sys
import time

import pytest

from helpers import ROOT


def test_gui_process_never_imports_torch():
    code = (
        "import sys\n"
        "from PySide6.QtWidgets import QApplication\n"
        "from deepseek_desktop.app import MainWindow\n"
        "app = QApplication([])\n"
        "w = MainWindow(); w.show(); app.processEvents()\n"
        "bad = [m for m in ('torch', 'transformers') if m in sys.modules]\n"
        "print('LOADED', bad)\n"
        "sys.exit(1 if bad else 0)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60,
                            env={**__import__("os").environ, "QT_QPA_PLATFORM": "offscreen"})
    assert result.returncode == 0, result.stdout + result.stderr


def test_window_starts_worker_and_streams_a_reply(llama_dir):
    from PySide6.QtWidgets import QApplication

    from deepseek_desktop.app import MainWindow
    from deepseek_desktop.engine_process import EngineProcess

    app = QApplication.instance() or QApplication([])
    engine = EngineProcess(str(llama_dir))
    window = MainWindow(engine)
    engine.start()
    try:
        assert window.state_label.text() == "starting engine…"
        deadline = time.monotonic() + 120
        while not (window.send_button.isEnabled() and window.model_id) and time.monotonic() < deadline:
            app.processEvents()
            time.sleep(0.02)
        assert window.model_id == "tiny-llama", window.state_label.text()
        window.prompt.setText("Hello there")
        window.send()
        deadline = time.monotonic() + 60
        while not window.send_button.isEnabled() and time.monotonic() < deadline:
            app.processEvents()
            time.sleep(0.02)
        transcript = window.transcript.toPlainText()
        assert "You: Hello there" in transcript
        assert len(transcript.split("Model: ", 1)[1]) > 0, (transcript, window.statusBar().currentMessage())
    finally:
        window.close()
    assert engine._process.state().name == "NotRunning"
