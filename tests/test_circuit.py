"""The circuit breaker against a real worker whose model step fails on purpose
(``DEEPSEEK_ENGINE_FAULTS``): it opens at the threshold, refuses at once with Retry-After and the
reason, says so on /health, /metrics and /admin/events, lets one probe through after the
cool-down (a failing probe opens it again), and closes when a probe succeeds. Out of memory fails
its batch and lowers the batch limit, shown in /admin/status."""

from __future__ import annotations

import threading
import time

import httpx
import pytest

from engine.config import ConfigError, EngineConfig
from engine.service.circuit import CircuitBreaker, CircuitOpen
from engine.config import CircuitConfig
from engine.faults import FaultInjector, FaultSpecError
from helpers import EngineServer, read_events

COOLDOWN_S = 1.5
# Requests of 3 tokens meet the faults: the first runs out of memory, the next three fail in the
# model step (two more failures, then the first probe); requests of other lengths are left alone.
FAULTS = "oom:1.0:1@max_tokens=3,model_step:1.0:3@max_tokens=3"


@pytest.fixture(scope="module")
def faulty(llama_dir):
    config = (f"[server.circuit]\nmin_requests = 4\nfailure_ratio = 0.5\nwindow_s = 60\ncooldown_s = {COOLDOWN_S}\n")
    with EngineServer(llama_dir, config=config,
                      env={"DEEPSEEK_ENGINE_FAULTS": FAULTS}) as srv:
        yield srv


def complete(srv, max_tokens=3, **extra):
    return httpx.post(srv.url + "/v1/completions", headers=srv.headers, timeout=60,
                      json={"model": "tiny-llama", "prompt": "Hi", "max_tokens": max_tokens, **extra})


@pytest.mark.gui  # it builds a MainWindow
def test_opens_at_the_threshold_refuses_fast_probes_and_closes(faulty, qtbot):
    from deepseek_desktop.window import MainWindow

    # The app, attached to this worker: its status bar shows the circuit from /admin/events.
    window = MainWindow(url=faulty.url, api_key=faulty.api_key)
    qtbot.addWidget(window)
    circuit_label = window.statusBar().circuit_label
    qtbot.waitUntil(lambda: window.engine_state == "ready", timeout=30_000)
    collected: list[dict] = []
    following = threading.Event()  # set on the first event: the engine sends its state at once

    def until_closed(event: dict) -> bool:
        following.set()
        return event.get("type") == "circuit" and event.get("state") == "closed"

    def follow():
        with httpx.stream("GET", faulty.url + "/admin/events", headers=faulty.headers, timeout=60) as r:
            collected.extend(read_events(r, until_closed))

    follower = threading.Thread(target=follow, daemon=True)
    follower.start()
    assert following.wait(30), "the event stream never answered"
    assert any(e.get("event") == "faults" for e in faulty.logs())

    oom = complete(faulty)
    assert oom.status_code == 500 and "ran out of memory" in oom.json()["error"]["message"]
    limit = httpx.get(faulty.url + "/admin/status", headers=faulty.headers).json()["batch_limit"]
    assert limit["current"] < limit["configured"] and limit["lowered_for_s"] > 0
    assert f"at most {limit['current']} together (was {limit['configured']})" in oom.json()["error"]["message"]

    for _ in range(2):  # two more failures: 3 of 3, below min_requests
        r = complete(faulty)
        assert r.status_code == 500 and "injected fault: model_step" in r.json()["error"]["message"]
    assert complete(faulty, max_tokens=2).status_code == 200  # 3 of 4 failed: 75% >= 50%: open
    assert faulty.metric("engine_circuit_state", {"state": "open"}) == 1

    refused = complete(faulty, max_tokens=2)
    assert refused.status_code == 503
    assert refused.headers["retry-after"] in ("1", "2")
    assert refused.json()["error"]["code"] == "circuit_open"
    assert "circuit open: 3 of the last 4 requests failed" in refused.json()["error"]["message"]
    health = httpx.get(faulty.url + "/health")
    assert health.status_code == 503 and health.json()["reason"].startswith("circuit open: ")
    qtbot.waitUntil(lambda: circuit_label.text().startswith("circuit open — 3 of the last 4"), timeout=10_000)
    assert not circuit_label.isHidden()

    time.sleep(COOLDOWN_S + 0.1)
    probe = complete(faulty)  # the 4th model_step fault: the probe fails, the circuit opens again
    assert probe.status_code == 500
    assert complete(faulty).status_code == 503
    assert "the probe request failed" in httpx.get(faulty.url + "/health").json()["reason"]

    time.sleep(COOLDOWN_S + 0.1)
    with httpx.stream("POST", faulty.url + "/v1/completions", headers=faulty.headers, timeout=60,
                      json={"model": "tiny-llama", "prompt": "Hi", "max_tokens": 200, "ignore_eos": True,
                            "stream": True}) as slow_probe:
        lines = slow_probe.iter_lines()
        next(line for line in lines if line.startswith("data: "))
        beside = complete(faulty, max_tokens=2)  # while the probe runs, nothing else gets in
        assert beside.status_code == 503 and "circuit half-open" in beside.json()["error"]["message"]
        assert faulty.metric("engine_circuit_state", {"state": "half_open"}) == 1
        assert [line for line in lines if line][-1] == "data: [DONE]"
    assert complete(faulty).status_code == 200  # faults used up, circuit closed: 3 tokens pass
    assert httpx.get(faulty.url + "/health").status_code == 200
    assert faulty.metric("engine_circuit_state", {"state": "closed"}) == 1
    qtbot.waitUntil(circuit_label.isHidden, timeout=10_000)

    follower.join(10)
    states = [e["state"] for e in collected if e.get("type") == "circuit"]
    assert states == ["open", "half_open", "open", "half_open", "closed"]
    assert "3 of the last 4 requests failed" in next(e for e in collected if e.get("type") == "circuit")["reason"]


def test_fault_injection_is_refused_in_a_config_file_and_checked_in_the_variable(tmp_path):
    for text in ('[faults]\nmodel_step = 1.0\n', '[server]\nfaults = "model_step:1.0"\n'):
        path = tmp_path / "engine.toml"
        path.write_text(text)
        with pytest.raises(ConfigError, match="DEEPSEEK_ENGINE_FAULTS environment variable only"):
            EngineConfig.from_toml(path)
    with pytest.raises(FaultSpecError, match="STEP:RATE"):
        FaultInjector.parse("disk:1.0")
    assert not FaultInjector.parse("").active


def test_breaker_counts_only_the_window_and_ignores_neutral_outcomes():
    now = [0.0]
    breaker = CircuitBreaker(CircuitConfig(min_requests=4, failure_ratio=0.5, window_s=10, cooldown_s=5),
                             clock=lambda: now[0])
    for failed in (True, True, None, None, None):  # cancels and timeouts say nothing
        breaker.record(breaker.admit(), failed)
    breaker.record(breaker.admit(), False)
    now[0] = 11.0  # the two failures leave the window
    for failed in (False, False, True):
        breaker.record(breaker.admit(), failed)
    assert breaker.state == "closed"
    breaker.record(breaker.admit(), True)  # 2 of 4
    assert breaker.state == "open"
    with pytest.raises(CircuitOpen):
        breaker.admit()


def test_a_probe_that_ends_without_an_outcome_lets_the_next_one_through():
    """A probe cancelled while queued (its client left) settles as neither: the circuit stays
    half-open and lets the next request probe, instead of waiting for it forever."""
    now = [0.0]
    breaker = CircuitBreaker(CircuitConfig(min_requests=1, failure_ratio=0.5, window_s=10, cooldown_s=5),
                             clock=lambda: now[0])
    breaker.record(breaker.admit(), True)
    now[0] = 6.0
    probe = breaker.admit()
    assert probe.probe and breaker.state == "half_open"
    with pytest.raises(CircuitOpen, match="half-open"):
        breaker.admit()
    breaker.record(probe, None)
    breaker.record(probe, False)  # settled once: a late outcome changes nothing
    assert breaker.state == "half_open"
    second = breaker.admit()
    breaker.record(second, False)
    assert breaker.state == "closed"
