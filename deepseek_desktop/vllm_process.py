"""VllmProcess: vLLM's OpenAI server as the app's engine, through the worker's life (``EngineProcess``):
a free port, a random key (``VLLM_API_KEY``), its output in the Logs, killed with the app, a crash
reported with the tail of its output and restarted with back-off, a bad flag not restarted.

vLLM runs from its own Python environment (it pins its own transformers): the ``engine/vllm_python``
setting, else ``DEEPSEEK_VLLM_PYTHON``, else ``.venv-vllm`` beside the sources (``make vllm``), else
the ``python`` next to a ``vllm`` on PATH. Whichever build is installed there runs: the CPU build
here, the CUDA build on a GPU machine. It is started with the configuration ``export --format vllm``
writes (``--config FILE``), so what the app runs is what the export gives to a server elsewhere.

vLLM serves the one model it was started with and has no ``/admin`` API: loading another model
restarts it on that model (``serve_model``).
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import sys
from pathlib import Path
from typing import Any, Optional

from PySide6.QtCore import QObject

from deepseek_desktop.engine_process import EngineProcess
from deepseek_desktop.state.settings import read_json
from engine.states import ProcessState

SOURCE_ROOT = Path(__file__).resolve().parent.parent
VLLM_PYTHON_ENV = "DEEPSEEK_VLLM_PYTHON"
VLLM_ARGS_KEY, VLLM_PYTHON_KEY = "engine/vllm_args", "engine/vllm_python"
# uvicorn says this once vLLM's API answers (its socket was bound before the model was loaded).
READY_LINE = "Application startup complete"
# Run by vLLM's Python: die with the app (Linux: the kernel sends SIGTERM when the app's process
# ends, even by kill -9), lead a process group of its own (vLLM's engine core and workers join it:
# when the server itself is killed they are orphans the app then ends), then become
# ``python -m vllm.entrypoints.openai.api_server ARGS``.
LAUNCHER = """\
import os, runpy, signal, sys
parent = int(sys.argv[1])
os.setpgid(0, 0)
try:
    import ctypes
    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
except (OSError, AttributeError):
    pass
if os.getppid() != parent:
    sys.exit("the app that started vLLM has gone")
sys.argv = ["vllm-api-server", *sys.argv[2:]]
runpy.run_module("vllm.entrypoints.openai.api_server", run_name="__main__", alter_sys=True)
"""


def find_vllm_python() -> Optional[str]:
    """The Python that has vLLM, or None (see the module's docstring for the order)."""
    configured = read_json(VLLM_PYTHON_KEY, None) or os.environ.get(VLLM_PYTHON_ENV)
    if configured:
        return str(configured)
    local = SOURCE_ROOT / ".venv-vllm" / "bin" / "python"
    if local.exists():
        return str(local)
    on_path = shutil.which("vllm")
    if on_path:
        python = Path(on_path).with_name("python")
        return str(python) if python.exists() else None
    return None


def free_port(host: str = "127.0.0.1") -> int:
    """A port free now. vLLM cannot bind port 0 and tell it, so the app picks one."""
    with socket.socket() as probe:
        probe.bind((host, 0))
        return probe.getsockname()[1]


class VllmProcess(EngineProcess):
    backend = "vllm"
    admin_api = False
    merge_output = True  # vLLM logs to stdout, uvicorn to stderr

    def __init__(self, model_path: Optional[str] = None, parent: Optional[QObject] = None, restart: bool = True,
                 extra_args: Optional[list[str]] = None, python: Optional[str] = None,
                 config: Optional[dict[str, Any]] = None):
        """
        Args:
            extra_args: vLLM flags after the exported configuration (they win): e.g.
                ``--tensor-parallel-size 2``, ``--enforce-eager``; default: the ``engine/vllm_args`` setting.
            python: vLLM's Python (default: ``find_vllm_python``).
            config: engine configuration tables (``{"model": {"max_context": 2048}}``) over the defaults.
        """
        if extra_args is None:
            extra_args = [str(a) for a in read_json(VLLM_ARGS_KEY, [])]
        super().__init__(model_path, parent, restart, extra_args)
        self.python = python or find_vllm_python()
        self.config = config or {}
        self.port: Optional[int] = None
        self.config_file: Optional[Path] = None
        self._group: Optional[int] = None  # the process group vLLM's processes share

    def start(self) -> None:
        super().start()
        if self.running():
            self._group = self.pid() or None

    def serve_model(self, path: str) -> None:
        """Serve ``path``: vLLM is (re)started on it."""
        self.model_path = path
        self.restart()

    # -- the launch
    def program(self) -> str:
        if not self.python:
            raise ValueError("vLLM is not installed: run 'make vllm' (its CPU build), install vLLM (the CUDA "
                             f"build on a GPU machine) and set {VLLM_PYTHON_ENV} to its python")
        return self.python

    def arguments(self) -> list[str]:
        if not self.model_path:
            raise ValueError("vLLM serves one model, chosen at its start: pick one in Models and press Load")
        args, self._env = self._exported()
        return ["-c", LAUNCHER, str(os.getpid()), "--config", str(self.config_file), *args, *self.extra_args]

    def environment(self) -> dict[str, str]:
        # The key is vLLM's own variable, never an argument (other local users can read those).
        return {**self._env, "VLLM_API_KEY": self.api_key, "PYTHONUNBUFFERED": "1"}

    def _exported(self) -> tuple[list[str], dict[str, str]]:
        """Export this launch as ``export --format vllm`` does; returns the flags that tie it to
        this app (host, port) and the environment the export asks for."""
        from engine.config import EngineConfig
        from engine.export import ExportSource, export
        from engine.paths import cache_dir
        from engine.telemetry.gpu import gpu_count

        self.port = free_port()
        gpu = gpu_count() > 0
        model = {"path": self.model_path, "served_model_name": Path(self.model_path).name,
                 "dtype": "auto" if gpu else "float32", **self.config.get("model", {})}
        # The CPU build gets no KV offloading to CPU memory (its KV cache is there already).
        cache = {**({} if gpu else {"memory_mb": 0, "disk_mb": 0}), **self.config.get("cache", {})}
        # log_level info: uvicorn's READY_LINE is an info line.
        tables = {**self.config, "model": model, "cache": cache, "server": {"host": "127.0.0.1", "port": self.port, "log_level": "info"}}
        folder = cache_dir() / "vllm"
        folder.mkdir(parents=True, exist_ok=True)
        self.config_file = folder / "vllm.yaml"
        result = export(ExportSource(config=EngineConfig.from_dict(tables), origin="the app's vLLM backend"),
                        "vllm", self.config_file, overwrite=True)
        env = dict(_export_env(result.command))
        return ["--host", "127.0.0.1", "--port", str(self.port)], env

    # -- what it says
    def _on_line(self, text: str) -> None:
        if self.url is None and READY_LINE in text and self.port is not None:
            self.url = f"http://127.0.0.1:{self.port}"
            self._set_state(ProcessState.RUNNING)
            self.listening.emit(self.url)
        if not _quiet_access(text):  # the app's own polling stays out of the Logs, as the worker's does
            self.log_line.emit(_log_entry(text))

    def _on_ended(self, outcome) -> None:
        self._end_group()
        super()._on_ended(outcome)

    def _end_group(self) -> None:
        """Kill what is left of vLLM's processes: after a clean stop nothing is; after a crash of
        the server its engine core and workers are (holding the model's memory, on a GPU its VRAM)."""
        group, self._group = self._group, None
        if group is None or os.name != "posix":
            return
        try:
            os.killpg(group, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass

    def stderr_tail(self, lines: int = 6) -> str:
        """vLLM's last lines, without the access lines of the app's own polling."""
        said = [text for text in self.tail if not _quiet_access(text)]
        return "\n".join(said[-lines:])


def _export_env(command: str):
    """``KEY=value`` words before ``vllm serve`` in the exported command (VLLM_CPU_KVCACHE_SPACE)."""
    import shlex

    for word in shlex.split(command):
        if word == "vllm":
            return
        key, _, value = word.partition("=")
        if key.isupper():
            yield key, value


# uvicorn's access line: INFO:     127.0.0.1:50422 - "GET /metrics HTTP/1.1" 200 OK
ACCESS_LINE = re.compile(r'"[A-Z]+ (?P<path>/[^ ?"]*)[^"]*" (?P<status>\d{3})')
QUIET = ("/health", "/metrics", "/v1/models")


def _quiet_access(text: str) -> bool:
    match = ACCESS_LINE.search(text)
    return bool(match) and match["path"] in QUIET and int(match["status"]) < 400


def _log_entry(text: str) -> dict:
    """One line of vLLM's output as the Logs take a worker's JSON line."""
    level = "info"
    for name in ("ERROR", "CRITICAL", "WARNING"):
        if f" {name} " in text or text.startswith(name):
            level = name.lower()
            break
    return {"level": level, "msg": text, "source": "vllm"}
