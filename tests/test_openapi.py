"""The OpenAPI document tells the truth: schemathesis takes the document a live worker serves at
/openapi.json, sends generated requests (valid and invalid) to every route of that worker, and
checks each answer's status, content type, headers and body against it. The routes that change
the engine's state run in a second pass, on a worker of their own."""

from __future__ import annotations

import httpx
import pytest
import schemathesis

from helpers import EngineServer

pytestmark = pytest.mark.timeout(300)

# Routes that load, unload or reconfigure the model: fuzzed apart, so the shared worker stays as it is.
STATE_CHANGING = {("POST", "/admin/load"), ("POST", "/admin/unload"), ("POST", "/admin/cancel-load"),
                  ("PUT", "/admin/config")}
CHECKS = ["not_a_server_error", "status_code_conformance", "content_type_conformance",
          "response_headers_conformance", "response_schema_conformance", "ignored_auth",
          "unsupported_method", "allow_header_conformance", "missing_required_header"]
MAX_EXAMPLES = 25


def schema_of_the_worker():
    """The document a worker with an API key serves, made in-process at collection time: the
    pytest plugin parametrizes then, before any worker runs (its fixture-based loader fails under
    pytest 9.2, which dropped ``Node._nodeid``). The first test checks that the live worker serves
    this very document."""
    config = schemathesis.Config.from_dict({
        "auth": {"openapi": {"bearer": {"bearer": API_KEY}}},
        "generation": {"max-examples": MAX_EXAMPLES, "deterministic": True, "database": "none"},
        "checks": {"enabled": False, **{name: {"enabled": True} for name in CHECKS}},
        "request-timeout": 120,
        # The event stream never ends by itself: its first event (the current state) is enough.
        "operations": [{"include-path": "/admin/events", "max-stream-events": 1}],
    })
    return schemathesis.openapi.from_dict(DOCUMENT, config=config)


def _document() -> dict:
    from engine.api import create_app
    from engine.config import EngineConfig
    from engine.core import Engine

    return create_app(Engine(EngineConfig.from_dict({"server": {"api_key": API_KEY}}))).openapi()


def _changes_state(ctx) -> bool:
    return (ctx.operation.method.upper(), ctx.operation.path) in STATE_CHANGING


def _keeps_state(ctx) -> bool:
    return not _changes_state(ctx)


API_KEY = "test-key"  # what EngineServer gives its workers by default
DOCUMENT = _document()
read_only = schema_of_the_worker().exclude(_changes_state)
# Excluding the rest: an include filter would be OR-ed with the one the "operations" setting adds.
state_changing = schema_of_the_worker().exclude(_keeps_state)


@pytest.fixture(scope="module")
def admin_server(llama_dir):
    with EngineServer(llama_dir) as srv:
        yield srv


def test_the_live_worker_serves_the_document_under_test(server):
    assert httpx.get(server.url + "/openapi.json").json() == DOCUMENT


@read_only.parametrize()
def test_every_route_answers_as_documented(case, server):
    case.call_and_validate(base_url=server.url)


@state_changing.parametrize()
def test_admin_routes_answer_as_documented(case, admin_server):
    if case.path == "/admin/config" and isinstance(case.body, dict):
        # Valid settings are applied for real: no KV pool sized by chance, no cache folder
        # made wherever the fuzzer points (both are the engine's to bound, not the schema's).
        for section, unsafe in (("batching", ("num_blocks", "cpu_offload_gb")), ("cache", ("dir",))):
            if isinstance(case.body.get(section), dict):
                for key in unsafe:
                    case.body[section].pop(key, None)
    case.call_and_validate(base_url=admin_server.url)


def test_document_and_docs_are_open_and_name_the_bearer_scheme(server):
    doc = httpx.get(server.url + "/openapi.json").json()
    assert doc["components"]["securitySchemes"]["bearer"] == {"type": "http", "scheme": "bearer"}
    assert doc["paths"]["/health"]["get"]["security"] == []
    assert httpx.get(server.url + "/docs").status_code == 200
    for operations in doc["paths"].values():
        for operation in operations.values():
            assert "422" not in operation["responses"]


def test_401_names_the_scheme_and_405_the_allowed_methods(server):
    r = httpx.get(server.url + "/v1/models")
    assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"
    r = httpx.post(server.url + "/admin/config", headers=server.headers)
    assert r.status_code == 405 and r.headers["allow"] == "GET, PUT"

