"""The search API on a real worker: /admin/collections (create, list, change, index in the
background with index_progress events, files with problems, delete), POST /v1/search with the
contract's fields and refusals, search while indexing, a collection indexed by the CLI served by
a server started afterwards, and grounded chat (citations numbered as the model saw them, in the
body and in a stream) with a tiny random Llama."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import httpx
import pytest
from openai import OpenAI

from helpers import ROOT, EngineServer, wait_until
from search_docs import EXPECTED_PROBLEMS, GOOD_FILES, build_corpus, build_tiny_embedder


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    return build_corpus(tmp_path_factory.mktemp("api-corpus"))


@pytest.fixture(scope="module")
def search_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("api-index")


@pytest.fixture(scope="module")
def worker(long_model_dir, search_dir, corpus, tmp_path_factory, tokenizer_dir):
    """One worker for the module: the long-context tiny Llama (sources need room), the index in
    ``search_dir`` where the CLI indexed the corpus before the server started."""
    embedder = build_tiny_embedder(tmp_path_factory.mktemp("api-bert"), tokenizer_dir)
    config = f'[search]\ndir = "{search_dir}"\nembedding_model = "{embedder}"\n'
    config_file = tmp_path_factory.mktemp("api-config") / "engine.toml"
    config_file.write_text(config)
    cli = subprocess.run([sys.executable, "-m", "engine", "index", "--collection", "cli", "--dir", str(corpus),
                          "--config", str(config_file)], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert cli.returncode == 0, cli.stderr
    with EngineServer(long_model_dir, config=config) as server:
        yield server


def api(worker, method: str, path: str, **kwargs) -> httpx.Response:
    return httpx.request(method, worker.url + path, headers=worker.headers, timeout=60, **kwargs)


def test_a_collection_indexed_by_the_cli_is_served(worker, corpus):
    body = api(worker, "GET", "/admin/collections/cli").json()
    assert body["state"] == "ready" and body["semantic"] == "ready" and body["files"] == len(GOOD_FILES) + len(EXPECTED_PROBLEMS)
    assert body["problems"] == len(EXPECTED_PROBLEMS) and body["progress"] is None and body["indexed_at"]
    found = api(worker, "POST", "/v1/search", json={"query": "collimate the mirror", "collection": "cli", "top_k": 3})
    assert found.status_code == 200
    result = found.json()
    assert result["mode"] == "hybrid" and result["took_ms"] >= 0 and 1 <= len(result["hits"]) <= 3
    hit = next(h for h in result["hits"] if h["path"].endswith("manual.pdf"))
    assert hit["path"] == str(corpus / "manual.pdf") and hit["page"] == 2 and hit["lines"] is None
    assert set(hit) >= {"collection", "path", "title", "heading", "page", "lines", "snippet", "score", "scores"}
    assert set(hit["scores"]) == {"lexical", "semantic"} and "<mark>" in hit["snippet"]
    problems = api(worker, "GET", "/admin/collections/cli/files", params={"status": "error"}).json()["files"]
    assert {Path(f["path"]).name: f["error"] for f in problems} == EXPECTED_PROBLEMS
    assert all(set(f) == {"path", "size", "mtime", "status", "chunks", "characters", "error"} for f in problems)


def test_collections_lifecycle_with_progress_events(worker, tmp_path):
    docs = tmp_path / "notes"
    docs.mkdir()
    for i in range(40):
        (docs / f"note{i}.md").write_text(f"# Note {i}\n\nThe quartz{i} crystal oscillates.\n" + "filler text " * 200)
    events: list[dict] = []
    stop = threading.Event()

    def listen():
        with httpx.stream("GET", worker.url + "/admin/events", headers=worker.headers, timeout=None) as stream:
            for line in stream.iter_lines():
                if line.startswith("data: "):
                    event = json.loads(line[6:])
                    if event.get("type") == "index_progress" and event["collection"] == "notes":
                        events.append(event)
                if stop.is_set() or (events and events[-1]["state"] != "indexing"):
                    return

    listener = threading.Thread(target=listen, daemon=True)
    listener.start()
    created = api(worker, "POST", "/admin/collections", json={"name": "notes", "folders": [str(docs)], "exclude": ["note3*"]})
    assert created.status_code == 201 and created.json()["state"] == "empty" and created.json()["exclude"] == ["note3*"]
    assert api(worker, "POST", "/admin/collections", json={"name": "notes", "folders": [str(docs)]}).status_code == 409
    started = api(worker, "POST", "/admin/collections/notes/index")
    assert started.status_code == 202 and started.json()["state"] == "indexing"
    # Searching (and listing) goes on while it indexes.
    assert api(worker, "POST", "/v1/search", json={"query": "crystal", "collection": "cli", "mode": "lexical"}).status_code == 200
    assert wait_until(lambda: api(worker, "GET", "/admin/collections/notes").json()["state"] == "ready", timeout=120)
    listener.join(30)
    stop.set()
    assert events and events[-1]["state"] == "done" and events[-1]["files_total"] == 29
    assert set(events[-1]) >= {"type", "collection", "files_done", "files_total", "bytes_done", "bytes_total", "chunks",
                               "chunks_per_s", "eta_s", "current_file", "state", "problems"}
    hits = api(worker, "POST", "/v1/search", json={"query": "quartz12", "collection": "notes"}).json()["hits"]
    assert hits and hits[0]["path"] == str(docs / "note12.md")
    assert api(worker, "POST", "/v1/search", json={"query": "quartz31", "collection": "notes", "mode": "lexical"}).json()["hits"] == []

    changed = api(worker, "PUT", "/admin/collections/notes", json={"exclude": []})
    assert changed.status_code == 200 and changed.json()["exclude"] == []
    assert api(worker, "DELETE", "/admin/collections/notes").json() == {"deleted": "notes"}
    assert api(worker, "GET", "/admin/collections/notes").status_code == 404
    assert "notes" not in [c["name"] for c in api(worker, "GET", "/admin/collections").json()["collections"]]


@pytest.mark.parametrize("body,status,fragment", [
    ({"query": "x", "collection": "nope"}, 404, "no collection named 'nope'"),
    ({"query": "x", "mode": "fuzzy"}, 400, "mode"),
    ({"query": "x", "top_k": 0}, 400, "top_k"),
    ({"query": "x", "top_k": 101}, 400, "top_k"),
])
def test_search_refusals(worker, body, status, fragment):
    answer = api(worker, "POST", "/v1/search", json=body)
    assert answer.status_code == status and fragment in answer.json()["error"]["message"]


@pytest.mark.parametrize("name", ["..", "..%2Fetc", ".hidden", "a%20b", "x" * 65])
def test_collection_names_with_dots_and_slashes_are_refused(worker, corpus, name):
    created = api(worker, "POST", "/admin/collections", json={"name": name.replace("%2F", "/"), "folders": [str(corpus)]})
    assert created.status_code == 400 and "invalid collection name" in created.json()["error"]["message"]
    assert api(worker, "GET", f"/admin/collections/{name}").status_code in (400, 404)


@pytest.mark.parametrize("query", ['"NEAR(', "!!!", "x" * 10_000, '-* : "'])
def test_odd_queries_answer_200(worker, query):
    for mode in ("lexical", "semantic", "hybrid"):
        answer = api(worker, "POST", "/v1/search", json={"query": query, "mode": mode})
        assert answer.status_code == 200, answer.text
    assert api(worker, "GET", "/health").status_code == 200


def _model(worker) -> str:
    return api(worker, "GET", "/v1/models").json()["data"][0]["id"]


def test_grounded_answer_cites_the_sources_as_numbered(worker, corpus):
    client = OpenAI(base_url=worker.url + "/v1", api_key=worker.api_key, max_retries=0, timeout=120)
    question = "How do I descale the kettle with citric acid?"
    expected = api(worker, "POST", "/v1/search", json={"query": question, "collection": "cli", "top_k": 3}).json()["hits"]
    reply = client.chat.completions.create(model=_model(worker), messages=[{"role": "user", "content": question}],
                                           max_tokens=8, extra_body={"search": {"collection": "cli", "top_k": 3}})
    body = reply.model_dump()
    citations = body["citations"]
    assert [c["n"] for c in citations] == list(range(1, len(citations) + 1)) and citations
    assert [c["path"] for c in citations] == [h["path"] for h in expected[:len(citations)]]
    assert citations[0]["path"] == str(corpus / "guide.md") and citations[0]["heading"] == "Kettle guide › Descaling"
    assert all(n > len(citations) for n in body["unknown_citations"])

    stream = client.chat.completions.create(model=_model(worker), messages=[{"role": "user", "content": question}],
                                            max_tokens=8, stream=True,
                                            extra_body={"search": {"collection": "cli", "top_k": 3}})
    chunks = [chunk.model_dump() for chunk in stream]
    assert chunks[0]["citations"] == citations
    assert [i for i, c in enumerate(chunks) if "citations" in c] == [0]
    last = next(c for c in chunks if c["choices"] and c["choices"][0]["finish_reason"])
    assert last["unknown_citations"] == [] or all(n > len(citations) for n in last["unknown_citations"])


def test_grounded_chat_refusals(worker):
    answer = api(worker, "POST", "/v1/chat/completions", json={
        "model": _model(worker), "messages": [{"role": "user", "content": "hi"}], "search": {"collection": "nope"}})
    assert answer.status_code == 404 and "nope" in answer.json()["error"]["message"]


def test_unknown_citations_are_the_numbers_that_name_no_source():
    from engine.search.grounding import cited_numbers, unknown_citations

    answer = "Descale monthly [1]. Use citric acid [2, 3]. See also [7] and [0]; not a citation: [x], a[1]b."
    assert cited_numbers(answer) == [1, 2, 3, 7, 0]
    assert unknown_citations(answer, 3) == [7, 0]
    assert unknown_citations("no brackets", 3) == []
