"""Every bad input gets an OpenAI-shaped 4xx a person can act on, and the server keeps serving."""

import json
import time

import httpx
import openai
import pytest

from helpers import EngineServer

MESSAGES = [{"role": "user", "content": "Hi"}]


def post(server, path, body, raw=False):
    content = body if raw else json.dumps(body)
    return httpx.post(server.url + path, content=content, timeout=60,
                      headers={**server.headers, "Content-Type": "application/json"})


def assert_openai_error(response, status, *fragments):
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) >= {"message", "type", "param", "code"}
    for fragment in fragments:
        assert fragment in error["message"], error["message"]
    return error


def test_unknown_model_is_404_naming_the_served_one(client):
    with pytest.raises(openai.NotFoundError) as info:
        client.chat.completions.create(model="gpt-9", messages=MESSAGES)
    assert "gpt-9" in str(info.value) and "tiny-llama" in str(info.value)


def test_prompt_plus_max_tokens_over_context_names_both_numbers(server, served_model):
    long_text = "Hello there " * 200  # far beyond the tiny model's 256-token context
    r = post(server, "/v1/completions", {"model": served_model, "prompt": "Hello there", "max_tokens": 300})
    error = assert_openai_error(r, 400, "300", "256")
    assert error["code"] == "context_length_exceeded"
    r = post(server, "/v1/chat/completions", {"model": served_model,
                                              "messages": [{"role": "user", "content": long_text}]})
    assert_openai_error(r, 400, "256", "tokens")


def test_context_error_through_openai_client(client, served_model):
    with pytest.raises(openai.BadRequestError) as info:
        client.completions.create(model=served_model, prompt="Hi", max_tokens=1000)
    assert "1000" in str(info.value)


def test_malformed_json_is_400(server):
    assert_openai_error(post(server, "/v1/chat/completions", "{not json", raw=True), 400, "not valid JSON")


@pytest.mark.parametrize("body, field", [
    ({"messages": MESSAGES}, "model"),
    ({"model": "tiny-llama"}, "messages"),
    ({"model": "tiny-llama", "messages": "hello"}, "messages"),
    ({"model": "tiny-llama", "messages": [{"role": "wizard", "content": "x"}]}, "role"),
    ({"model": "tiny-llama", "messages": MESSAGES, "max_tokens": "many"}, "max_tokens"),
    ({"model": "tiny-llama", "messages": MESSAGES, "stream": {"a": 1}}, "stream"),
])
def test_wrong_shapes_are_400_naming_the_field(server, body, field):
    error = assert_openai_error(post(server, "/v1/chat/completions", body), 400, field)
    assert error["type"] == "invalid_request_error"


@pytest.mark.parametrize("field, value", [
    ("temperature", -0.5), ("temperature", 2.5), ("top_p", 0.0), ("top_p", 1.5), ("top_k", -2),
    ("max_tokens", 0), ("frequency_penalty", 3.0), ("presence_penalty", -2.5),
    ("repetition_penalty", 0.0), ("n", 9), ("seed", -1), ("stop", ["a", "b", "c", "d", "e"]),
    ("top_logprobs", 21),
])
def test_out_of_range_sampling_values_are_400(server, served_model, field, value):
    r = post(server, "/v1/chat/completions", {"model": served_model, "messages": MESSAGES, field: value})
    assert_openai_error(r, 400, field)


def test_unknown_route_and_wrong_method_are_openai_shaped(server):
    assert_openai_error(httpx.get(server.url + "/v1/nothing", headers=server.headers), 404, "/v1/nothing")
    assert_openai_error(httpx.get(server.url + "/v1/chat/completions", headers=server.headers), 405, "GET")


def test_wrong_key_is_401_for_openai_client(server, served_model):
    from openai import OpenAI

    bad = OpenAI(base_url=server.url + "/v1", api_key="wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        bad.chat.completions.create(model=served_model, messages=MESSAGES)


def test_server_still_serves_after_all_that(server, client, served_model):
    reply = client.chat.completions.create(model=served_model, messages=MESSAGES, max_tokens=3)
    assert reply.choices[0].message.content is not None
    assert httpx.get(server.url + "/health").status_code == 200


def test_model_without_chat_template_gets_clear_400(model_root, llama_dir):
    import tiny_models

    folder = tiny_models.with_template(llama_dir, model_root / "no-template", None)
    with EngineServer(folder) as srv:
        r = post(srv, "/v1/chat/completions", {"model": "no-template", "messages": MESSAGES})
        assert_openai_error(r, 400, "no chat template", "/v1/completions")
        ok = post(srv, "/v1/completions", {"model": "no-template", "prompt": "Hi", "max_tokens": 2})
        assert ok.status_code == 200


def test_without_a_model_health_is_503_and_requests_are_503():
    srv = EngineServer(None).start(wait_ready=False)
    try:
        body = srv.wait_health(503, timeout=60)
        assert body["reason"] == "no model loaded"
        assert httpx.get(srv.url + "/v1/models", headers=srv.headers).json()["data"] == []
        r = post(srv, "/v1/chat/completions", {"model": "anything", "messages": MESSAGES})
        assert_openai_error(r, 503, "no model loaded")
    finally:
        srv.stop()


def test_broken_model_folder_reports_reason_and_keeps_running(tmp_path):
    (tmp_path / "config.json").write_text("{broken")
    srv = EngineServer(tmp_path).start(wait_ready=False)
    try:
        body = srv.wait_health(503, timeout=60)
        for _ in range(300):
            if body["state"] == "error":
                break
            time.sleep(0.1)
            body = httpx.get(srv.url + "/health").json()
        assert body["state"] == "error"
        assert "config.json" in body["reason"]
        r = post(srv, "/v1/chat/completions", {"model": "x", "messages": MESSAGES})
        assert_openai_error(r, 503, "config.json")
    finally:
        srv.stop()


@pytest.mark.parametrize("path, body, fragment", [
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": "\ud800 lone surrogate"}]}, "not valid Unicode"),
    ("/v1/completions", {"prompt": "\udfff"}, "not valid Unicode"),
    ("/v1/completions", {"prompt": ""}, "prompt is empty"),
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]}, "content"),
    ("/v1/completions", {"prompt": "hi", "echo": True, "stream": True}, "echo"),
])
def test_odd_inputs_are_400_not_500(server, served_model, path, body, fragment):
    r = post(server, path, {"model": served_model, "max_tokens": 4, **body})
    assert_openai_error(r, 400, fragment)


@pytest.mark.parametrize("extra", [
    {"temperature": 1e-9}, {"top_k": 10**9}, {"seed": 2**63 - 1}, {"repetition_penalty": 1e-9},
    {"temperature": 2.0, "top_p": 1e-9}, {"frequency_penalty": -2.0, "presence_penalty": 2.0},
])
def test_extreme_but_valid_sampling_values_generate(server, served_model, extra):
    r = post(server, "/v1/chat/completions", {"model": served_model, "messages": MESSAGES, "max_tokens": 4, **extra})
    assert r.status_code == 200, r.text
    assert r.json()["usage"]["completion_tokens"] >= 1


def test_curl_style_form_content_type_is_read_as_json(server, served_model):
    r = httpx.post(server.url + "/v1/completions", timeout=60,
                   content=json.dumps({"model": served_model, "prompt": "Hi", "max_tokens": 2}),
                   headers={**server.headers, "Content-Type": "application/x-www-form-urlencoded"})
    assert r.status_code == 200, r.text
