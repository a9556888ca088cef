"""The rate limiter's table of subjects (torch-free, a fake clock)."""

from engine.config import RateLimit
from engine.service.ratelimit import SWEEP_EVERY, RateLimiter


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_subjects_whose_buckets_refilled_are_forgotten():
    clock = Clock()
    limiter = RateLimiter(RateLimit(requests_per_s=1, burst=2), clock=clock)
    for n in range(3 * SWEEP_EVERY):  # one request from each of many addresses, a second apart
        assert limiter.admit(f"address:10.0.{n // 256}.{n % 256}", "anonymous", None).allowed
        clock.now += 1.0
    # A bucket refills one request in a second: only the last address still has one missing.
    assert len(limiter._subjects) < SWEEP_EVERY


def test_a_subject_still_refilling_keeps_its_bucket():
    clock = Clock()
    limiter = RateLimiter(RateLimit(requests_per_s=0.001, burst=1), clock=clock)
    assert limiter.admit("address:busy", "anonymous", None).allowed
    for n in range(SWEEP_EVERY):
        limiter.admit(f"address:other-{n}", "anonymous", None)
    assert not limiter.admit("address:busy", "anonymous", None).allowed


def test_tokens_of_a_request_that_outlived_a_sweep_still_count():
    clock = Clock()
    limiter = RateLimiter(RateLimit(requests_per_s=1, burst=1, tokens_per_min=60), clock=clock)
    assert limiter.admit("app", "app", None).allowed
    clock.now += 10.0  # the request runs; its request bucket refills meanwhile
    for n in range(SWEEP_EVERY):
        limiter.admit(f"address:other-{n}", "anonymous", None)
    limiter.charge("app", None, 60)
    assert not limiter.admit("app", "app", None).allowed
