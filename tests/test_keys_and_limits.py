"""Named keys with roles, and token-bucket rate limits, against a real worker.

Every route is tried with each role; a key comes from the environment; logs and metrics name
keys and never show them; a burst is allowed, then refused with Retry-After and OpenAI's headers,
then allowed again after the reset time; limits change at run time.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import time

import httpx
import pytest

from helpers import ROOT, EngineServer, wait_until

OPS_KEY = "ops-key-from-env"
APP_KEY = "app-key-1234"
WATCH_KEY = "watch-key-1234"
BURST_KEY = "burst-key-1234"
TOKENS_KEY = "tokens-key-1234"

CONFIG = f"""
[[server.keys]]
name = "ops"
key_env = "OPS_KEY"
role = "admin"

[[server.keys]]
name = "app"
key = "{APP_KEY}"
role = "inference"

[[server.keys]]
name = "watch"
key_sha256 = "{hashlib.sha256(WATCH_KEY.encode()).hexdigest()}"
role = "monitor"

[[server.keys]]
name = "burst"
key = "{BURST_KEY}"
role = "inference"
rate_limit = {{ requests_per_s = 1.0, burst = 3 }}  # 1 s to refill: the burst's 4 requests fit in it

[[server.keys]]
name = "tokens"
key = "{TOKENS_KEY}"
role = "inference"
rate_limit = {{ requests_per_s = 100.0, burst = 100, tokens_per_min = 30 }}
"""

# Each route once, with a body that cannot change the engine (so the admin key may call them all).
ROUTES = [
    ("GET", "/v1/models", None), ("GET", "/v1/models/tiny-llama", None),
    ("POST", "/v1/completions", {"model": "tiny-llama", "prompt": "Hi", "max_tokens": 1}),
    ("POST", "/v1/chat/completions", {"model": "tiny-llama", "max_tokens": 1, "messages": [{"role": "user", "content": "Hi"}]}),
    ("GET", "/metrics", None), ("GET", "/admin/status", None), ("GET", "/admin/config", None),
    ("PUT", "/admin/config", {"batching": {}}), ("POST", "/admin/load", {"path": ""}),
    ("POST", "/admin/cancel-load", None), ("POST", "/admin/unload", None),
]
ALLOWED = {
    "ops": {path for _, path, _ in ROUTES},
    "app": {"/v1/models", "/v1/models/tiny-llama", "/v1/completions", "/v1/chat/completions", "/metrics"},
    "watch": {"/v1/models", "/v1/models/tiny-llama", "/metrics"},
}
KEYS = {"ops": OPS_KEY, "app": APP_KEY, "watch": WATCH_KEY}


@pytest.fixture(scope="module")
def keyed(llama_dir):
    with EngineServer(llama_dir, config=CONFIG, env={"OPS_KEY": OPS_KEY}) as srv:
        yield srv


def call(srv, method, path, body=None, key=None):
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return httpx.request(method, srv.url + path, json=body, headers=headers, timeout=60)


@pytest.mark.parametrize("name", ["ops", "app", "watch"])
def test_each_role_on_every_route(keyed, name):
    for method, path, body in ROUTES:
        if name == "ops" and path == "/admin/unload":
            continue  # allowed, and would unload the model the other tests use
        r = call(keyed, method, path, body, KEYS[name])
        if path in ALLOWED[name]:
            assert r.status_code not in (401, 403), (name, method, path, r.text)
        else:
            assert r.status_code == 403, (name, method, path, r.text)
            message = r.json()["error"]["message"]
            assert f"the key {name!r} has role" in message and ("/admin/*" in message or path in message)
    if name == "ops":
        assert call(keyed, "POST", "/admin/cancel-load", key=OPS_KEY).status_code == 409  # ran, found no load


def test_admin_routes_refuse_an_inference_key_naming_its_role(keyed):
    r = call(keyed, "GET", "/admin/status", key=APP_KEY)
    assert r.status_code == 403
    assert r.json()["error"]["message"].startswith("the key 'app' has role 'inference', which may not use /admin/*")


def test_wrong_or_missing_key_is_401_and_the_command_line_key_stays_admin(keyed):
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Basic {APP_KEY}"}):
        r = httpx.get(keyed.url + "/v1/models", headers=headers)
        assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"
    assert call(keyed, "GET", "/admin/status", key="test-key").status_code == 200  # --api-key
    assert httpx.get(keyed.url + "/health").status_code == 200


def test_logs_and_metrics_name_keys_and_never_show_them(keyed):
    call(keyed, "POST", "/v1/completions", {"model": "tiny-llama", "prompt": "Hi", "max_tokens": 2}, APP_KEY)
    call(keyed, "GET", "/v1/models", key=WATCH_KEY)

    def requests_logged() -> list[dict]:
        return [e for e in keyed.logs() if e.get("event") == "request"]
    assert wait_until(lambda: {"app", "watch"} <= {e.get("key") for e in requests_logged()})  # lines written
    entries = requests_logged()
    assert any(e.get("key") == "app" and e.get("path") == "/v1/completions" for e in entries)
    assert any(e.get("key") == "watch" for e in entries)
    config = call(keyed, "GET", "/admin/config", key=OPS_KEY).json()
    assert [k["name"] for k in config["server"]["keys"]] == ["ops", "app", "watch", "burst", "tokens"]
    text = "\n".join(keyed.lines) + json.dumps(config) + httpx.get(keyed.url + "/metrics", headers=keyed.headers).text
    for secret in (OPS_KEY, APP_KEY, WATCH_KEY, BURST_KEY, hashlib.sha256(WATCH_KEY.encode()).hexdigest()):
        assert secret not in text


def test_burst_then_refusal_then_recovery_with_headers_on_every_answer(keyed):
    statuses, answers = [], []
    for _ in range(4):
        r = call(keyed, "GET", "/v1/models", key=BURST_KEY)
        statuses.append(r.status_code)
        answers.append(r)
    assert statuses == [200, 200, 200, 429]
    for r in answers:
        assert r.headers["x-ratelimit-limit-requests"] == "3"
        assert "x-ratelimit-reset-requests" in r.headers and "x-ratelimit-limit-tokens" not in r.headers
    assert [r.headers["x-ratelimit-remaining-requests"] for r in answers] == ["2", "1", "0", "0"]
    refused = answers[-1]
    assert refused.headers["retry-after"] == "1"
    assert refused.json()["error"]["type"] == "rate_limit_error"
    assert "rate limit of 'burst' reached" in refused.json()["error"]["message"]
    assert call(keyed, "GET", "/v1/models/nope", key=BURST_KEY).headers["x-ratelimit-limit-requests"] == "3"
    time.sleep(1.1)  # one request refills in 1 s
    assert call(keyed, "GET", "/v1/models", key=BURST_KEY).status_code == 200
    assert keyed.metric("engine_rate_limited_total", {"key": "burst"}) >= 1
    assert "x-ratelimit-limit-requests" not in call(keyed, "GET", "/v1/models", key=APP_KEY).headers  # no limit


def test_token_limit_counts_prompt_and_completion_tokens(keyed):
    body = {"model": "tiny-llama", "prompt": "Hi", "max_tokens": 16, "ignore_eos": True}
    first = call(keyed, "POST", "/v1/completions", body, TOKENS_KEY)
    assert first.status_code == 200 and first.headers["x-ratelimit-limit-tokens"] == "30"
    used = first.json()["usage"]["total_tokens"]
    second = call(keyed, "POST", "/v1/completions", body, TOKENS_KEY)
    assert second.status_code == 200
    assert int(second.headers["x-ratelimit-remaining-tokens"]) <= 30 - used + 1
    third = call(keyed, "POST", "/v1/completions", body, TOKENS_KEY)
    assert third.status_code == 429 and "30 tokens/min" in third.json()["error"]["message"]
    assert int(third.headers["retry-after"]) >= 2 and third.headers["x-ratelimit-remaining-tokens"] == "0"


def test_limits_change_at_run_time(keyed):
    def put(changes):
        return call(keyed, "PUT", "/admin/config", {"server": changes}, OPS_KEY)

    r = put({"keys": [{"name": "app", "rate_limit": {"requests_per_s": 0.01, "burst": 1}}]})
    assert r.status_code == 200, r.text
    assert r.json()["server"]["keys"][1]["rate_limit"]["burst"] == 1
    try:
        assert call(keyed, "GET", "/v1/models", key=APP_KEY).status_code == 200
        assert call(keyed, "GET", "/v1/models", key=APP_KEY).status_code == 429
    finally:
        assert put({"keys": [{"name": "app", "rate_limit": None}]}).status_code == 200
    assert call(keyed, "GET", "/v1/models", key=APP_KEY).status_code == 200
    assert put({"port": 1}).json()["error"]["message"].startswith("server.port: changing it needs a restart")
    assert "no key named 'nobody'" in put({"keys": [{"name": "nobody", "rate_limit": None}]}).json()["error"]["message"]


def test_without_keys_the_limit_applies_per_client_address():
    """A worker without a model (no torch) and without keys: every address has the default bucket."""
    config = "[server.rate_limit]\nrequests_per_s = 0.01\nburst = 2\n"
    with EngineServer(None, api_key=None, config=config).start(wait_ready=False) as srv:
        answers = [httpx.get(srv.url + "/v1/models") for _ in range(3)]
        assert [r.status_code for r in answers] == [200, 200, 429]
        assert "rate limit of 'anonymous' reached" in answers[-1].json()["error"]["message"]
        assert all(httpx.get(srv.url + "/health").status_code == 503 for _ in range(3))  # never limited


def test_a_key_env_that_is_not_set_stops_serve_with_the_variable_named(tmp_path):
    config = tmp_path / "engine.toml"
    config.write_text('[[server.keys]]\nname = "ops"\nkey_env = "H5_UNSET_VARIABLE"\nrole = "admin"\n')
    done = subprocess.run([sys.executable, "-m", "engine", "serve", "--port", "0", "--config", str(config)],
                          cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert "H5_UNSET_VARIABLE, which is not set" in done.stderr


def test_the_document_lists_403_and_the_rate_limit_headers():
    from engine.api import create_app
    from engine.config import EngineConfig
    from engine.core import Engine

    config = EngineConfig.from_dict({"server": {"keys": [{"name": "app", "key": APP_KEY, "role": "inference"}]}})
    doc = create_app(Engine(config)).openapi()
    assert "403" in doc["paths"]["/admin/status"]["get"]["responses"]
    assert "403" not in doc["paths"]["/v1/completions"]["post"]["responses"]
    completions = doc["paths"]["/v1/completions"]["post"]["responses"]
    assert "retry-after" in {h.lower() for h in completions["429"]["headers"]}
    assert "x-ratelimit-remaining-requests" in completions["200"]["headers"]
    assert "429" not in doc["paths"]["/health"]["get"]["responses"]
