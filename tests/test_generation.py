"""Generation in a real engine: greedy output equals transformers' own, cancellation, overload."""

import json
import threading
import time

import httpx
import pytest

from helpers import EngineServer, wait_until

PROMPTS = ["Hello there", "The capital of France is"]


@pytest.mark.parametrize("arch", ["llama", "qwen2", "deepseek_v3"])
def test_greedy_output_equals_model_generate(arch, tiny_model, greedy_reference, worker_pool):
    folder = tiny_model(arch)
    # The default mode (dynamic), on the server the batching tests use: a request alone never
    # waits the 300 ms they give a batch to fill.
    srv = worker_pool.get(folder, "--batching-mode", "dynamic", "--max-wait-ms", "300")
    for prompt in PROMPTS:
        r = httpx.post(srv.url + "/v1/completions", headers=srv.headers, timeout=60, json={
            "model": folder.name, "prompt": prompt, "max_tokens": 24, "temperature": 0})
        assert r.status_code == 200, r.text
        text = r.json()["choices"][0]["text"]
        assert text == greedy_reference(folder, prompt, 24), (arch, prompt)


@pytest.fixture(scope="module")
def long_server(long_model_dir):
    # One running request at a time, so a second one waits in the queue (of 1) and a third is refused.
    with EngineServer(long_model_dir, extra_args=["--max-queue", "1", "--max-batch-size", "1",
                                                  "--request-timeout", "6"]) as srv:
        yield srv


def stream_request(srv, max_tokens=4000):
    body = {"model": "tiny-llama-long", "prompt": "Hello", "max_tokens": max_tokens, "stream": True,
            "temperature": 0, "ignore_eos": True}
    return httpx.stream("POST", srv.url + "/v1/completions", headers=srv.headers, json=body, timeout=60)


def test_disconnect_stops_generation(long_server):
    with stream_request(long_server) as response:
        lines = response.iter_lines()
        received = [next(lines) for _ in range(10)]
        request_id = json.loads(received[0].removeprefix("data: "))["id"]
    assert wait_until(lambda: long_server.metric("engine_requests_running") == 0, 5)
    tokens = long_server.metric("engine_generation_tokens_total")
    time.sleep(0.5)
    assert long_server.metric("engine_generation_tokens_total") == tokens, "still generating for nobody"
    assert wait_until(lambda: any(e.get("request_id") == request_id for e in long_server.logs()))
    line = next(e for e in long_server.logs() if e.get("request_id") == request_id)
    assert line["outcome"] == "disconnected"
    assert long_server.metric("engine_requests_total", {"outcome": "cancelled"}) >= 1


def test_queue_full_is_429_with_retry_after_and_others_finish(long_server):
    results = {}

    def run_waiting():
        r = httpx.post(long_server.url + "/v1/completions", headers=long_server.headers, timeout=60,
                       json={"model": "tiny-llama-long", "prompt": "Hi", "max_tokens": 3, "temperature": 0})
        results["waiting"] = r.status_code

    with stream_request(long_server, max_tokens=400) as running:
        lines = running.iter_lines()  # keep it: a collected iterator closes the stream
        next(lines)
        waiter = threading.Thread(target=run_waiting)
        waiter.start()
        assert wait_until(lambda: long_server.metric("engine_requests_waiting") == 1, 5)
        r = httpx.post(long_server.url + "/v1/completions", headers=long_server.headers, timeout=30,
                       json={"model": "tiny-llama-long", "prompt": "Hi", "max_tokens": 3})
        assert r.status_code == 429 and r.headers["Retry-After"]
        assert "max_queue" in r.json()["error"]["message"]
        body = "".join(lines)
        assert '"finish_reason": "length"' in body and body.endswith("[DONE]")
    waiter.join(60)
    assert results["waiting"] == 200


def test_request_timeout_ends_with_clear_error(long_server):
    r = httpx.post(long_server.url + "/v1/completions", headers=long_server.headers, timeout=60,
                   json={"model": "tiny-llama-long", "prompt": "Hi", "max_tokens": 8000, "ignore_eos": True})
    assert r.status_code == 504, r.text
    assert "request_timeout_s" in r.json()["error"]["message"]
    assert long_server.wait_health(200, 5)["status"] == "ok"
