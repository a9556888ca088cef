"""Running the server process: bind, load the model in the background, watch the parent."""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import socket
import sys
import threading
import time

import uvicorn

from engine.config import EngineConfig
from engine.core import Engine
from engine.logs import configure_logging

log = logging.getLogger("engine")


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    # Listen now, not when uvicorn starts: a client told the port by the "listening" log line
    # must queue, not be refused, during the second or so before the server accepts.
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def _load_at_start(engine: Engine) -> None:
    """Start loading the configured model; failures are logged and shown by /health."""
    from engine.core import ModelProblem

    try:
        engine.start_load()
    except ModelProblem:
        pass  # already logged, published and reflected in the state


PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def die_with_parent() -> bool:
    """Linux: ask the kernel for SIGTERM when our parent dies (PR_SET_PDEATHSIG), at once and
    even while Python is busy; the watch thread below stays as the portable fallback."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


M_ARENA_MAX = -8  # <malloc.h>


def one_malloc_arena() -> bool:
    """glibc: every thread allocates from the main arena (unless MALLOC_ARENA_MAX says otherwise).

    Why: tensors made on other threads (transformers' loading pool, the scheduler) live in
    per-thread arenas whose free top ``malloc_trim`` never gives back, so a cancelled or replaced
    model kept 30-100 MB of RSS; in the main arena ``release_memory`` returns all of it. Called
    before the server starts its threads: arenas made earlier stay as they are."""
    if not sys.platform.startswith("linux") or "MALLOC_ARENA_MAX" in os.environ:
        return False
    try:
        return ctypes.CDLL(None).mallopt(M_ARENA_MAX, 1) == 1
    except (OSError, AttributeError):  # not glibc
        return False


def _watch_parent(pid: int) -> None:
    """Exit when the desktop app that started us is gone, however it died (kill -9 included)."""
    import psutil

    is_our_parent = os.getppid() == pid
    if is_our_parent:
        die_with_parent()

    def gone() -> bool:
        if is_our_parent:  # reparented on its death: no race with the pid being reused
            return os.getppid() != pid
        try:
            return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
        except psutil.NoSuchProcess:
            return True

    def watch():
        # gone() never raises: an exception here would end the watch and leave us running.
        while not gone():
            time.sleep(1.0)
        log.warning("parent process %s is gone; exiting", pid, extra={"event": "parent_gone"})
        os._exit(0)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


class _Server(uvicorn.Server):
    """Ends the event streams when asked to exit, so shutdown need not wait them out."""

    def __init__(self, engine: Engine, config: uvicorn.Config):
        super().__init__(config)
        self.engine = engine

    def handle_exit(self, sig, frame) -> None:
        super().handle_exit(sig, frame)
        self.engine.events.close()


def run_server(config: EngineConfig) -> int:
    from engine.api import create_app

    one_malloc_arena()
    configure_logging(config.server.log_level)
    if config.server.parent_pid:
        _watch_parent(config.server.parent_pid)
    if not config.server.api_key and not config.server.keys:
        log.warning("no API key set: every client on %s may use this server", config.server.host)
    engine = Engine(config)
    service = _service(engine)
    if service is None:
        return 2
    app = create_app(engine, service)
    try:
        sock = _bind(config.server.host, config.server.port)
    except OSError as exc:
        log.error("cannot listen on %s:%s: %s", config.server.host, config.server.port, exc,
                  extra={"event": "bind_failed"})
        return 1
    # gRPC starts once HTTP has its port, and stops however serving ends; its line comes before
    # "listening", which clients wait for.
    grpc_server = _start_grpc(engine, service)
    if grpc_server is False:
        sock.close()
        return 1
    try:
        host, port = sock.getsockname()[:2]
        log.info("listening on http://%s:%s", host, port, extra={"event": "listening", "host": host, "port": port})
        if config.model.path:
            _load_at_start(engine)
        server = _Server(engine, uvicorn.Config(app, log_config=None, access_log=False,
                                                log_level=config.server.log_level, timeout_graceful_shutdown=5))
        server.run(sockets=[sock])
    finally:
        if grpc_server is not None:
            grpc_server.stop()
    return 0


def _service(engine: Engine):
    """Keys, rate limits and circuit breaker, shared by REST and gRPC; None when a key's
    variable is missing or the fault-injection variable cannot be read (both logged)."""
    from engine.config import ConfigError
    from engine.faults import FAULTS, FAULTS_ERROR, FaultSpecError
    from engine.service import Service

    try:
        if FAULTS_ERROR is not None:  # read once, when engine.faults was imported
            raise FAULTS_ERROR
        service = Service(engine.config.server, engine.metrics, engine.events)
    except (ConfigError, FaultSpecError) as exc:
        log.error("%s", exc, extra={"event": "config_error"})
        return None
    if FAULTS.active:
        log.warning("fault injection is on: %s (tests only)", FAULTS.describe(),
                    extra={"event": "faults", "faults": FAULTS.describe()})
    return service


def _start_grpc(engine: Engine, service):
    """deepseek.v1.Inference on ``[server] grpc_port`` (None: off; False: could not bind)."""
    server = engine.config.server
    if server.grpc_port is None:
        return None
    from engine.grpc.server import GrpcServer  # grpcio only when gRPC is on

    try:
        grpc_server = GrpcServer(engine, service, server.host, server.grpc_port).start()
    except (OSError, RuntimeError) as exc:
        log.error("cannot listen on %s:%s for gRPC: %s", server.host, server.grpc_port, exc,
                  extra={"event": "bind_failed", "protocol": "grpc"})
        return False
    log.info("gRPC listening on %s:%s", server.host, grpc_server.port,
             extra={"event": "grpc_listening", "host": server.host, "grpc_port": grpc_server.port})
    return grpc_server
