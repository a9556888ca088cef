"""What the torch-free engine knows of the torch side: the model it serves and the scheduler that
runs generations on it, as Protocols (no torch, no import of ``engine.runtime``).

``engine.core`` and ``engine.lifecycle`` hold these types; ``engine.runtime`` implements them
(``LoadedModel``; ``SequentialGenerator``, ``DynamicBatcher``, ``ContinuousGenerator``). A
scheduler for another backend only has to match ``Scheduler`` to serve behind the same routes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional, Protocol, runtime_checkable

from engine.requests import GenerationRequest


@runtime_checkable
class ServedModel(Protocol):
    """A loaded model with its tokenizer (``engine.runtime.loader.LoadedModel``)."""

    name: str                       # the id clients send as ``model``
    path: Path
    device: Any                     # torch.device; ``str()`` of it names it ("cpu", "cuda:0")
    dtype: Any                      # torch.dtype
    context_length: int
    tokenizer: Any                  # a transformers tokenizer

    @property
    def has_chat_template(self) -> bool: ...

    @property
    def weights_bytes(self) -> int: ...

    def device_memory_bytes(self) -> float: ...


@runtime_checkable
class Scheduler(Protocol):
    """Runs the generations of one served model on a thread of its own.

    Its events reach each request's ``sink`` on that thread; requests already queued when it is
    replaced (a run-time settings change, a new model) finish under it.
    """

    mode: str                       # sequential | dynamic | continuous: the mode actually serving
    warning: Optional[str]          # why it serves instead of the mode asked for, or None

    @property
    def alive(self) -> bool:
        """False once its generation loop has died (health reports it)."""
        ...

    def submit(self, request: GenerationRequest) -> None:
        """Queue a request.

        Raises:
            engine.requests.QueueFullError: too many requests are waiting.
            engine.requests.UnsupportedInMode: the mode cannot honour the request's parameters.
        """
        ...

    def submit_group(self, requests: list[GenerationRequest]) -> None:
        """Queue the choices of one request (``n``) together; raises as ``submit`` (and
        ``engine.requests.InvalidConstraint`` for a schema that does not compile)."""
        ...

    def stop(self, join: bool = True, timeout: float = 5.0) -> None:
        """Take no new requests; with ``join``, wait up to ``timeout`` for the loop to end."""
        ...

    def kv_cache_bytes(self) -> float:
        """Bytes of KV cache held on the model's device now (for ``/metrics``)."""
        ...
