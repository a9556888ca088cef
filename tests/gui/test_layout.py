"""Layouts that never overflow (issue 19): long texts (an interrupted reply's error, a fetch step
naming a deep data folder, a model in a deep folder) wrap or elide; they never widen a card past
its view, a panel past the window, or the window past the screen. At 1280 x 800, as on a laptop."""

from __future__ import annotations

from PySide6.QtWidgets import QApplication

from deepseek_desktop.window import PANELS
from engine.catalog import ModelEntry

SIZE = (1280, 800)
DEEP = "/home/someone/" + "/".join(f"a-rather-long-folder-name-{i}" for i in range(12))
LONG_ERROR = ("RemoteProtocolError: peer closed connection without sending complete message body "
              "(incomplete chunked read) while reading " + DEEP + "/and_one_long_word_without_any_space_" * 3)


def settle(window) -> None:
    for _ in range(3):
        QApplication.processEvents()
    window.centralWidget().layout().activate()


def assert_fits(window) -> None:
    """The window kept its size, and every panel built so far asks for no more than the room it has."""
    settle(window)
    assert (window.width(), window.height()) == SIZE
    assert window.minimumSizeHint().width() <= SIZE[0]
    room = window.stack.width()
    for name in PANELS:
        if name in window._panels:
            assert window._panels[name].minimumSizeHint().width() <= room, name


def deep_window(make_window):
    window = make_window(engine=False)
    window.resize(*SIZE)
    settle(window)
    assert (window.width(), window.height()) == SIZE
    return window


def test_an_interrupted_reply_with_a_long_error_wraps_inside_the_view(make_window):
    window = deep_window(make_window)
    window.show_panel("Chat")
    chat, session = window.chat, window.session
    conversation = {"id": "c1", "title": "A conversation", "system_prompt": "", "settings": {}}
    messages = [
        {"id": "m1", "conversation_id": "c1", "position": 0, "role": "user", "content": "Write a story",
         "status": "done", "stats": {}},
        {"id": "m2", "conversation_id": "c1", "position": 1, "role": "assistant", "content": "Once upon a time",
         "status": "interrupted", "stats": {"error": LONG_ERROR, "completion_tokens": 5, "approximate": True}},
    ]
    session._show(conversation, messages)
    assert_fits(window)
    viewport = chat.scroll.viewport()
    reply = chat.widgets["m2"]
    assert reply.width() <= viewport.width()
    assert "interrupted" in reply.status_label.text()
    # Regenerate, the way out of an interrupted reply, is on screen.
    button = reply.regenerate_button
    assert button.isVisible()
    right = button.mapTo(viewport, button.rect().topRight()).x()
    assert 0 < right <= viewport.width()


def test_a_fetch_into_a_deep_data_folder_leaves_the_window_as_it_was(make_window):
    window = deep_window(make_window)
    window.show_panel("Chat")
    window.show_panel("Models")
    step = f"converting SmolLM2-135M-Instruct.Q4_1.gguf to safetensors in {DEEP}/models/SmolLM2-135M-Instruct …"
    window.library.job_progress.emit(step, None)
    assert window.models.job_label.text() == step  # the whole text is kept (its tooltip shows it)
    assert_fits(window)
    window.show_panel("Chat")
    assert_fits(window)
    side = window.chat.conversation_list
    assert side.width() >= 150  # the conversation list is not squeezed by the fetch's status
    window.library.job_finished.emit(False, f"fetching the demo model failed: error: no room in {DEEP}", "")
    assert_fits(window)


def test_a_model_in_a_deep_folder_keeps_the_table_whole(make_window, qtbot):
    window = deep_window(make_window)
    with qtbot.waitSignal(window.library.entries_changed):  # the first scan (of an empty folder)
        window.show_panel("Models")
    panel = window.models
    entry = ModelEntry(name="SmolLM2-135M-Instruct", path=f"{DEEP}/SmolLM2-135M-Instruct", loadable=True,
                       architecture="LlamaForCausalLM", model_type="llama", params=134_515_008,
                       size_bytes=538_090_408, dtype="float32", context_length=8192)
    panel._fill_table([entry])
    panel.select_path(entry.path)
    assert panel.selected is entry
    assert_fits(window)
    header = panel.table.horizontalHeader()
    # Every column is readable: none is cut narrower than its title.
    for column in range(panel.table.columnCount()):
        title = panel.table.horizontalHeaderItem(column).text()
        assert header.sectionSize(column) >= header.fontMetrics().horizontalAdvance(title), title
    last = panel.table.columnCount() - 1
    assert header.sectionViewportPosition(last) + header.sectionSize(last) <= panel.table.viewport().width()
    assert panel.path_label.text() == entry.path and panel.path_label.toolTip() == entry.path  # elided on screen
