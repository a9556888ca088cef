"""Fault injection for tests: failures called up by name, off unless the environment asks.

``DEEPSEEK_ENGINE_FAULTS`` holds comma-separated ``STEP:RATE[:TIMES][@max_tokens=N|@file=NAME]``:

- ``model_step``: the model's forward pass (a batch's prefill or decode step, or ``generate``)
  raises, failing every request of that batch;
- ``oom``: the same step raises CUDA's out-of-memory error (the batch limit is lowered);
- ``sample``: one request's sampling raises (that request alone fails);
- ``extract_crash``: a search indexing helper process dies (exits at once) as it starts on a
  file, as a crashing document parser would (engine.search.prepare).

``RATE`` is the probability per step (0–1), ``TIMES`` stops the fault after that many trips, and
``@max_tokens=N`` limits it to requests asking for exactly N tokens (so a test can aim at one
request among several); ``@file=NAME`` limits it to files of that name. A configuration file cannot set it (``EngineConfig`` refuses).
"""

from __future__ import annotations

import os
import random
import threading
from dataclasses import dataclass
from typing import Optional

from engine.config import FAULTS_ENV

STEPS = ("model_step", "oom", "sample", "extract_crash")


class FaultSpecError(ValueError):
    """The variable's value cannot be read; the message shows the expected form."""


@dataclass
class Fault:
    step: str
    rate: float
    times: Optional[int] = None
    max_tokens: Optional[int] = None
    file: Optional[str] = None
    tripped: int = 0


class FaultInjector:
    def __init__(self, faults: list[Fault], seed: Optional[int] = None):
        self._faults = {fault.step: fault for fault in faults}
        self._random = random.Random(seed)
        self._lock = threading.Lock()

    @classmethod
    def parse(cls, text: str) -> "FaultInjector":
        """Raises:
            FaultSpecError: a step, rate or option that is not understood.
        """
        faults = []
        for item in filter(None, (part.strip() for part in text.split(","))):
            spec, _, scope = item.partition("@")
            parts = spec.split(":")
            if len(parts) not in (2, 3) or parts[0] not in STEPS:
                raise FaultSpecError(f"{FAULTS_ENV}: {item!r}: expected STEP:RATE[:TIMES][@max_tokens=N|@file=NAME] "
                                     f"with STEP one of {', '.join(STEPS)}")
            try:
                rate = float(parts[1])
                times = int(parts[2]) if len(parts) == 3 else None
                max_tokens = int(scope.removeprefix("max_tokens=")) if scope.startswith("max_tokens=") else None
            except ValueError:
                raise FaultSpecError(f"{FAULTS_ENV}: {item!r}: RATE is a number 0–1, TIMES and N whole numbers") from None
            file = scope.removeprefix("file=") if scope.startswith("file=") else None
            if not 0 <= rate <= 1 or (scope and max_tokens is None and not file):
                raise FaultSpecError(f"{FAULTS_ENV}: {item!r}: RATE must be 0–1; the scopes are @max_tokens=N "
                                     "and @file=NAME")
            faults.append(Fault(parts[0], rate, times, max_tokens, file))
        return cls(faults)

    @classmethod
    def from_env(cls) -> "FaultInjector":
        return cls.parse(os.environ.get(FAULTS_ENV, ""))

    @property
    def active(self) -> bool:
        return bool(self._faults)

    def describe(self) -> str:
        return ", ".join(f"{f.step}:{f.rate:g}" + (f":{f.times}" if f.times is not None else "")
                         + (f"@max_tokens={f.max_tokens}" if f.max_tokens is not None else "")
                         + (f"@file={f.file}" if f.file else "")
                         for f in self._faults.values())

    def trip(self, step: str, max_tokens: Optional[int] = None, file: Optional[str] = None) -> bool:
        """True when the fault named ``step`` fires now (never when none is set)."""
        fault = self._faults.get(step)
        if fault is None:
            return False
        with self._lock:
            if fault.times is not None and fault.tripped >= fault.times:
                return False
            if fault.max_tokens is not None and fault.max_tokens != max_tokens:
                return False
            if fault.file is not None and fault.file != file:
                return False
            if fault.rate < 1 and self._random.random() >= fault.rate:
                return False
            fault.tripped += 1
            return True

    def trip_any(self, step: str, max_tokens_of_rows: list[int]) -> bool:
        """For a step shared by several requests (a batch's forward pass): fires when it would
        for any of them."""
        if step not in self._faults:
            return False
        if self._faults[step].max_tokens is None:
            return self.trip(step)
        return any(self.trip(step, n) for n in max_tokens_of_rows)


def _from_env() -> tuple[FaultInjector, Optional[FaultSpecError]]:
    try:
        return FaultInjector.from_env(), None
    except FaultSpecError as exc:
        return FaultInjector([]), exc


# The worker's injector, read once at import; empty (every ``trip`` False) unless the variable is
# set. A value that cannot be read leaves it empty and its error in FAULTS_ERROR, with which
# serve refuses to start (engine.serve).
FAULTS, FAULTS_ERROR = _from_env()
