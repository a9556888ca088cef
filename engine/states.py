"""The one list of states, shared by the engine, its server, the app's process owner and the window.

Torch-free and pydantic-free, so the app may import it at start-up. Both enums subclass ``str``:
a state compares equal to its wire spelling (``ModelState.READY == "ready"``) and serialises as
that string in JSON events and ``/health`` bodies, which other clients already read.
"""

from __future__ import annotations

from enum import Enum


class ModelState(str, Enum):
    """Where the worker's model is: the ``state`` of ``/health``, ``/admin/status`` and events."""

    IDLE = "idle"            # no model
    LOADING = "loading"      # a load runs (a model loaded before may still serve beside it)
    READY = "ready"          # a model serves
    UNLOADING = "unloading"
    ERROR = "error"          # the last load failed and no model serves

    def __str__(self) -> str:  # f-strings and logs show "ready", not "ModelState.READY"
        return self.value


class ProcessState(str, Enum):
    """Where a child server the app owns is (the built-in worker; later vLLM)."""

    STARTING = "starting"
    RUNNING = "running"
    CRASHED = "crashed"      # died unasked; a restart may be scheduled
    FAILED = "failed"        # gave up: a usage error, or too many crashes in a row
    STOPPED = "stopped"

    def __str__(self) -> str:
        return self.value


class ConnectionState(str, Enum):
    """States only the app's session knows, besides the model's and the process's."""

    NO_ENGINE = "no engine"      # the app neither started a worker nor was given a URL
    CONNECTING = "connecting"    # attached by URL, no answer yet
    UNREACHABLE = "unreachable"  # an attached server that does not answer

    def __str__(self) -> str:
        return self.value
