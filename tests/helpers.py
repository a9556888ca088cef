"""A real engine server in a subprocess, for tests and benchmarks."""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator, Optional, Sequence

import httpx

ROOT = Path(__file__).resolve().parent.parent


class EngineServer:
    """``python -m engine serve`` on a free port; stderr JSON lines are kept in ``lines``."""

    def __init__(self, model: Optional[Path] = None, api_key: Optional[str] = "test-key",
                 extra_args: Sequence[str] = (), env: Optional[dict] = None, config: Optional[str] = None):
        """``config``: the text of an engine TOML, written to a temporary file and passed as --config."""
        self.model, self.api_key = model, api_key
        self.extra_args = list(extra_args)
        if config is not None:
            path = Path(tempfile.mkdtemp(prefix="engine-config-")) / "engine.toml"
            path.write_text(config)
            self.extra_args += ["--config", str(path)]
        # Each server gets its own cache folder (prefix KV disk tier) unless the test shares one.
        self.env = {**os.environ, "PYTHONUNBUFFERED": "1",
                    "DEEPSEEK_DESKTOP_CACHE": tempfile.mkdtemp(prefix="engine-cache-"), **(env or {})}
        self.lines: list[str] = []
        self.port: Optional[int] = None
        self.proc: Optional[subprocess.Popen] = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def headers(self) -> dict:
        return {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}

    def command(self) -> list[str]:
        cmd = [sys.executable, "-m", "engine", "serve", "--port", "0"]
        if self.model:
            cmd += ["--model", str(self.model)]
        if self.api_key:
            cmd += ["--api-key", self.api_key]
        return cmd + self.extra_args

    def start(self, wait_ready: bool = True, timeout: float = 180) -> "EngineServer":
        self.proc = subprocess.Popen(self.command(), cwd=ROOT, env=self.env, stdin=subprocess.DEVNULL,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        threading.Thread(target=self._read_stderr, daemon=True).start()
        deadline = time.monotonic() + timeout
        while self.port is None:
            self._check_alive()
            if time.monotonic() > deadline:
                raise TimeoutError("engine did not start listening:\n" + "\n".join(self.lines[-20:]))
            time.sleep(0.05)
        if wait_ready:
            self.wait_health(200, deadline - time.monotonic())
        return self

    def _read_stderr(self) -> None:
        for line in self.proc.stderr:
            self.lines.append(line.rstrip("\n"))
            entry = _parse(line)
            if entry and entry.get("event") == "listening":
                self.port = entry["port"]

    def _check_alive(self) -> None:
        if self.proc.poll() is not None:
            time.sleep(0.2)
            raise RuntimeError(f"engine exited with {self.proc.returncode}:\n" + "\n".join(self.lines[-20:]))

    def wait_health(self, status: int = 200, timeout: float = 180) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            self._check_alive()
            try:
                r = httpx.get(self.url + "/health", timeout=5)
                if r.status_code == status:
                    return r.json()
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"/health never answered {status}:\n" + "\n".join(self.lines[-20:]))
            time.sleep(0.1)

    def logs(self) -> list[dict]:
        return [entry for entry in map(_parse, list(self.lines)) if entry]

    @property
    def grpc_port(self) -> int:
        """The port of the gRPC server (``[server] grpc_port = 0`` picks one; its log line names it)."""
        return next(e["grpc_port"] for e in self.logs() if e.get("event") == "grpc_listening")

    def metric(self, name: str, labels: Optional[dict] = None) -> float:
        from prometheus_client.parser import text_string_to_metric_families

        text = httpx.get(self.url + "/metrics", headers=self.headers, timeout=10).text
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name == name and all(sample.labels.get(k) == v for k, v in (labels or {}).items()):
                    return sample.value
        raise KeyError(name)

    def runtime_config(self) -> dict:
        """The run-time sections of ``GET /admin/config``: what a sweep changes and puts back."""
        from engine import tuning

        body = httpx.get(self.url + "/admin/config", headers=self.headers, timeout=10).json()
        return {section: body[section] for section in tuning.RUNTIME_SECTIONS}

    def events(self, timeout: float = 300):
        """The ``/admin/events`` stream (a context manager)."""
        return httpx.stream("GET", self.url + "/admin/events", headers=self.headers, timeout=timeout)

    def load_and_wait(self, path: Path, **options) -> list[dict]:
        """POST /admin/load and read the events until the load ends, the current state first
        (the stream is opened before the load, so no event is missed)."""
        with self.events() as stream:
            lines = stream.iter_lines()
            first = json.loads(next(line for line in lines if line.startswith("data: "))[6:])
            r = self.post("/admin/load", {"path": str(path), **options})
            assert r.status_code == 202, r.text
            return [first] + read_events(lines, lambda e: e["type"] == "state" and e["state"] in ("ready", "error", "idle"))

    def post(self, path: str, body: Optional[dict] = None, timeout: float = 120) -> httpx.Response:
        """POST ``body`` as JSON with this server's key (a load may take a while: 120 s)."""
        return httpx.post(self.url + path, headers=self.headers, json=body, timeout=timeout)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def __enter__(self):
        return self if self.proc is not None else self.start()

    def __exit__(self, *exc):
        self.stop()


@contextmanager
def engine_without_model() -> Iterator[EngineServer]:
    """An engine started with no model (``/health`` 503), for tests that load into it."""
    server = EngineServer(None).start(wait_ready=False)
    try:
        server.wait_health(503, 60)
        yield server
    finally:
        server.stop()


def wait_until(predicate: Callable[[], object], timeout: float = 10.0, every: float = 0.05) -> bool:
    """Whether ``predicate()`` became true within ``timeout`` seconds (asked every ``every``)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(every)
    return False


def read_events(response, until, limit: int = 10000) -> list[dict]:
    """Read SSE events from an /admin/events response (or the iterator of its lines a caller
    already started) until ``until(event)`` is true."""
    events = []
    for line in response.iter_lines() if hasattr(response, "iter_lines") else response:
        if line.startswith("data: "):
            events.append(json.loads(line[6:]))
            if until(events[-1]) or len(events) >= limit:
                return events
    return events


def fetch_demo(base: Path, env: Optional[dict] = None, timeout: float = 600) -> subprocess.CompletedProcess:
    """``python -m engine fetch-demo --dir base``, its output captured."""
    return subprocess.run([sys.executable, "-m", "engine", "fetch-demo", "--dir", str(base)], cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout, env={**os.environ, **(env or {})})


def demo_model() -> Path:
    """The demo model's folder, fetched (and converted) if absent."""
    out = subprocess.run([sys.executable, "-m", "engine", "fetch-demo"], cwd=ROOT, check=True,
                         stdout=subprocess.PIPE, text=True).stdout
    return Path(out.strip().splitlines()[-1])


class GreedyReference:
    """What transformers' own ``model.generate`` answers, greedily, for one prompt alone; each
    model loaded once and each answer remembered: the batching and generation tests ask for the
    same answers in many cases (the ``greedy_reference`` fixture keeps one for the session)."""

    def __init__(self):
        self._models: dict[str, tuple] = {}
        self._answers: dict[tuple, str] = {}

    def __call__(self, model_dir, prompt: str, max_new_tokens: int) -> str:
        key = (str(model_dir), prompt, max_new_tokens)
        if key not in self._answers:
            self._answers[key] = self._generate(*key)
        return self._answers[key]

    def _generate(self, model_dir: str, prompt: str, max_new_tokens: int) -> str:
        import torch

        tokenizer, model = self._load(model_dir)
        inputs = tokenizer(prompt, return_tensors="pt")
        with torch.inference_mode():
            out = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False)
        return tokenizer.decode(out[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True)

    def _load(self, model_dir: str) -> tuple:
        if model_dir not in self._models:
            import torch
            from transformers import AutoModelForCausalLM, AutoTokenizer

            self._models[model_dir] = (AutoTokenizer.from_pretrained(model_dir),
                                       AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32))
        return self._models[model_dir]


class WorkerPool:
    """Engine servers kept running for the session, one per (model, arguments): tests that only
    send requests and read what they answer share one instead of each starting its own (a start
    imports torch and loads the model: seconds on a small machine)."""

    def __init__(self):
        self._servers: dict[tuple, EngineServer] = {}

    def get(self, model: Path, *args: str) -> EngineServer:
        key = (str(model), *args)
        server = self._servers.get(key)
        if server is None or server.proc.poll() is not None:
            self._servers[key] = server = EngineServer(model, extra_args=args).start()
        return server

    def stop_where(self, unwanted: Callable[[Path, tuple[str, ...]], bool]) -> None:
        """Stop early the servers no later test asks for (each holds a few hundred MB):
        ``unwanted(model, args)`` picks them by model folder and arguments."""
        for key in [key for key in self._servers if unwanted(Path(key[0]), key[1:])]:
            self._servers.pop(key).stop()

    def stop_all(self) -> None:
        for server in self._servers.values():
            server.stop()
        self._servers.clear()


def _parse(line: str) -> Optional[dict]:
    line = line.strip()
    if not line.startswith("{"):
        return None
    try:
        return json.loads(line)
    except json.JSONDecodeError:
        return None
