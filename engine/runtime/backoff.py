"""The batch limit after an out-of-memory failure (torch-free; the schedulers hold one).

Out of memory during a batch fails that batch's requests and halves the number of requests
decoded together (at least 1) for ``OOM_BACKOFF_S`` seconds; another OOM meanwhile halves it
again and restarts the clock. ``GET /admin/status`` shows it (``batch_limit``).
"""

from __future__ import annotations

import threading
import time
from typing import Callable, Optional

OOM_BACKOFF_S = 60.0


class BatchLimit:
    def __init__(self, configured: int, clock: Callable[[], float] = time.monotonic,
                 backoff_s: float = OOM_BACKOFF_S):
        self.configured = configured
        self.backoff_s = backoff_s
        self._clock = clock
        self._lock = threading.Lock()
        self._lowered: Optional[int] = None
        self._until = 0.0
        self.reason: Optional[str] = None

    def current(self) -> int:
        with self._lock:
            if self._lowered is not None and self._clock() >= self._until:
                self._lowered, self.reason = None, None
            return self._lowered if self._lowered is not None else self.configured

    def lower(self, failed_batch: int, reason: str) -> int:
        """Halve the limit below the batch that failed; returns the new limit."""
        base = min(self.current(), max(1, failed_batch))
        with self._lock:
            self._lowered = max(1, base // 2)
            self._until = self._clock() + self.backoff_s
            self.reason = reason
            return self._lowered

    def describe(self) -> dict:
        current = self.current()
        with self._lock:
            left = max(0.0, self._until - self._clock()) if self._lowered is not None else None
            return {"configured": self.configured, "current": current,
                    "lowered_for_s": None if left is None else round(left, 1), "reason": self.reason}
