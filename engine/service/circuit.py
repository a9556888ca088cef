"""A circuit breaker over generation failures (torch-free).

    closed ──(failure_ratio of ≥ min_requests failed within window_s)──▶ open
    open ──(cooldown_s later, the next request is the probe)──▶ half_open
    half_open ──probe succeeds──▶ closed      half_open ──probe fails──▶ open

Only failures of generation itself count (an exception in the model step, out of memory, an
internal error); refusals, timeouts and cancels do not. While open, new requests are refused at
once with the time left and the reason, instead of queueing behind a failing model.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Callable, Optional

from engine.config import CircuitConfig

CLOSED, OPEN, HALF_OPEN = "closed", "open", "half_open"
STATES = (CLOSED, OPEN, HALF_OPEN)


class CircuitOpen(RuntimeError):
    """Refused at once: the circuit is open (or half-open with its probe in flight)."""

    def __init__(self, message: str, retry_after: float):
        super().__init__(message)
        self.retry_after = retry_after


@dataclass
class Ticket:
    """One admitted request; ``probe`` when it is the half-open circuit's test request."""

    probe: bool = False
    settled: bool = False


class CircuitBreaker:
    """Args:
        on_change: called with ``(state, reason)`` after every change of state (outside the lock).
    """

    def __init__(self, config: CircuitConfig, on_change: Callable[[str, str], None] = lambda state, reason: None,
                 clock: Callable[[], float] = time.monotonic):
        self.config = config
        self._on_change = on_change
        self._clock = clock
        self._lock = threading.Lock()
        self._outcomes: deque[tuple[float, bool]] = deque()  # (time, failed)
        self.state = CLOSED
        self.reason = ""
        self._opened_at = 0.0
        self._probing = False

    # ------------------------------------------------------------------ admission
    def admit(self) -> Ticket:
        """Raises:
            CircuitOpen: open, or half-open with the probe already let through.
        """
        changed = None
        with self._lock:
            if self.state == OPEN:
                left = self._opened_at + self.config.cooldown_s - self._clock()
                if left > 0:
                    raise CircuitOpen(f"circuit open: {self.reason}; retry in {left:.0f} s", left)
                self.state = HALF_OPEN
                changed = (HALF_OPEN, f"cool-down over; one probe request is let through ({self.reason})")
            if self.state == HALF_OPEN:
                if self._probing:
                    raise CircuitOpen(f"circuit half-open: a probe request is testing the engine ({self.reason})", 1.0)
                self._probing = True
                ticket = Ticket(probe=True)
            else:
                ticket = Ticket()
        if changed:
            self._on_change(*changed)
        return ticket

    def record(self, ticket: Ticket, failed: Optional[bool], detail: str = "") -> None:
        """A request's outcome: True failed, False succeeded, None neither (cancelled, timed out)."""
        if ticket.settled:
            return
        ticket.settled = True
        changed = None
        with self._lock:
            now = self._clock()
            if ticket.probe:
                self._probing = False
                if failed is True:
                    changed = self._open(now, f"the probe request failed: {detail}")
                elif failed is False:
                    self._outcomes.clear()
                    self.state, self.reason = CLOSED, ""
                    changed = (CLOSED, "the probe request succeeded")
            elif failed is not None and self.state == CLOSED:
                self._outcomes.append((now, failed))
                self._forget(now)
                total = len(self._outcomes)
                failures = sum(1 for _, f in self._outcomes if f)
                if total >= self.config.min_requests and failures / total >= self.config.failure_ratio:
                    changed = self._open(now, f"{failures} of the last {total} requests failed within "
                                              f"{self.config.window_s:g} s (latest: {detail})")
        if changed:
            self._on_change(*changed)

    def _open(self, now: float, reason: str) -> tuple[str, str]:
        self.state, self.reason, self._opened_at = OPEN, reason, now
        self._outcomes.clear()
        return OPEN, reason

    def _forget(self, now: float) -> None:
        while self._outcomes and self._outcomes[0][0] < now - self.config.window_s:
            self._outcomes.popleft()

    # ------------------------------------------------------------------ reading
    def health(self) -> Optional[str]:
        """Why the engine should not be called healthy now, or None while closed."""
        with self._lock:
            if self.state == OPEN:
                left = max(0.0, self._opened_at + self.config.cooldown_s - self._clock())
                return f"circuit open: {self.reason}; a probe is let through in {left:.0f} s"
            if self.state == HALF_OPEN:
                return f"circuit half-open: the next request probes the engine ({self.reason})"
            return None

    def describe(self) -> dict:
        with self._lock:
            self._forget(self._clock())
            return {"state": self.state, "reason": self.reason or None,
                    "recent_requests": len(self._outcomes),
                    "recent_failures": sum(1 for _, f in self._outcomes if f),
                    **self.config.model_dump()}

    def configure(self, config: CircuitConfig) -> None:
        with self._lock:
            self.config = config
