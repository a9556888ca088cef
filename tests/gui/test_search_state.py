"""The Search panel's pieces that need no worker: progress and ETA from index_progress events as
the engine words them (fed through EngineSession's own signal), the answer's [n] links, the
snippets' marks, and the text preview scrolled to the cited lines."""

from __future__ import annotations

from PySide6.QtCore import QUrl

from deepseek_desktop.notifier import Notifier
from deepseek_desktop.state.engine_session import EngineSession
from deepseek_desktop.state.search import EtaClock, SearchModel, progress_percent, progress_text, suggest_name
from deepseek_desktop.widgets.citations import CitationsView, heading_path, link_citations, location, marked
from deepseek_desktop.widgets.file_preview import FilePreview
from deepseek_desktop.widgets.search_collections import CollectionList


def progress_event(done: int, total: int = 4_000_000, state: str = "indexing", eta=None) -> dict:
    return {"type": "index_progress", "collection": "docs", "files_done": done // 100_000, "files_total": 40,
            "bytes_done": done, "bytes_total": total, "chunks": done // 1000, "chunks_per_s": 120.0,
            "eta_s": eta, "current_file": "/data/docs/guide.md", "state": state, "problems": 0}


def test_progress_reads_as_percent_counts_and_an_eta():
    event = progress_event(1_000_000, eta=30.0)
    assert progress_percent(event) == 25.0
    assert progress_text(event, 30.0) == "10 of 40 files · 1.0 MB of 4.0 MB · 120 chunks/s · ETA 30 s"
    assert progress_percent({"files_done": 1, "files_total": 4, "bytes_total": 0}) == 25.0
    embedding = {**event, "phase": "embedding", "embedded": 300, "embed_total": 1200}  # the engine's second pass
    assert progress_percent(embedding) == 25.0
    assert progress_text(embedding, 40.0) == "embedding 300 of 1,200 passages · ETA 40 s"
    # No eta_s from the engine: the bytes left at the rate measured since the run's first event.
    clock = EtaClock()
    assert clock.update(progress_event(0), now=100.0) is None
    assert clock.update(progress_event(1_000_000), now=102.0) == 6.0   # 3 MB left at 0.5 MB/s
    assert clock.update(progress_event(2_000_000, eta=9.5), now=103.0) == 9.5  # the engine's own wins


def test_the_progress_bar_follows_index_progress_events_from_the_session(qtbot):
    notifier = Notifier()
    session = EngineSession(notifier)  # no engine: the events come through its signal as from the stream
    model = SearchModel(session, notifier)
    rows = CollectionList()
    qtbot.addWidget(rows)
    model.collections_changed.connect(rows.set_collections)
    model.progress.connect(rows.show_progress)
    model._on_collections({"collections": [{"name": "docs", "folders": ["/data/docs"], "state": "ready",
                                            "files": 0, "chunks": 0, "problems": 0, "semantic": "off"}]})
    row = rows.rows["docs"]
    values = []
    for done in (400_000, 1_000_000, 3_000_000):
        session.engine_event.emit(progress_event(done, eta=12.0))
        values.append(row.bar.value())
    assert values == [100, 250, 750] and not row.bar.isHidden()
    assert "ETA 12 s" in row.detail.text() and "guide.md" in row.detail.text()
    assert model.collections["docs"]["state"] == "indexing"
    session.engine_event.emit(progress_event(4_000_000, state="done"))
    assert row.bar.isHidden() and model.collections["docs"]["progress"] is None


def test_answer_markers_link_known_sources_and_strike_unknown_ones():
    html = "<p>Cats purr [1] and sleep [2, 7].</p><pre><code>a[1]</code></pre>"
    linked = link_citations(html, [1, 2])
    assert '<a href="cite:1"' in linked and '<a href="cite:2"' in linked
    assert 'line-through' in linked and "no source [7]" in linked
    assert "<code>a[1]</code>" in linked  # code is left as written
    assert marked("a <mark>cat</mark>").startswith('a <span style="background-color')
    assert location({"path": "/d/g.pdf", "page": 3}) == "g.pdf, page 3"
    assert location({"path": "/d/n.md", "lines": [10, 24]}) == "n.md, lines 10–24"
    # A Markdown file's "# Title" heads its heading path too: said once.
    assert heading_path({"title": "Guide", "heading": "Guide › Install › Linux"}) == "Guide › Install › Linux"
    assert heading_path({"title": "Guide", "heading": "Guide"}) == "Guide"
    assert heading_path({"title": None, "heading": "Install"}) == "Install"
    assert suggest_name("/home/me/My Notes/") == "My-Notes" and suggest_name("/") == "documents"


def test_a_citation_opens_its_passage_and_asks_to_open_its_file(qtbot):
    view = CitationsView()
    qtbot.addWidget(view)
    sources = [{"n": 1, "path": "/d/a.md", "title": "A", "heading": "Intro", "page": None, "lines": [2, 3],
                "snippet": "the <mark>saffron</mark> rice"}]
    view.set_sources(sources, unknown=[4])
    assert "saffron" not in view.toPlainText() and "[4]" in view.toPlainText()
    view.anchorClicked.emit(QUrl("cite:1"))
    assert view.shown == 1 and "the saffron rice" in view.toPlainText()
    with qtbot.waitSignal(view.open_requested) as opened:
        view.anchorClicked.emit(QUrl("open:1"))
    assert opened.args[0]["path"] == "/d/a.md"


def test_a_text_source_opens_scrolled_to_its_lines(qtbot, tmp_path):
    path = tmp_path / "long.md"
    path.write_text("".join(f"line {i}\n" for i in range(1, 401)))
    preview = FilePreview(str(path), [300, 302], Notifier())
    qtbot.addWidget(preview)
    preview.show()
    qtbot.waitUntil(lambda: preview.loaded, timeout=5000)
    [selection] = preview.text.extraSelections()
    assert selection.cursor.selectedText().replace("\u2029", "\n") == "line 300\nline 301\nline 302"
    assert 250 < preview.first_visible_line() <= 300
    gone = FilePreview(str(tmp_path / "gone.md"), [1, 1], Notifier())
    qtbot.addWidget(gone)
    qtbot.waitUntil(lambda: "could not read" in gone.status.text(), timeout=5000)


def test_a_collection_still_said_indexing_after_its_runs_last_event_reads_as_that_runs_end(qtbot):
    notifier = Notifier()
    model = SearchModel(EngineSession(notifier), notifier)
    ended = progress_event(4_000_000, state="done")
    model._on_one({"name": "docs", "state": "indexing", "files": 4, "progress": ended})
    assert model.collections["docs"]["state"] == "ready" and model.collections["docs"]["progress"] is None
    model._on_one({"name": "docs", "state": "indexing", "progress": progress_event(1_000)})  # a run under way
    assert model.collections["docs"]["state"] == "indexing"
