"""Batching modes: requests decoded together give exactly what model.generate gives alone."""

from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from helpers import EngineServer

PROMPTS = ["Hello", "The capital of France is", "def add(a, b):", "Emoji: 🙂 and Zürich, naïve café résumé"]
LENGTHS = [3, 24, 12, 18]  # rows finish at different steps and leave the batch


def concurrent_completions(srv, model_id):
    def one(args):
        prompt, max_tokens = args
        r = httpx.post(srv.url + "/v1/completions", headers=srv.headers, timeout=120, json={
            "model": model_id, "prompt": prompt, "max_tokens": max_tokens, "temperature": 0})
        assert r.status_code == 200, r.text
        return r.json()["choices"][0]["text"]

    with ThreadPoolExecutor(len(PROMPTS)) as pool:
        return list(pool.map(one, zip(PROMPTS, LENGTHS)))


ARCHITECTURES = ["llama", "qwen2", "deepseek_v3"]
MODES = ["continuous", "dynamic", "sequential"]


def batching_worker(worker_pool, folder, mode):
    """One server per model and mode for the session: the generation tests ask the dynamic ones too."""
    return worker_pool.get(folder, "--batching-mode", mode, "--max-wait-ms", "300")


@pytest.fixture(scope="module", autouse=True)
def stop_the_workers_only_this_module_asks(worker_pool, tiny_model):
    yield
    # test_generation asks the dynamic ones again, test_isolation the llama ones in every mode.
    shared_with_later_tests = {tiny_model("llama")}
    worker_pool.stop_where(lambda model, args: model not in shared_with_later_tests and args[:2] in [
        ("--batching-mode", mode) for mode in MODES if mode != "dynamic"])


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_concurrent_greedy_equals_generate_alone(tiny_model, greedy_reference, worker_pool, arch, mode):
    folder = tiny_model(arch)
    expected = [greedy_reference(folder, p, n) for p, n in zip(PROMPTS, LENGTHS)]
    srv = batching_worker(worker_pool, folder, mode)
    concurrent_completions(srv, folder.name)  # first round warms up and teaches "company"
    # The server is shared: count only the batches of the measured round.
    batches_before = srv.metric("engine_batch_size_count")
    requests_before = srv.metric("engine_batch_size_sum")
    assert concurrent_completions(srv, folder.name) == expected
    status = httpx.get(srv.url + "/admin/status", headers=srv.headers).json()
    if mode == "continuous" and arch == "deepseek_v3":
        # transformers' paged cache cannot hold MLA's unequal K/V dims: the probe falls back.
        assert status["batching_mode"] == "dynamic"
        assert "continuous batching cannot run" in status["batching_warning"]
        assert any(e.get("event") == "batching_fallback" for e in srv.logs())
        return
    assert status["batching_mode"] == mode and status["batching_warning"] is None
    if mode != "continuous":
        batches = srv.metric("engine_batch_size_count") - batches_before
        requests = srv.metric("engine_batch_size_sum") - requests_before
        if mode == "dynamic":
            assert requests / batches > 1, "concurrent requests were never decoded together"
        else:
            assert requests == batches


def test_dynamic_sampling_with_seed_is_reproducible_in_a_batch(tiny_model, worker_pool):
    folder = tiny_model("qwen2")
    srv = batching_worker(worker_pool, folder, "dynamic")  # dynamic is the default mode

    def sample(seed):
        r = httpx.post(srv.url + "/v1/completions", headers=srv.headers, timeout=60, json={
            "model": folder.name, "prompt": "Hello", "max_tokens": 12, "temperature": 1.0, "seed": seed})
        return r.json()["choices"][0]["text"]
    with ThreadPoolExecutor(4) as pool:
        first = list(pool.map(sample, [1, 2, 1, 2]))
    assert first[0] == first[2] and first[1] == first[3] and first[0] != first[1]


def test_requests_join_a_running_batch_and_still_match_generate(tiny_model, greedy_reference):
    folder = tiny_model("llama")
    long_prompt, late = "The capital of France is", ["Hello", "def add(a, b):", "Zürich"]
    expected_long = greedy_reference(folder, long_prompt, 200)
    expected_late = [greedy_reference(folder, p, 10) for p in late]
    # Its own server: the join counter read at the end must count this test's requests only.
    with EngineServer(folder) as srv:
        body = {"model": folder.name, "prompt": long_prompt, "max_tokens": 200, "temperature": 0, "stream": True}
        with httpx.stream("POST", srv.url + "/v1/completions", headers=srv.headers, json=body, timeout=60) as r:
            lines = r.iter_lines()
            received = [next(lines)]  # the long request is decoding now
            with ThreadPoolExecutor(3) as pool:
                texts = list(pool.map(lambda p: httpx.post(
                    srv.url + "/v1/completions", headers=srv.headers, timeout=60,
                    json={"model": folder.name, "prompt": p, "max_tokens": 10, "temperature": 0}
                ).json()["choices"][0]["text"], late))
            received += list(lines)
        import json

        streamed = "".join(json.loads(l[6:])["choices"][0]["text"] for l in received
                           if l.startswith("data: {") and json.loads(l[6:])["choices"])
        assert texts == expected_late
        assert streamed == expected_long
        assert srv.metric("engine_batch_joins_total") >= 1


def test_continuous_mode_refuses_what_it_cannot_do_exactly(tiny_model, worker_pool):
    folder = tiny_model("llama")
    srv = batching_worker(worker_pool, folder, "continuous")  # max_wait_ms plays no part in continuous
    for extra in ({"frequency_penalty": 1.0}, {"repetition_penalty": 1.3}, {"seed": 3, "temperature": 0.8}):
        r = httpx.post(srv.url + "/v1/completions", headers=srv.headers, timeout=60,
                       json={"model": folder.name, "prompt": "Hi", "max_tokens": 3, **extra})
        assert r.status_code == 400 and "batching.mode to 'dynamic'" in r.json()["error"]["message"]
    r = httpx.post(srv.url + "/v1/completions", headers=srv.headers, timeout=60, json={
        "model": folder.name, "prompt": "Hi", "max_tokens": 3, "temperature": 0.8, "top_p": 0.9, "top_k": 20,
        "ignore_eos": True})
    assert r.status_code == 200 and r.json()["usage"]["completion_tokens"] == 3


def test_continuous_mode_stops_for_a_client_that_left_and_for_the_deadline(long_model_dir):
    import time

    with EngineServer(long_model_dir, extra_args=["--batching-mode", "continuous", "--request-timeout", "3"]) as srv:
        body = {"model": long_model_dir.name, "prompt": "Hi", "max_tokens": 4000, "ignore_eos": True, "stream": True}
        with httpx.stream("POST", srv.url + "/v1/completions", headers=srv.headers, json=body, timeout=60) as r:
            lines = r.iter_lines()
            [next(lines) for _ in range(5)]
        deadline = time.monotonic() + 5
        while srv.metric("engine_requests_running") and time.monotonic() < deadline:
            time.sleep(0.05)
        assert srv.metric("engine_requests_running") == 0
        assert srv.metric("engine_requests_total", {"outcome": "cancelled"}) == 1
        r = httpx.post(srv.url + "/v1/completions", headers=srv.headers, timeout=60,
                       json={**body, "stream": False})
        assert r.status_code == 504 and "request_timeout_s" in r.json()["error"]["message"]
