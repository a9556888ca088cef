"""The OpenAI-compatible API of a real engine process, driven by the official openai client."""

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

MESSAGES = [{"role": "user", "content": "Hello there, how are you?"}]


def test_models_lists_the_served_model(client, served_model):
    ids = [m.id for m in client.models.list().data]
    assert ids == [served_model]
    assert client.models.retrieve(served_model).id == served_model


def test_chat_non_stream_returns_text_and_usage(client, served_model):
    reply = client.chat.completions.create(model=served_model, messages=MESSAGES, max_tokens=8, temperature=0)
    choice = reply.choices[0]
    assert choice.message.role == "assistant"
    assert isinstance(choice.message.content, str) and choice.message.content
    assert choice.finish_reason in ("stop", "length")
    assert reply.usage.prompt_tokens > 5
    assert 1 <= reply.usage.completion_tokens <= 8
    assert reply.usage.total_tokens == reply.usage.prompt_tokens + reply.usage.completion_tokens


def test_chat_stream_matches_non_stream_and_reports_usage(client, served_model):
    full = client.chat.completions.create(model=served_model, messages=MESSAGES, max_tokens=12, temperature=0)
    stream = client.chat.completions.create(
        model=served_model, messages=MESSAGES, max_tokens=12, temperature=0,
        stream=True, stream_options={"include_usage": True},
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == full.choices[0].message.content
    assert chunks[0].choices[0].delta.role == "assistant"
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finishes == [full.choices[0].finish_reason]
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == full.usage.completion_tokens
    content_chunks = [c for c in chunks if c.choices and c.choices[0].delta.content]
    assert len(content_chunks) > 1, "tokens must arrive one by one, not all at once"


def test_stream_without_include_usage_sends_no_usage_chunk(client, served_model):
    chunks = list(client.chat.completions.create(model=served_model, messages=MESSAGES, max_tokens=4, stream=True))
    assert all(c.choices for c in chunks)


def test_text_completion_stream_and_non_stream(client, served_model):
    full = client.completions.create(model=served_model, prompt="The capital of France", max_tokens=10, temperature=0)
    assert full.object == "text_completion" and full.usage.completion_tokens <= 10
    parts = list(client.completions.create(model=served_model, prompt="The capital of France",
                                           max_tokens=10, temperature=0, stream=True))
    assert "".join(p.choices[0].text for p in parts) == full.choices[0].text


def test_seed_makes_sampling_reproducible(client, served_model):
    def sample(seed):
        return client.chat.completions.create(model=served_model, messages=MESSAGES, max_tokens=16,
                                              temperature=1.0, seed=seed).choices[0].message.content
    assert sample(7) == sample(7)
    assert len({sample(s) for s in (1, 2, 3, 4)}) > 1


def test_stop_string_cuts_output_before_it(client, served_model):
    base = client.completions.create(model=served_model, prompt="Hello", max_tokens=24, temperature=0,
                                     extra_body={"ignore_eos": True}).choices[0].text
    assert len(base) > 6
    stop = base[3:6]
    cut = client.completions.create(model=served_model, prompt="Hello", max_tokens=24, temperature=0,
                                    stop=[stop], extra_body={"ignore_eos": True})
    expected = base[: base.index(stop)]
    assert cut.choices[0].text == expected and cut.choices[0].finish_reason == "stop"
    streamed = client.completions.create(model=served_model, prompt="Hello", max_tokens=24, temperature=0,
                                         stop=stop, stream=True, extra_body={"ignore_eos": True})
    assert "".join(p.choices[0].text for p in streamed) == expected


def test_penalties_change_greedy_output(client, served_model):
    def run(**kw):
        return client.completions.create(model=served_model, prompt="Hello", max_tokens=30, temperature=0,
                                         extra_body={"ignore_eos": True}, **kw).choices[0].text
    plain = run()
    assert run(frequency_penalty=2.0) != plain


def test_ignore_eos_generates_exactly_max_tokens(client, served_model):
    reply = client.completions.create(model=served_model, prompt="Hi", max_tokens=20, temperature=0,
                                      extra_body={"ignore_eos": True})
    assert reply.usage.completion_tokens == 20 and reply.choices[0].finish_reason == "length"


def test_health_ok_and_open_without_key(server):
    r = httpx.get(server.url + "/health")
    assert r.status_code == 200 and r.json()["status"] == "ok"


def test_metrics_in_prometheus_format(server, client, served_model):
    before = server.metric("engine_generation_tokens_total")
    client.chat.completions.create(model=served_model, messages=MESSAGES, max_tokens=5,
                                   extra_body={"ignore_eos": True})
    text = httpx.get(server.url + "/metrics", headers=server.headers).text
    families = {f.name: f for f in text_string_to_metric_families(text)}
    for name in ("engine_requests_running", "engine_requests_waiting", "engine_prompt_tokens",
                 "engine_generation_tokens", "engine_time_to_first_token_seconds",
                 "engine_inter_token_latency_seconds", "engine_e2e_request_latency_seconds",
                 "engine_request_queue_time_seconds", "engine_model_state", "process_resident_memory_bytes"):
        assert name in families, name
    assert server.metric("engine_generation_tokens_total") == before + 5
    assert server.metric("engine_model_state", {"state": "ready"}) == 1
    assert server.metric("process_resident_memory_bytes") > 10e6
    buckets = [s.labels["le"] for s in families["engine_time_to_first_token_seconds"].samples
               if s.name.endswith("_bucket")]
    assert sum(float(le) < 0.1 for le in buckets if le != "+Inf") >= 5
    assert server.metric("engine_time_to_first_token_seconds_count") >= 1


def test_one_json_log_line_per_request(server, client, served_model):
    reply = client.chat.completions.create(model=served_model, messages=MESSAGES, max_tokens=3)
    import time
    time.sleep(0.3)
    lines = [e for e in server.logs() if e.get("request_id") == reply.id]
    assert len(lines) == 1
    line = lines[0]
    assert line["event"] == "request" and line["status"] == 200
    assert line["completion_tokens"] == reply.usage.completion_tokens
    assert line["prompt_tokens"] == reply.usage.prompt_tokens
    states = [e["state"] for e in server.logs() if e.get("event") == "state"]
    assert states[:2] == ["loading", "ready"]


def test_admin_status_reports_model(server):
    status = httpx.get(server.url + "/admin/status", headers=server.headers).json()
    assert status["state"] == "ready" and status["model"] == "tiny-llama"
    assert status["device"] == "cpu" and status["dtype"] == "float32"
    assert status["context_length"] == 256 and status["memory_bytes"] > 0


@pytest.mark.parametrize("path", ["/v1/models", "/metrics", "/admin/status"])
def test_get_routes_need_the_key(server, path):
    assert httpx.get(server.url + path).status_code == 401
    wrong = httpx.get(server.url + path, headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 401
    assert wrong.json()["error"]["code"] == "invalid_api_key"
    assert httpx.get(server.url + path, headers=server.headers).status_code == 200


def test_repetition_penalty_changes_greedy_output(client, served_model):
    def run(**extra):
        return client.completions.create(model=served_model, prompt="Hello", max_tokens=30, temperature=0,
                                         extra_body={"ignore_eos": True, **extra}).choices[0].text
    assert run(repetition_penalty=5.0) != run()


def test_every_stderr_line_of_the_worker_is_json(server, client, served_model):
    import json

    client.chat.completions.create(model=served_model, messages=MESSAGES, max_tokens=3)
    not_json = []
    for line in list(server.lines):
        try:
            json.loads(line)
        except ValueError:
            not_json.append(line)
    assert not_json == []


@pytest.mark.parametrize("content, reasoning", [("Paris", ""), ("", "thinking"), ("é", "both"), ("", "")])
def test_per_token_chunks_are_the_documented_chunk_models(content, reasoning):
    """Per-token chunks are built as plain dicts on the hot path: they still validate as the
    models the OpenAPI document names, and are the bytes those models would give."""
    import json

    from engine.api.streaming import Reply, sse
    from engine.protocol import ChatCompletionChunk, CompletionChunk
    from engine.requests import TextEvent

    event = TextEvent(content=content, reasoning=reasoning)
    for chat, model in ((True, ChatCompletionChunk), (False, CompletionChunk)):
        line = Reply("id-1", "tiny-llama", chat, "/v1/path").text_chunk(event)
        assert line.startswith("data: ") and line.endswith("\n\n")
        chunk = model.model_validate_json(line.removeprefix("data: "))
        assert sse(chunk.model_dump()) == line
        assert chunk.usage is None and chunk.choices[0].finish_reason is None
    assert json.loads(line.removeprefix("data: "))["choices"][0]["text"] == content
