"""PUT /admin/config: batching settings change at run time, under load, without a reload."""

import threading

import httpx
import pytest

from helpers import EngineServer


@pytest.fixture(scope="module")
def srv(long_model_dir):
    with EngineServer(long_model_dir) as server:
        yield server


def put(srv, body):
    return httpx.put(srv.url + "/admin/config", headers=srv.headers, json=body, timeout=60)


def test_get_config_hides_the_key(srv):
    config = httpx.get(srv.url + "/admin/config", headers=srv.headers).json()
    assert config["batching"]["mode"] == "dynamic" and "api_key" not in config["server"]


@pytest.mark.parametrize("body, fragment", [
    ({"model": {"dtype": "bfloat16"}}, "needs a reload"),
    ({"load": {"chunk_size_mb": 1}}, "needs a reload"),
    ({"server": {"port": 1}}, "needs a restart"),
    ({"batching": {"mode": "turbo"}}, "batching.mode"),
    ({"batching": {"max_batch_sise": 4}}, "batching.max_batch_sise: unknown key"),
    ({"gpu": {}}, "unknown section"),
    ([1, 2], "JSON object"),
])
def test_refused_changes_say_why(srv, body, fragment):
    r = put(srv, body)
    assert r.status_code == 400 and fragment in r.json()["error"]["message"], r.text


def test_change_under_load_lets_running_requests_finish(srv):
    results = []

    def stream():
        with httpx.stream("POST", srv.url + "/v1/completions", headers=srv.headers, timeout=120, json={
                "model": "tiny-llama-long", "prompt": "Hi", "max_tokens": 300, "ignore_eos": True,
                "stream": True, "stream_options": {"include_usage": True}}) as r:
            results.append("".join(r.iter_lines()))

    threads = [threading.Thread(target=stream) for _ in range(3)]
    for t in threads:
        t.start()
    import time
    time.sleep(0.3)
    r = put(srv, {"batching": {"mode": "sequential", "max_batch_size": 4, "max_queue": 7}})
    assert r.status_code == 200, r.text
    after = httpx.post(srv.url + "/v1/completions", headers=srv.headers, timeout=120,
                       json={"model": "tiny-llama-long", "prompt": "Hi", "max_tokens": 5})
    for t in threads:
        t.join(120)
    assert after.status_code == 200
    assert len(results) == 3 and all('"completion_tokens": 300' in body for body in results)
    status = httpx.get(srv.url + "/admin/status", headers=srv.headers).json()
    assert status["batching_mode"] == "sequential"
    config = httpx.get(srv.url + "/admin/config", headers=srv.headers).json()
    assert config["batching"]["max_queue"] == 7 and config["batching"]["max_batch_size"] == 4
    assert put(srv, {"batching": {"mode": "dynamic"}}).status_code == 200
