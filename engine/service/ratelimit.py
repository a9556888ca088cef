"""Token-bucket rate limits per key, or per client address where no key is configured (torch-free).

Each subject has a bucket of ``burst`` requests refilled at ``requests_per_s``, and, with
``tokens_per_min``, a second bucket of prompt + completion tokens refilled per minute. A request
takes one request token when it arrives; its model tokens are charged when it ends (a bucket may
go below zero then), and while the token bucket is empty new requests wait. Every answer carries
OpenAI's ``x-ratelimit-*`` headers; a refusal says how long to wait.
"""

from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Optional

from engine.config import RateLimit


class TokenBucket:
    def __init__(self, rate_per_s: float, capacity: float, now: float):
        self.rate, self.capacity = rate_per_s, capacity
        self.level, self.updated = capacity, now

    def refill(self, now: float) -> None:
        self.level = min(self.capacity, self.level + (now - self.updated) * self.rate)
        self.updated = now

    def wait_for(self, amount: float) -> float:
        """Seconds until ``amount`` is available (0: now)."""
        return max(0.0, (amount - self.level) / self.rate)

    def reset_s(self) -> float:
        """Seconds until the bucket is full again."""
        return max(0.0, (self.capacity - self.level) / self.rate)

    def full_at(self, now: float) -> bool:
        return self.level + (now - self.updated) * self.rate >= self.capacity


@dataclass
class Decision:
    allowed: bool
    headers: dict[str, str] = field(default_factory=dict)
    retry_after: Optional[float] = None  # seconds, when refused
    reason: str = ""


def format_reset(seconds: float) -> str:
    """OpenAI's spelling of a duration: ``20ms``, ``1.5s``, ``6m0s``."""
    if seconds < 1:
        return f"{max(0, math.ceil(seconds * 1000))}ms"
    minutes, rest = divmod(seconds, 60)
    rest_text = f"{rest:.3f}".rstrip("0").rstrip(".") + "s"
    return f"{int(minutes)}m{rest_text}" if minutes else rest_text


class _Subject:
    def __init__(self, limit: RateLimit, now: float):
        self.limit = limit
        self.requests = TokenBucket(limit.requests_per_s, limit.burst, now)
        self.tokens = TokenBucket(limit.tokens_per_min / 60.0, limit.tokens_per_min, now) if limit.tokens_per_min else None

    def full_at(self, now: float) -> bool:
        """Whether its buckets have refilled: it answers as a new subject would, so may be dropped."""
        return self.requests.full_at(now) and (self.tokens is None or self.tokens.full_at(now))


# Without keys every client address is a subject: every this many admits, those whose buckets
# have refilled are forgotten, so the table holds only the recently active.
SWEEP_EVERY = 1024


class RateLimiter:
    """Buckets per subject (a key's name, or ``address:…``), created on first use.

    Args:
        default: the limit of subjects without their own; None: no limit.
        on_refused: called with the subject's label for each refusal (the metric).
    """

    def __init__(self, default: Optional[RateLimit], on_refused: Callable[[str], None] = lambda label: None,
                 clock: Callable[[], float] = time.monotonic):
        self.default = default
        self._on_refused = on_refused
        self._clock = clock
        self._lock = threading.Lock()
        self._subjects: dict[str, _Subject] = {}
        self._admits = 0

    def configure(self, default: Optional[RateLimit]) -> None:
        """New limits from now on (``PUT /admin/config``): every bucket starts full again."""
        with self._lock:
            self.default = default
            self._subjects.clear()

    def admit(self, subject: str, label: str, own: Optional[RateLimit]) -> Decision:
        """Take one request token for ``subject``, or refuse with the time to wait."""
        limit = own or self.default
        if limit is None:
            return Decision(True)
        with self._lock:
            now = self._clock()
            self._admits += 1
            if self._admits % SWEEP_EVERY == 0:
                self._subjects = {name: s for name, s in self._subjects.items() if not s.full_at(now)}
            state = self._subjects.get(subject)
            if state is None or state.limit != limit:
                state = self._subjects[subject] = _Subject(limit, now)
            state.requests.refill(now)
            if state.tokens is not None:
                state.tokens.refill(now)
            waits = [state.requests.wait_for(1)]
            reasons = [f"{limit.requests_per_s:g} requests/s with bursts of {limit.burst}"]
            if state.tokens is not None:
                waits.append(state.tokens.wait_for(1))
                reasons.append(f"{limit.tokens_per_min} tokens/min")
            wait = max(waits)
            allowed = wait <= 0
            if allowed:
                state.requests.level -= 1
            headers = _headers(state)
        if not allowed:
            self._on_refused(label)
            which = reasons[0] if waits[0] > 0 else reasons[-1]
            return Decision(False, headers, wait, f"rate limit of {label!r} reached ({which}); "
                                                  f"retry in {wait:.1f} s")
        return Decision(True, headers)

    def charge(self, subject: str, own: Optional[RateLimit], tokens: int) -> None:
        """Count a finished request's prompt + completion tokens against its token bucket."""
        limit = own or self.default
        if limit is None or not limit.tokens_per_min or tokens <= 0:
            return
        with self._lock:
            now = self._clock()
            state = self._subjects.get(subject)
            if state is None:  # swept while its request ran: its buckets were full
                state = self._subjects[subject] = _Subject(limit, now)
            if state.tokens is not None:
                state.tokens.refill(now)
                state.tokens.level -= tokens


def _headers(state: _Subject) -> dict[str, str]:
    r = state.requests
    headers = {
        "x-ratelimit-limit-requests": str(state.limit.burst),
        "x-ratelimit-remaining-requests": str(max(0, math.floor(r.level))),
        "x-ratelimit-reset-requests": format_reset(r.reset_s()),
    }
    if state.tokens is not None:
        t = state.tokens
        headers.update({
            "x-ratelimit-limit-tokens": str(state.limit.tokens_per_min),
            "x-ratelimit-remaining-tokens": str(max(0, math.floor(t.level))),
            "x-ratelimit-reset-tokens": format_reset(t.reset_s()),
        })
    return headers
