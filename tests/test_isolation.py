"""One request's failure stays its own.

The values a fuzzer found (``temperature`` 1e-300, ``repetition_penalty`` 1e-38, both admitted by
the schema) used to fail with NaN probabilities and end every request decoding beside them; now
they sample (their limit: the arg-max), and in every scheduling mode the neighbours finish with
the same tokens as without them. An error raised for one row (injected into its sampling) fails
that row alone while the batch decodes on.
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from helpers import EngineServer, wait_until

NEIGHBOURS = ["The capital of France is", "def add(a, b):"]
# Long enough to still decode while the short requests come and go, on a quiet machine too (64
# tokens of the tiny model were over before the bad requests arrived when nothing else ran).
LONG = 230  # the tiny model's context is 256 tokens


def complete(srv, prompt, max_tokens, **extra):
    return httpx.post(srv.url + "/v1/completions", headers=srv.headers, timeout=120,
                      json={"model": "tiny-llama", "prompt": prompt, "max_tokens": max_tokens, **extra})


def neighbours_beside(srv, bad_bodies):
    """The neighbours' texts when ``bad_bodies`` arrive while both decode, and the bad answers."""
    with ThreadPoolExecutor(len(NEIGHBOURS)) as pool:
        running = [pool.submit(complete, srv, p, LONG, temperature=0, ignore_eos=True) for p in NEIGHBOURS]
        # Both in the engine, decoding (sequential mode: one decodes, the other waits its turn).
        assert wait_until(lambda: not any(f.done() for f in running) and srv.metric("engine_requests_running") >= 1
                          and srv.metric("engine_requests_running") + srv.metric("engine_requests_waiting")
                          >= len(NEIGHBOURS), 30, every=0.02), "neighbours never overlapped"
        with ThreadPoolExecutor(len(bad_bodies)) as bad_pool:
            bad = list(bad_pool.map(lambda body: complete(srv, "Hi", 4, **body), bad_bodies))
        still_running = not all(f.done() for f in running)
        answers = [f.result() for f in running]
    for r in answers:
        assert r.status_code == 200, r.text
    return [r.json()["choices"][0]["text"] for r in answers], bad, still_running


@pytest.mark.parametrize("mode", ["dynamic", "sequential", "continuous"])
def test_extreme_sampling_values_neither_fail_nor_disturb_the_batch(llama_dir, worker_pool, mode):
    srv = worker_pool.get(llama_dir, "--batching-mode", mode, "--max-wait-ms", "300")  # shared with test_batching
    alone = [complete(srv, p, LONG, temperature=0, ignore_eos=True).json()["choices"][0]["text"] for p in NEIGHBOURS]
    bad_bodies = [{"temperature": 1e-300}, {"temperature": 1e-300, "top_p": 1e-300}]
    if mode != "continuous":  # continuous refuses penalties (400, tested in test_batching)
        bad_bodies += [{"repetition_penalty": 1e-38}, {"repetition_penalty": 1e-38, "temperature": 1e-38}]
    texts, bad, _ = neighbours_beside(srv, bad_bodies)
    assert texts == alone
    for r, body in zip(bad, bad_bodies):
        assert r.status_code == 200, (body, r.text)
        assert r.json()["usage"]["completion_tokens"] == 4
    # The limit of sampling as the temperature falls is the arg-max: greedy's answer.
    greedy = complete(srv, "Hi", 4, temperature=0).json()["choices"][0]["text"]
    assert bad[0].json()["choices"][0]["text"] == greedy


def test_an_error_in_one_rows_sampling_fails_that_row_alone(llama_dir):
    with EngineServer(llama_dir, env={"DEEPSEEK_ENGINE_FAULTS": "sample:1.0@max_tokens=4"}) as srv:
        alone = [complete(srv, p, LONG, temperature=0, ignore_eos=True).json()["choices"][0]["text"]
                 for p in NEIGHBOURS]
        texts, bad, still_running = neighbours_beside(srv, [{"temperature": 0}, {"temperature": 0.7, "stream": True}])
        assert texts == alone
        assert still_running, "the neighbours stopped when the bad row failed"
        assert bad[0].status_code == 500
        assert "injected fault: sample" in bad[0].json()["error"]["message"]
        assert bad[1].status_code == 200 and '"error"' in bad[1].text and "injected fault: sample" in bad[1].text
        assert srv.metric("engine_requests_total", {"outcome": "error", "protocol": "rest"}) == 2
        assert srv.metric("engine_requests_total", {"outcome": "length", "protocol": "rest"}) == 4
        failures = [e for e in srv.logs() if e.get("event") == "request_failed"]
        assert len(failures) == 2


def test_sampling_steps_stay_finite_for_every_admitted_value():
    import torch

    from engine.requests import SamplingParams
    from engine.runtime.sampling import sampling_processors

    logits = torch.randn(1, 50) * 30
    history = torch.tensor([[1, 2, 3, int(logits.argmax())]])
    for params in (SamplingParams(4, temperature=1e-300), SamplingParams(4, temperature=2.0, top_p=1e-300),
                   SamplingParams(4, repetition_penalty=1e-38, temperature=1e-300),
                   SamplingParams(4, repetition_penalty=1e-38, top_k=10**9, presence_penalty=2.0)):
        scores = logits.clone()
        for processor in sampling_processors(params, prompt_length=2):
            scores = processor(history, scores)
        probs = torch.softmax(scores, dim=-1)
        assert torch.isfinite(probs).all() and abs(float(probs.sum()) - 1) < 1e-4, params
        if params.temperature < 1e-30:  # the limit of a falling temperature: all on the best token(s)
            # A penalty of 1e-38 can push several history tokens to the same clamped top score (the
            # logits are random): the mass is then shared by exactly those, and none goes elsewhere.
            best = scores[0] == scores[0].max()
            assert float(probs[0, ~best].sum()) == 0.0 and abs(float(probs[0, best].sum()) - 1) < 1e-6, params
            if int(best.sum()) == 1:
                assert float(probs[0, int(scores.argmax())]) == 1.0
