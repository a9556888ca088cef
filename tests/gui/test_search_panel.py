"""The Search panel and the Chat's "Use documents" against a real worker (the tiny long-context
Llama, shared through the worker pool): a collection made from the panel and indexed, search as
you type (debounced: one query for a word typed), highlighted hits opened at their lines, the
progress bar moving on the engine's index_progress events, Ask streaming an answer with its
sources, a grounded chat reply's citations still there after the app is restarted, and a bad
collection name refused with the engine's own message while the app goes on working."""

from __future__ import annotations

import uuid

import httpx
import pytest
from PySide6.QtCore import QUrl
from pytestqt.exceptions import TimeoutError as QtTimeoutError

from helpers import wait_until
from search_docs import build_tiny_embedder

TIMEOUT_MS = 180_000  # a cap for a loaded 2-core machine; each wait ends when its condition holds
QUESTION = "How is saffron rice cooked?"


@pytest.fixture(scope="module")
def docs(tmp_path_factory):
    """A small folder of real documents, and one file that cannot be read as text."""
    folder = tmp_path_factory.mktemp("docs")
    (folder / "cooking.md").write_text(
        "# Cooking\n\nNotes from the kitchen.\n\n## Rice\n\nSaffron rice is cooked slowly in butter,\n"
        "then simmered with the saffron threads until the water is gone.\n\n## Bread\n\nBread needs time.\n")
    (folder / "cats.txt").write_text("Cats purr when they are content and sleep most of the day.\n")
    (folder / "sub").mkdir()
    (folder / "sub" / "garden.rst").write_text("Garden\n======\n\nTomatoes want sun and water.\n")
    (folder / "broken.txt").write_bytes(b"\xff\xfe\x00\x81binary\x00\x9c" * 50)
    return folder


@pytest.fixture(scope="module")
def big_docs(tmp_path_factory):
    """Enough text (about 3 MB in 240 files) for an indexing run that lasts a few event ticks."""
    folder = tmp_path_factory.mktemp("big-docs")
    paragraph = "".join(f"Paragraph {i} speaks of rivers, lanterns and the harvest moon over the hills.\n\n"
                        for i in range(150))
    for i in range(240):
        (folder / f"chapter-{i:03}.md").write_text(f"# Chapter {i}\n\n" + paragraph)
    return folder


@pytest.fixture(scope="module")
def search_server(worker_pool, long_model_dir, tokenizer_dir, tmp_path_factory):
    """The worker, with a tiny random BERT as its embedding model: semantic search becomes ready,
    so the hybrid path runs (its vectors mean nothing; lexical finds the words)."""
    embedder = build_tiny_embedder(tmp_path_factory.mktemp("tiny-bert"), tokenizer_dir)
    config = tmp_path_factory.mktemp("search-config") / "engine.toml"
    config.write_text(f'[search]\nembedding_model = "{embedder}"\n')
    return worker_pool.get(long_model_dir, "--config", str(config))


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def open_search(make_window, qtbot, server):
    window = make_window(engine=False, url=server.url, api_key=server.api_key)
    window.show_panel("Search")
    panel = window.search
    qtbot.waitUntil(lambda: panel.model.available, timeout=30_000)
    return window, panel


def create_and_index(qtbot, panel, name: str, folder) -> dict:
    """Through the panel, as a user would: New collection…, a folder, a name."""
    panel.ask_folder = lambda: str(folder)
    panel.ask_name = lambda suggested: name
    panel.new_button.click()
    model = panel.model
    try:
        qtbot.waitUntil(lambda: model.collections.get(name, {}).get("state") == "ready", timeout=TIMEOUT_MS)
    except QtTimeoutError:
        raise AssertionError(f"{name} not ready: {model.collections.get(name)}; {panel.message.text()}") from None
    return model.collections[name]


def searches_sent(server) -> int:
    return sum(1 for e in server.logs() if e.get("path") == "/v1/search")


def test_search_as_you_type_shows_highlighted_hits_that_open_at_their_lines(make_window, qtbot, search_server, docs):
    window, panel = open_search(make_window, qtbot, search_server)
    name = unique("docs")
    collection = create_and_index(qtbot, panel, name, docs)
    # "files" counts the unreadable one too (the contract leaves it open): 3 or 4
    assert collection["problems"] == 1 and collection["files"] in (3, 4) and collection["chunks"] >= 3
    assert panel.collections.current_name() == name  # the new collection is selected: searched, asked
    # The file that is not text is listed with its reason; the others are searchable.
    qtbot.waitUntil(lambda: panel.problems.isVisible(), timeout=10_000)
    reasons = panel.problems.reasons()
    assert list(reasons) == [str(docs / "broken.txt")] and reasons[str(docs / "broken.txt")]

    model = panel.model
    assert collection["semantic"] == "ready" and model.semantic_ready()
    modes = []  # of each result set drawn for the query
    model.results_ready.connect(lambda results: modes.append((results["query"], results["mode"])))
    before = searches_sent(search_server)
    panel.query_box.setFocus()
    qtbot.keyClicks(panel.query_box, "saffron rice")
    qtbot.waitUntil(lambda: ("saffron rice", "hybrid") in modes, timeout=10_000)
    # Typed in one go: one query once typing paused, lexical first (drawn at once), then hybrid.
    assert modes == [("saffron rice", "lexical"), ("saffron rice", "hybrid")], modes
    wait_until(lambda: searches_sent(search_server) - before >= 2, timeout=5)  # the access log lags a little
    assert searches_sent(search_server) - before == 2
    hits = model.last_results["hits"]
    assert hits[0]["path"] == str(docs / "cooking.md") and "<mark>" in hits[0]["snippet"]
    assert hits[0]["heading"] and "Rice" in hits[0]["heading"] and hits[0]["lines"]
    assert "Saffron rice is cooked" in panel.results.toPlainText().replace("\n", " ")
    assert "background-color" in panel.results.toHtml()  # the marked terms are drawn highlighted
    assert panel.summary.text().startswith(f"{len(hits)} result") and "hybrid" in panel.summary.text()

    # A hit opens at its lines: the preview is scrolled there with them highlighted.
    panel.results.anchorClicked.emit(QUrl("open:0"))
    preview = panel.previews[-1]
    qtbot.waitUntil(lambda: preview.loaded, timeout=5000)
    [selection] = preview.text.extraSelections()
    assert "Saffron rice is cooked" in selection.cursor.selectedText()
    preview.close()

    # Text the FTS syntax would choke on is searched as text.
    panel.query_box.setText('"NEAR( -rice* :')
    qtbot.waitUntil(lambda: (model.last_results or {}).get("query") == '"NEAR( -rice* :', timeout=10_000)
    assert not panel.summary.text().startswith("search:")


def test_the_progress_bar_moves_while_a_collection_indexes(make_window, qtbot, search_server, big_docs):
    window, panel = open_search(make_window, qtbot, search_server)
    name = unique("big")
    seen = []  # (phase, bar value, detail text) at each index_progress event of this collection
    panel.model.progress.connect(lambda n, event, _eta: n == name and name in panel.collections.rows and seen.append(
        (event.get("phase", "reading"), panel.collections.rows[name].bar.value(),
         panel.collections.rows[name].detail.text())))
    create_and_index(qtbot, panel, name, big_docs)
    shown = [s for s in seen if s[2]]  # the last event (done) hides the bar
    assert len({value for _, value, _ in shown}) >= 2, shown  # it moved
    for phase in ("reading", "embedding"):  # the files read, then the passages embedded
        values = [value for p, value, _ in shown if p == phase]
        assert values == sorted(values), (phase, values)  # forwards only
    assert all("ETA" in text and ("files" in text or "embedding" in text) for _, _, text in shown)
    assert panel.collections.rows[name].bar.isHidden()  # done: the bar goes, the counts stay
    assert "240 files" in panel.collections.rows[name].summary.text()


def test_ask_streams_an_answer_with_its_sources(make_window, qtbot, search_server, docs):
    window, panel = open_search(make_window, qtbot, search_server)
    qtbot.waitUntil(lambda: window.model_id is not None, timeout=30_000)
    name = unique("ask")
    create_and_index(qtbot, panel, name, docs)
    panel.ask_model.max_tokens = 12  # a random model: bound the answer
    panel.query_box.setText(QUESTION)
    panel.ask_button.click()
    assert panel.stop_button.isEnabled()
    ask = panel.ask_model
    qtbot.waitUntil(lambda: not ask.busy, timeout=TIMEOUT_MS)
    answer = ask.answer
    assert answer["status"] == "done" and answer["content"], answer
    assert panel.ask_button.isEnabled() and not panel.stop_button.isEnabled()
    citations = answer["citations"]
    assert [c["n"] for c in citations] == list(range(1, len(citations) + 1)) and citations
    assert all(c["path"].startswith(str(docs)) for c in citations)
    assert str(docs / "cooking.md") in {c["path"] for c in citations}
    qtbot.waitUntil(lambda: panel.citations.sources == citations, timeout=5000)
    assert panel.citations.isVisible() and panel.answer_frame.isVisible()
    cooking = next(c for c in citations if c["path"].endswith("cooking.md"))
    panel.answer_view.link_clicked.emit(QUrl(f"cite:{cooking['n']}"))  # a [n] in the answer, clicked
    assert panel.citations.shown == cooking["n"] and "saffron" in panel.citations.toPlainText().lower()


def test_a_grounded_chat_replys_citations_survive_a_restart(make_window, qtbot, search_server, docs):
    window, panel = open_search(make_window, qtbot, search_server)
    qtbot.waitUntil(lambda: window.model_id is not None, timeout=30_000)
    name = unique("chat")
    create_and_index(qtbot, panel, name, docs)
    window.show_panel("Chat")
    chat, session = window.chat, window.session
    qtbot.waitUntil(lambda: chat.documents_box.findData(name) >= 0, timeout=10_000)
    chat.documents_box.setCurrentIndex(chat.documents_box.findData(name))
    chat.documents_box.activated.emit(chat.documents_box.currentIndex())  # as a user's pick
    assert session.documents == name and session.request_body()["search"]["collection"] == name
    chat.max_tokens.setValue(12)
    chat._apply_settings()
    assert session.documents == name  # the settings form keeps the choice
    chat.composer.setPlainText(QUESTION)
    chat.send_button.click()
    qtbot.waitUntil(lambda: not session.busy, timeout=TIMEOUT_MS)
    reply = session.messages[-1]
    assert reply["status"] == "done" and reply["citations"], reply
    assert str(docs / "cooking.md") in {c["path"] for c in reply["citations"]}
    widget = chat.widgets[reply["id"]]
    assert widget.citations_view is not None and widget.citations_view.sources == reply["citations"]
    window.close()

    again = make_window(engine=False)  # no engine needed to read the history
    again.show_panel("Chat")
    qtbot.waitUntil(lambda: len(again.session.messages) == 2, timeout=10_000)
    kept = again.session.messages[-1]
    assert kept["id"] == reply["id"] and kept["citations"] == reply["citations"]
    view = again.chat.widgets[kept["id"]].citations_view
    assert view is not None and view.sources == reply["citations"] and "cooking.md" in view.toPlainText()
    assert again.session.documents == name and again.chat.documents_box.currentData() == name


def test_a_collection_name_with_dot_dot_is_refused_with_the_engines_message(make_window, qtbot, search_server,
                                                                            docs):
    window, panel = open_search(make_window, qtbot, search_server)
    panel.create_collection("../escape", [str(docs)])
    qtbot.waitUntil(lambda: panel.message.isVisible(), timeout=10_000)
    direct = httpx.post(search_server.url + "/admin/collections", headers=search_server.headers, timeout=10,
                        json={"name": "../escape", "folders": [str(docs)]})
    assert direct.status_code == 400
    assert panel.message.text() == direct.json()["error"]["message"]
    assert any(n.level == "error" and direct.json()["error"]["message"] in n.text for n in window.notifier.history)
    assert "../escape" not in panel.model.collections
    # The app and the worker go on: a good name right after works.
    name = unique("after")
    create_and_index(qtbot, panel, name, docs)
    assert not panel.message.isVisible()


def test_files_globs_and_the_path_filter(make_window, qtbot, search_server, docs):
    window, panel = open_search(make_window, qtbot, search_server)
    name = unique("globs")
    create_and_index(qtbot, panel, name, docs)
    model = panel.model

    def search(text: str) -> list[str]:
        model.last_results = None
        panel.query_box.setText(text)
        panel.query_box.returnPressed.emit()
        qtbot.waitUntil(lambda: (model.last_results or {}).get("query") == text, timeout=10_000)
        return sorted({hit["path"] for hit in model.last_results["hits"]})

    # "water" is in cooking.md and sub/garden.rst; the path filter keeps to the sub folder.
    assert search("water") == [str(docs / "cooking.md"), str(docs / "sub" / "garden.rst")]
    panel.path_box.setText("*/sub/*")
    assert search("water") == [str(docs / "sub" / "garden.rst")]
    panel.path_box.clear()

    # Files…: the dialog shows the collection's globs; excluding *.rst re-indexes without it.
    asked = []
    panel.ask_globs = lambda n, include, exclude: asked.append((n, include, exclude)) or ([], ["*.rst"])
    panel.globs_button.click()
    assert asked == [(name, [], [])]
    garden = str(docs / "sub" / "garden.rst")

    def indexed_paths() -> list[str]:
        return [f["path"] for f in httpx.get(f"{search_server.url}/admin/collections/{name}/files",
                                             headers=search_server.headers, timeout=10).json()["files"]]
    qtbot.waitUntil(lambda: garden not in indexed_paths(), timeout=TIMEOUT_MS)
    assert str(docs / "cooking.md") in indexed_paths()
    assert search("water") == [str(docs / "cooking.md")]
    collection = httpx.get(f"{search_server.url}/admin/collections/{name}", headers=search_server.headers,
                           timeout=10).json()
    assert collection["exclude"] == ["*.rst"] and collection["include"] == []
