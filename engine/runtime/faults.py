"""Where the runtime trips the faults ``DEEPSEEK_ENGINE_FAULTS`` names (tests only; off otherwise)."""

from __future__ import annotations

import torch

from engine.requests import GenerationRequest
from engine.faults import FAULTS


class InjectedFault(RuntimeError):
    """Raised where ``DEEPSEEK_ENGINE_FAULTS`` asks (tests only)."""


def inject_model_faults(requests: list[GenerationRequest]) -> None:
    """The faults of a model step shared by ``requests`` (off unless the variable is set)."""
    if not FAULTS.active:
        return
    sizes = [r.params.max_new_tokens for r in requests]
    if FAULTS.trip_any("oom", sizes):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory (injected fault: oom)")
    if FAULTS.trip_any("model_step", sizes):
        raise InjectedFault("injected fault: model_step")
