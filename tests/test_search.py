"""engine.search as a library and through ``deepseek-engine index | search``: every format, every
bad input of the issue, re-indexing, resumption after kill -9, a corrupt database, the three modes
(semantic with a tiny random BERT: real code path, vectors without meaning)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from helpers import ROOT, wait_until
from search_docs import EXPECTED_PROBLEMS, GOOD_FILES, build_corpus, build_tiny_embedder, make_pdf

from engine.search.extract import ExtractError, _pdfium_texts, extract
from engine.search.prepare import helper_count, prepared_in_batches, tasks_of
from engine.search.retrieval import fts_query, query_terms, snippet
from engine.search.service import SearchService
from engine.search.store import SCHEMA_VERSION, StoreError, collection_token, every_value


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    return build_corpus(tmp_path_factory.mktemp("search-corpus"))


@pytest.fixture(scope="module")
def embedder_dir(tmp_path_factory, tokenizer_dir) -> Path:
    return build_tiny_embedder(tmp_path_factory.mktemp("tiny-bert"), tokenizer_dir)


@pytest.fixture(scope="module")
def indexed(tmp_path_factory, corpus, embedder_dir) -> SearchService:
    """The corpus indexed once, with vectors, for the tests that only search it."""
    service = SearchService(tmp_path_factory.mktemp("index"), str(embedder_dir))
    service.store.create_collection("docs", [str(corpus)])
    summary = service.index("docs")
    assert summary.state == "done"
    return service


def _names(paths) -> set[str]:
    return {Path(p).name for p in paths}


def test_each_format_is_indexed_and_each_bad_file_has_its_reason(indexed):
    files = {Path(f["path"]).name: f for f in indexed.store.files("docs")}
    assert {n for n, f in files.items() if f["status"] == "ok"} == GOOD_FILES
    assert {n: f["error"] for n, f in files.items() if f["status"] == "error"} == EXPECTED_PROBLEMS
    assert "secret.md" not in files and "image.png" not in files  # hidden folders, unsupported formats
    collection = indexed.describe("docs")
    assert collection["state"] == "ready" and collection["problems"] == len(EXPECTED_PROBLEMS)
    assert collection["semantic"] == "ready" and collection["embedded"] == collection["chunks"]


def test_hits_say_where_they_come_from(indexed, corpus):
    pump = indexed.search("prime the pump housing", "docs", mode="lexical").hits[0]
    assert pump.path == str(corpus / "sub" / "pump.rst")
    assert pump.heading == "Garden pump › Priming" and pump.title == "Garden pump"
    lines = (corpus / "sub" / "pump.rst").read_text().splitlines()
    assert "prime the pump" in "\n".join(lines[pump.lines[0] - 1:pump.lines[1]])
    assert pump.page is None

    pdf = indexed.search("collimate mirror", "docs", mode="lexical").hits[0]
    assert Path(pdf.path).name == "manual.pdf" and pdf.page == 2 and pdf.lines is None
    assert pdf.title == "Telescope manual"

    html = indexed.search("tyres sidewall", "docs", mode="lexical").hits[0]
    assert html.title == "Bicycle care" and html.heading == "Bicycle care › Tyres"
    assert "javascript" not in html.text
    assert indexed.search("javascript ignored", "docs", mode="lexical").hits == []


def test_snippets_are_escaped_and_mark_the_terms(indexed):
    hit = indexed.search("sidewall pressure", "docs", mode="lexical").hits[0]
    assert "<mark>sidewall</mark>" in hit.snippet and "<mark>pressure</mark>" in hit.snippet
    assert "&amp;" in hit.snippet and "<p>" not in hit.snippet
    marked = snippet("a <b> & descaling " + "x " * 300 + "descale", ["descale"])
    assert marked.startswith("a &lt;b&gt; &amp; <mark>descaling</mark>") and len(marked) < 260


@pytest.mark.parametrize("query", ['"', '*', '-', 'NEAR(', ':', 'AND OR NOT', '"unbalanced', 'col:umn*',
                                   '!!! ??? ...', "x" * 10_000, "descale " * 2000, "\x00\x01", "👍🏽"])
def test_any_query_text_is_valid(indexed, query):
    for mode in ("lexical", "semantic", "hybrid"):
        result = indexed.search(query, "docs", mode=mode)
        assert result.mode == mode
        assert isinstance(result.hits, list)


def test_fts_syntax_characters_are_searched_as_text(indexed):
    assert fts_query(query_terms('NEAR(kettle, "water") -limescale*')) == '"near" OR "kettle" OR "water" OR "limescale"'
    hit = indexed.search('NEAR(descale: "citric" -acid*', "docs", mode="lexical").hits[0]
    assert Path(hit.path).name == "guide.md" and hit.heading == "Kettle guide › Descaling"
    assert indexed.search("!!! ... ???", "docs", mode="lexical").hits == []


def test_three_modes_and_their_scores(indexed):
    lexical = indexed.search("descale kettle citric", "docs", top_k=3, mode="lexical")
    semantic = indexed.search("descale kettle citric", "docs", top_k=3, mode="semantic")
    hybrid = indexed.search("descale kettle citric", "docs", top_k=20, mode="hybrid")
    assert lexical.hits and all(h.scores["lexical"] > 0 and h.scores["semantic"] is None for h in lexical.hits)
    assert len(semantic.hits) == 3 and all(h.scores["semantic"] is not None and h.scores["lexical"] is None
                                           for h in semantic.hits)
    scores = [h.score for h in semantic.hits]
    assert scores == sorted(scores, reverse=True) and all(-1.0 <= s <= 1.0001 for s in scores)
    fused = {h.chunk_id for h in hybrid.hits}
    assert {h.chunk_id for h in lexical.hits} <= fused and {h.chunk_id for h in semantic.hits} <= fused
    top = hybrid.hits[0]  # the lexical winner is found by both: fusion ranks it first
    assert top.chunk_id == lexical.hits[0].chunk_id or top.scores["lexical"] and top.scores["semantic"]


def test_filters_by_collection_and_path_glob(indexed, corpus):
    hits = indexed.search("water", "docs", mode="lexical").hits
    assert _names(h.path for h in hits) >= {"guide.md", "pump.rst"}
    only_rst = indexed.search("water", "docs", mode="hybrid", path_glob="*.rst").hits
    assert _names(h.path for h in only_rst) == {"pump.rst"}
    with pytest.raises(StoreError, match="no collection named 'nope'"):
        indexed.search("water", "nope")


def test_collection_names_are_checked(tmp_path, corpus):
    service = SearchService(tmp_path / "index", "")
    for bad in ("../etc", "a/b", ".hidden", "", "x" * 65, "naïve", "a b"):
        with pytest.raises(StoreError, match="invalid collection name"):
            service.store.create_collection(bad, [str(corpus)])
    assert service.store.collections() == [] and list((tmp_path / "index").iterdir())  # nothing written outside
    assert not (tmp_path / "etc").exists()


def test_reindex_skips_unchanged_replaces_changed_removes_deleted_adds_new(tmp_path):
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "a.md").write_text("# A\n\nalpha apricot\n")
    (docs / "b.md").write_text("# B\n\nbravo banana\n")
    (docs / "c.md").write_text("# C\n\ncharlie cherry\n")
    service = SearchService(tmp_path / "index", "")
    service.store.create_collection("c", [str(docs)])
    first = service.index("c")
    assert (first.indexed, first.unchanged, first.removed) == (3, 0, 0)

    (docs / "a.md").write_text("# A\n\nalpha avocado, rewritten\n")
    (docs / "b.md").unlink()
    (docs / "d.md").write_text("# D\n\ndelta date\n")
    os.utime(docs / "c.md")  # touched, same bytes: nothing to re-chunk
    second = service.index("c")
    assert (second.indexed, second.removed) == (2, 1)
    assert _names(f["path"] for f in service.store.files("c")) == {"a.md", "c.md", "d.md"}
    search = lambda q: _names(h.path for h in service.search(q, "c", mode="lexical").hits)
    assert search("apricot") == set() and search("avocado") == {"a.md"}
    assert search("banana") == set() and search("date") == {"d.md"} and search("cherry") == {"c.md"}
    third = service.index("c")
    assert (third.indexed, third.unchanged, third.removed) == (0, 3, 0)
    rows = service.store.conn.execute("SELECT count(*) FROM chunks").fetchone()[0]
    assert rows == service.describe("c")["chunks"] == 3


def test_a_folder_removed_mid_index_loses_nothing_else(tmp_path, corpus):
    doomed = tmp_path / "doomed"
    doomed.mkdir()
    for i in range(5):
        (doomed / f"n{i}.md").write_text(f"# Note {i}\n\nmarmalade number {i}\n")
    service = SearchService(tmp_path / "index", "")
    service.store.create_collection("keep", [str(corpus)])
    service.index("keep", embed=False)
    service.store.create_collection("doomed", [str(doomed)])

    def remove_folder(event: dict) -> None:
        if event["state"] == "indexing" and event["files_total"] and doomed.exists():
            shutil.rmtree(doomed)  # after the walk, before the first file is read

    summary = service.index("doomed", publish=remove_folder)
    assert summary.state == "done" and summary.indexed == 0
    assert {reason for _, reason in summary.problems} == {"file vanished"}
    assert {f["error"] for f in service.store.files("doomed", "error")} == {"file vanished"}
    again = service.index("doomed")
    assert again.problems == [(str(doomed), "folder not found (its indexed files are kept)")]
    assert service.describe("doomed")["error"].endswith("folder not found (its indexed files are kept)")
    assert service.search("saffron risotto", "keep", mode="lexical").hits  # the other collection is intact


def test_a_corrupt_database_is_kept_aside_and_rebuilt(tmp_path, corpus):
    folder = tmp_path / "index"
    service = SearchService(folder, "")
    service.store.create_collection("docs", [str(corpus)], exclude=["*.pdf"])
    service.index("docs", embed=False)
    service.store.close()
    (folder / "index.db").write_bytes(b"this is not a database" * 1000)
    for part in ("index.db-wal", "index.db-shm"):
        (folder / part).unlink(missing_ok=True)

    reopened = SearchService(folder, "")
    assert reopened.store.notice and "kept aside as index.db.corrupt-" in reopened.store.notice
    aside = [p for p in folder.iterdir() if p.name.startswith("index.db.corrupt-")]
    assert aside and aside[0].read_bytes().startswith(b"this is not a database")
    collection = reopened.describe("docs")  # the definition survived; its content comes back on re-index
    assert collection["exclude"] == ["*.pdf"] and collection["files"] == 0
    reopened.index("docs", embed=False)
    assert reopened.search("saffron", "docs", mode="lexical").hits


def test_pdf_ligatures_are_searched_as_their_letters(tmp_path):
    # Byte 0xAE is the "fi" ligature in Helvetica's standard encoding, as typeset PDFs write "file".
    pdf = make_pdf(tmp_path / "lig.pdf", ["the con\u00aeguration \u00aele", "page two"])
    assert extract(pdf).sections[0].text == "the configuration file"
    # Page text comes from PDFium; pypdf takes over where PDFium cannot read or counts other pages.
    assert _pdfium_texts(pdf.read_bytes(), 2) == ["the configuration file", "page two"]
    assert _pdfium_texts(pdf.read_bytes(), 3) is None and _pdfium_texts(b"%PDF-1.4 broken", 1) is None


def test_extract_reasons(tmp_path):
    with pytest.raises(ExtractError, match="file vanished"):
        extract(tmp_path / "absent.txt")
    (tmp_path / "x.pdf").write_bytes(b"%PDF-1.4 garbage")
    with pytest.raises(ExtractError, match="damaged PDF|no text layer"):
        extract(tmp_path / "x.pdf")


def cli(*args: str, env: dict, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "engine", *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=timeout)


def test_cli_index_and_search_without_torch(tmp_path, corpus):
    env = {**os.environ, "DEEPSEEK_DESKTOP_DATA": str(tmp_path / "data")}
    out = cli("index", "--collection", "docs", "--dir", str(corpus), "--no-embed", env=env)
    assert out.returncode == 0, out.stderr
    assert "6 file(s) indexed" in out.stdout and "problem:" in out.stdout and "encrypted PDF" in out.stdout
    found = cli("search", "citric acid descale", "--collection", "docs", "--mode", "lexical", "--json", env=env)
    body = json.loads(found.stdout)
    assert body["mode"] == "lexical" and Path(body["hits"][0]["path"]).name == "guide.md"
    assert set(body["hits"][0]) >= {"collection", "path", "title", "heading", "page", "lines", "snippet", "score", "scores"}
    # The default mode is hybrid; without vectors it says it searched lexically, and imports no torch.
    probe = ("import sys, runpy; sys.argv = ['engine', 'search', 'saffron', '--collection', 'docs'];"
             "from engine.cli import main; code = main(sys.argv[1:]); print('torch' in sys.modules); sys.exit(code)")
    plain = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert plain.returncode == 0, plain.stderr
    assert "notes.txt" in plain.stdout and "[saffron]" in plain.stdout and plain.stdout.strip().endswith("False")
    assert "lexical results" in plain.stderr
    refused = cli("index", "--collection", "../up", "--dir", str(corpus), env=env)
    assert refused.returncode == 1 and "invalid collection name" in refused.stderr


def test_indexing_resumes_after_kill_9(tmp_path):
    docs = tmp_path / "many"
    docs.mkdir()
    paragraph = "Lorem ipsum dolor sit amet, consectetur adipiscing elit. " * 60
    for i in range(1500):
        (docs / f"doc{i:04d}.md").write_text(f"# Document {i}\n\nunique{i} {paragraph}\n")
    env = {**os.environ, "DEEPSEEK_DESKTOP_DATA": str(tmp_path / "data")}
    db = tmp_path / "data" / "search" / "index.db"
    proc = subprocess.Popen([sys.executable, "-m", "engine", "index", "--collection", "many", "--dir", str(docs),
                             "--no-embed"], cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def files_done() -> int:
        try:
            with sqlite3.connect(db, timeout=5) as conn:
                return conn.execute("SELECT count(*) FROM files").fetchone()[0]
        except sqlite3.Error:
            return 0

    try:
        assert wait_until(lambda: files_done() >= 100, timeout=60, every=0.01)
        helpers = _children(proc.pid)  # the extraction helpers (engine.search.prepare), on 2+ cores
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(10)
    done_before = files_done()
    assert 100 <= done_before < 1500, "the run finished before it could be killed: make the corpus bigger"
    assert len(helpers) >= helper_count()  # and multiprocessing's resource tracker
    assert wait_until(lambda: not any(_alive(pid) for pid in helpers), timeout=10), "a helper outlived its indexer"

    again = cli("index", "--collection", "many", env=env)
    assert again.returncode == 0, again.stderr
    assert f"{1500 - done_before} file(s) indexed, {done_before} unchanged" in again.stdout
    with sqlite3.connect(db) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        # No file lost its chunks or got them twice.
        assert conn.execute("SELECT count(*) FROM files f WHERE chunks != (SELECT count(*) FROM chunks c"
                            " WHERE c.file_id = f.id)").fetchone()[0] == 0
        assert conn.execute("SELECT count(*) FROM files WHERE status = 'ok'").fetchone()[0] == 1500
    hit = json.loads(cli("search", "unique7", "--collection", "many", "--mode", "lexical", "--json", env=env).stdout)
    assert Path(hit["hits"][0]["path"]).name == "doc0007.md"


def test_a_helper_dying_on_one_file_costs_only_that_file(tmp_path, monkeypatch):
    """A parser crash in an extraction helper (injected: engine.faults' extract_crash, in the
    helper processes only) takes every task in flight with it; their files are tried again alone
    and only the file it died on is marked."""
    paragraph = "Lorem ipsum dolor sit amet, consectetur adipiscing elit. " * 1800  # ~100 kB a file
    paths = []
    for i in range(48):
        path = tmp_path / f"doc{i:02d}.md"
        path.write_text(f"# Document {i}\n\nunique{i} {paragraph}\n")
        paths.append(path)
    sizes = [p.stat().st_size for p in paths]
    assert all(len(task) > 1 for task in tasks_of(sizes))  # the crash has task-mates
    monkeypatch.setenv("DEEPSEEK_ENGINE_FAULTS", "extract_crash:1@file=doc07.md")
    results: dict[int, object] = {}
    for batch in prepared_in_batches([(str(p), None, None) for p in paths], sizes, workers=2):
        for index, prepared in batch:
            assert index not in results
            results[index] = prepared
    assert sorted(results) == list(range(48))
    failed = {paths[i].name: r.error for i, r in results.items() if r.status != "ok"}
    assert failed == {"doc07.md": "could not be read: the extraction process died on it"}
    for i, prepared in results.items():
        if i != 7:
            assert f"unique{i} " in prepared.chunks[0].text and prepared.characters > 90_000


def _children(pid: int) -> list[int]:
    return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


def _alive(pid: int) -> bool:
    """Running (a zombie nobody reaped has ended its work)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def test_an_index_of_another_layout_is_kept_aside_and_rebuilt(tmp_path, corpus):
    folder = tmp_path / "index"
    SearchService(folder, "").store.create_collection("docs", [str(corpus)])
    with sqlite3.connect(folder / "index.db") as conn:
        conn.execute("PRAGMA user_version = 1")
    reopened = SearchService(folder, "")
    assert "another version of the index" in reopened.store.notice
    assert [c["name"] for c in reopened.store.collections()] == ["docs"]


def test_a_layout_3_index_is_migrated_in_place_keeping_chunks_and_vectors(tmp_path, corpus, embedder_dir):
    folder = tmp_path / "index"
    service = SearchService(folder, str(embedder_dir))
    service.store.create_collection("docs", [str(corpus)])
    service.index("docs")
    before = service.store.stats("docs")
    service.store.close()
    with sqlite3.connect(folder / "index.db") as conn:  # what layout 3 wrote: the collection's token only
        conn.execute("UPDATE chunks_fts SET every = ?", (collection_token("docs"),))
        conn.execute("PRAGMA user_version = 3")
    reopened = SearchService(folder, str(embedder_dir))
    assert reopened.store.notice is None  # not kept aside: nothing to re-index or re-embed
    assert reopened.store.stats("docs") == before and before["embedded"] > 0
    with sqlite3.connect(folder / "index.db") as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        assert {r[0] for r in conn.execute("SELECT every FROM chunks_fts")} == {every_value("docs")}
    for collection in ("docs", None):  # scoped by the collection's token, or by ALL_TOKEN
        hits = reopened.search("descale", collection, mode="lexical").hits
        assert hits and Path(hits[0].path).name == "guide.md"


def test_common_words_count_in_the_score_but_do_not_make_a_match_alone(tmp_path):
    docs = tmp_path / "docs"
    docs.mkdir()
    for i in range(60):  # "table" is in every file: too common to make a match by itself
        (docs / f"t{i}.md").write_text(f"# Table {i}\n\nthe table number {i}\n")
    (docs / "rename.md").write_text("# Notes\n\nrename a column, then rename it again\n")
    (docs / "both.md").write_text("# Notes\n\nrename a table, then rename its column\n")
    service = SearchService(tmp_path / "index", "")
    service.store.create_collection("c", [str(docs)])
    service.index("c")
    hits = service.search("rename table column", "c", mode="lexical").hits
    assert [Path(h.path).name for h in hits] == ["both.md", "rename.md"]
    assert len(service.search("table", "c", mode="lexical", top_k=100).hits) == 61
