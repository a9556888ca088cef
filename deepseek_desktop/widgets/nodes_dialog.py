"""Engine → Several nodes (Ray)…: the path past one machine, as files and commands to run. The
model is exported for vLLM over N nodes × G GPUs (``export --format vllm --nodes N --gpus-per-node
G``: tensor parallel within a node, pipeline parallel across, Ray); the dialog shows the Ray
head/worker commands, the ``vllm serve`` line and the file, writes the file, and gives the command
that attaches the app to the head's API."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

from PySide6.QtGui import QFontDatabase, QGuiApplication
from PySide6.QtWidgets import (
    QDialog, QFormLayout, QHBoxLayout, QLabel, QLineEdit, QPlainTextEdit, QPushButton, QSpinBox, QVBoxLayout, QWidget,
)


def cluster_plan(model: str, nodes: int, gpus_per_node: int, head: str) -> tuple[str, str]:
    """(what to run where, the vllm.yaml text).

    Raises:
        engine.export.ExportError: no model, or a layout that makes no sense.
    """
    from engine.config import EngineConfig
    from engine.export import ExportSource, render

    source = ExportSource(config=EngineConfig.from_dict({"model": {"path": model, "device": "cuda"},
                                                          "server": {"host": "0.0.0.0", "port": 8000}}),
                          origin="the app (Engine → Several nodes)")
    rendered = render(source, "vllm", nodes=nodes, gpus_per_node=gpus_per_node)
    command = rendered.command.split("vllm serve ", 1)[0] + "vllm serve --config vllm.yaml"
    steps = [f"# {nodes} node(s) x {gpus_per_node} GPU(s): tensor parallel {gpus_per_node}, pipeline parallel {nodes}",
             f"# the model must be at {model} on every node; vllm.yaml on the head node"]
    if nodes > 1:
        steps += ["# on the head node:", "ray start --head --port 6379",
                  "# on each other node:", f"ray start --address {head}:6379"]
    steps += ["# on the head node:", f"VLLM_API_KEY=<key> {command}",
              "# then attach this app to the head's API:",
              f"deepseek-desktop --engine-url http://{head}:8000 --api-key <key>"]
    return "\n".join(steps), rendered.files["vllm.yaml"]


class NodesDialog(QDialog):
    def __init__(self, model: Optional[str] = None, parent: Optional[QWidget] = None):
        super().__init__(parent)
        self.setWindowTitle("Several nodes (Ray)")
        self.resize(900, 640)
        self.model = QLineEdit(model or "")
        self.nodes = QSpinBox(minimum=1, maximum=256, value=2)
        self.gpus = QSpinBox(minimum=1, maximum=16, value=8)
        self.head = QLineEdit("HEAD_IP")
        self.out = QLineEdit(str(Path.cwd() / "vllm.yaml"))
        form = QFormLayout()
        for label, widget in (("Model path (on every node)", self.model), ("Nodes", self.nodes),
                              ("GPUs per node", self.gpus), ("Head node address", self.head), ("Write to", self.out)):
            form.addRow(label, widget)
        self.commands = QPlainTextEdit(readOnly=True)
        self.file = QPlainTextEdit(readOnly=True)
        for box in (self.commands, self.file):
            box.setFont(QFontDatabase.systemFont(QFontDatabase.SystemFont.FixedFont))
        self.message = QLabel("")
        self.message.setWordWrap(True)
        self.show_button = QPushButton("Show", clicked=self.refresh)
        self.write_button = QPushButton("Write vllm.yaml", clicked=self.write)
        self.copy_button = QPushButton("Copy commands",
                                       clicked=lambda: QGuiApplication.clipboard().setText(self.commands.toPlainText()))
        buttons = QHBoxLayout()
        for button in (self.show_button, self.write_button, self.copy_button):
            buttons.addWidget(button)
        buttons.addStretch(1)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addLayout(buttons)
        layout.addWidget(self.message)
        layout.addWidget(QLabel("Commands"))
        layout.addWidget(self.commands, 1)
        layout.addWidget(QLabel("vllm.yaml"))
        layout.addWidget(self.file, 2)
        self._yaml = ""
        if model:
            self.refresh()

    def refresh(self) -> bool:
        from engine.export import ExportError

        try:
            steps, self._yaml = cluster_plan(self.model.text().strip(), self.nodes.value(), self.gpus.value(),
                                             self.head.text().strip() or "HEAD_IP")
        except ExportError as exc:
            self.message.setText(str(exc))
            self._yaml = ""
            return False
        self.message.setText("")
        self.commands.setPlainText(steps)
        self.file.setPlainText(self._yaml)
        return True

    def write(self) -> None:
        from engine.export import ExportError
        from engine.export.common import write_file

        if not self.refresh():
            return
        try:
            path = write_file(Path(self.out.text()).expanduser(), self._yaml)
        except ExportError as exc:
            self.message.setText(str(exc))
            return
        self.message.setText(f"wrote {path}: copy it to the head node")
