"""``deepseek-desktop``: the main window. A first version: engine state, its address and key, a
chat box and the Monitor; the other panels (models, tuning, search, logs) come with their issues."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from typing import Optional

from PySide6.QtCore import Qt, QTimer
from PySide6.QtWidgets import (
    QApplication, QHBoxLayout, QLabel, QLineEdit, QMainWindow, QPlainTextEdit, QPushButton,
    QTabWidget, QVBoxLayout, QWidget,
)

from deepseek_desktop.client import EngineClient
from deepseek_desktop.engine_process import EngineProcess
from deepseek_desktop.panels.monitor import MonitorPanel
from deepseek_desktop.telemetry import TelemetryModel


class MainWindow(QMainWindow):
    def __init__(self, engine: Optional[EngineProcess] = None, url: Optional[str] = None,
                 api_key: Optional[str] = None):
        super().__init__()
        self.setWindowTitle("DeepSeek Desktop")
        self.resize(1200, 800)
        self.engine = engine
        self.client: Optional[EngineClient] = None
        self.model_id: Optional[str] = None
        self._build()
        self._health_timer = QTimer(self, interval=1000, timeout=self._poll_health)
        if engine is not None:
            engine.listening.connect(lambda u: self._attach(u, engine.api_key))
            engine.finished.connect(self._on_engine_finished)
            self.state_label.setText("starting engine…")
        elif url:
            self._attach(url, api_key or "")

    def _build(self) -> None:
        chat = QWidget()
        layout = QVBoxLayout(chat)
        self.state_label = QLabel("no engine")
        self.address_label = QLabel("")
        self.address_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.transcript = QPlainTextEdit(readOnly=True)
        self.prompt = QLineEdit(placeholderText="Ask the model…")
        self.send_button = QPushButton("Send", enabled=False)
        row = QHBoxLayout()
        row.addWidget(self.prompt, 1)
        row.addWidget(self.send_button)
        for widget in (self.state_label, self.address_label, self.transcript):
            layout.addWidget(widget)
        layout.addLayout(row)
        self.telemetry = TelemetryModel(parent=self)
        self.telemetry.alert.connect(self._on_alert)
        self.monitor = MonitorPanel(self.telemetry)
        self.tabs = QTabWidget()
        self.tabs.addTab(chat, "Chat")
        self.tabs.addTab(self.monitor, "Monitor")
        self.setCentralWidget(self.tabs)
        self.telemetry.start()
        self.send_button.clicked.connect(self.send)
        self.prompt.returnPressed.connect(self.send)
        self.statusBar().showMessage("DeepSeek Desktop")

    def _attach(self, url: str, api_key: str) -> None:
        self.client = EngineClient(url, api_key, self)
        self.telemetry.attach(url, api_key, self.engine.pid() if self.engine is not None else None)
        self.address_label.setText(f"engine at {url}   API key: {api_key}")
        self._health_timer.start()
        self._poll_health()

    def _poll_health(self) -> None:
        self.client.health(self._on_health, lambda msg: self.state_label.setText(f"engine unreachable: {msg}"))

    def _on_health(self, body: dict) -> None:
        state = body.get("state")
        detail = self.model_id if state == "ready" and self.model_id else body.get("reason")
        self.state_label.setText(f"engine: {state} — {detail}")
        ready = body.get("status") == "ok"
        self.send_button.setEnabled(ready)
        if ready and self.model_id is None:
            self._fetch_model_id()

    def _fetch_model_id(self) -> None:
        def on_models(body: dict) -> None:
            self.model_id = (body.get("data") or [{}])[0].get("id")
        self.client.models(on_models, lambda msg: self.statusBar().showMessage(msg))

    def send(self) -> None:
        text = self.prompt.text().strip()
        if not text or self.client is None or not self.model_id:
            return
        self.prompt.clear()
        self.send_button.setEnabled(False)
        self.transcript.appendPlainText(f"\nYou: {text}\nModel: ")
        self.client.chat_stream(self.model_id, [{"role": "user", "content": text}], on_chunk=self._append,
                                on_done=lambda _: self.send_button.setEnabled(True),
                                on_failed=self._on_chat_failed)

    def _append(self, piece: str) -> None:
        cursor = self.transcript.textCursor()
        cursor.movePosition(cursor.MoveOperation.End)
        cursor.insertText(piece)
        self.transcript.setTextCursor(cursor)

    def _on_chat_failed(self, message: str) -> None:
        self.statusBar().showMessage(f"chat failed: {message}")
        self._append(f"[error: {message}]")
        self.send_button.setEnabled(True)

    def _on_engine_finished(self, why: str) -> None:
        self._health_timer.stop()  # else the next poll would replace the reason with "unreachable"
        self.state_label.setText("engine stopped")
        self.statusBar().showMessage(why.splitlines()[0])
        self.send_button.setEnabled(False)

    def _on_alert(self, message: str, since: float) -> None:
        import time

        self.statusBar().showMessage(f"alert since {time.strftime('%H:%M:%S', time.localtime(since))}: {message}")

    def closeEvent(self, event) -> None:
        self._health_timer.stop()
        self.telemetry.stop()
        if self.engine is not None:
            self.engine.stop()
        super().closeEvent(event)


def _demo_model_path() -> Optional[str]:
    """Fetch the demo model if absent (in a child process: the fetch needs torch)."""
    from engine.paths import demo_model_dir, is_model_folder

    if is_model_folder(demo_model_dir()):
        return str(demo_model_dir())
    print("fetching the demo model (first run)…", file=sys.stderr)
    result = subprocess.run([sys.executable, "-m", "engine", "fetch-demo"], stdout=subprocess.PIPE, text=True)
    if result.returncode != 0:
        return None
    return result.stdout.strip().splitlines()[-1]


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="deepseek-desktop")
    parser.add_argument("--model", help="model folder to load at start")
    parser.add_argument("--demo", action="store_true", help="load the demo model (fetched if absent)")
    parser.add_argument("--engine-url", help="attach to an engine already running")
    parser.add_argument("--api-key", help="its API key")
    parser.add_argument("--panel", choices=["chat", "monitor"], default="chat", help="the panel to open on")
    args = parser.parse_args(argv)
    model = _demo_model_path() if args.demo and not args.model else args.model
    app = QApplication(sys.argv[:1])
    engine = None
    if not args.engine_url:
        engine = EngineProcess(model)
        engine.start()
    window = MainWindow(engine, args.engine_url, args.api_key)
    window.tabs.setCurrentIndex(["chat", "monitor"].index(args.panel))
    window.show()
    code = app.exec()
    if engine is not None:
        engine.stop()
    window.telemetry.stop()
    exit_now(code)


def exit_now(code: int) -> None:
    """Leave without Python's interpreter teardown. With several pyqtgraph plots alive, the
    garbage collector's order of destruction at exit crashes PySide 6.12 ("bool_dealloc",
    pyqtgraph issue #55 and kin); everything worth saving is saved before this point."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    main()
