"""Bad input in the app: each gets a clear message, nothing is lost, and the app keeps running."""

import json
import shutil

from conftest import load_and_wait, wait_state

from deepseek_desktop.engine_process import EngineProcess
from deepseek_desktop.window import MainWindow


def _break(folder, kind):
    if kind == "missing-config":
        (folder / "config.json").unlink()
    elif kind == "truncated-shard":
        shard = next(folder.glob("*.safetensors"))
        shard.write_bytes(shard.read_bytes()[:1000])
    elif kind == "bad-config-json":
        (folder / "config.json").write_text("{not json")


def test_broken_model_folders_are_listed_with_why_and_cannot_be_loaded(make_window, qtbot, llama_dir, tmp_path):
    root = tmp_path / "models"
    for kind in ("missing-config", "truncated-shard", "bad-config-json"):
        shutil.copytree(llama_dir, root / kind)
        _break(root / kind, kind)
    window = make_window(engine=False)
    window.library.set_folders([str(root)], hf_cache=False)
    qtbot.waitUntil(lambda: window.models.table.rowCount() >= 2, timeout=10_000)
    for row in range(window.models.table.rowCount()):
        window.models.table.selectRow(row)
        entry = window.models.selected
        assert not entry.loadable and entry.problem
        assert window.models.table.item(row, 6).text() == f"no: {entry.problem}"
        assert f"cannot load: {entry.problem}" in window.models.verdict_label.text()
        assert not window.models.load_button.isEnabled()


def test_a_model_gone_after_the_scan_is_refused_with_the_engines_reason(make_window, qtbot, llama_dir, tmp_path):
    folder = tmp_path / "models" / "short-lived"
    shutil.copytree(llama_dir, folder)
    window = make_window()
    wait_state(qtbot, window, "idle")
    window.library.set_folders([str(folder.parent)], hf_cache=False)
    qtbot.waitUntil(lambda: window.models.select_path(str(folder)), timeout=10_000)
    qtbot.waitUntil(window.models.load_button.isEnabled, timeout=10_000)
    shutil.rmtree(folder)
    window.models.load_button.click()
    def app_errors():
        return [r[2] for r in window.logs.rows() if r[0] == "app" and r[1] == "error" and "/admin/load" in r[2]]
    qtbot.waitUntil(lambda: bool(app_errors()), timeout=30_000)
    message = app_errors()[-1]
    assert "short-lived" in message
    assert "/admin/load" in window.statusBar().currentMessage()
    assert window.engine_state in ("idle", "error") and window.engine.running()
    assert window.model_id is None


def test_importing_a_file_that_is_not_gguf_says_why(make_window, qtbot, tmp_path):
    fake = tmp_path / "notes.gguf"
    fake.write_text("this is not a GGUF file")
    window = make_window(engine=False)
    with qtbot.waitSignal(window.library.job_finished, timeout=120_000) as finished:
        window.library.import_gguf(str(fake))
    ok, message, path = finished.args
    assert not ok and path == "" and "importing notes.gguf failed" in message
    assert any(r[1] == "error" and "notes.gguf" in r[2] for r in window.logs.rows())
    assert window.models.import_button.isEnabled()  # ready for another try
    assert fake.read_text() == "this is not a GGUF file"


def test_a_prompt_longer_than_the_context_is_refused_and_the_message_kept(make_window, qtbot, llama_dir):
    window = make_window()
    wait_state(qtbot, window, "idle")
    load_and_wait(qtbot, window, llama_dir)  # 256 tokens of context
    long_prompt = "word " * 2000
    window.chat.composer.setPlainText(long_prompt)
    window.chat.send()
    qtbot.waitUntil(lambda: not window.session.busy, timeout=30_000)
    user, reply = window.session.messages
    assert user["content"] == long_prompt.strip()  # what was typed is kept
    assert reply["status"] == "error" and "context" in reply["stats"]["error"]
    assert "not answered" in window.chat.widgets[reply["id"]].status_label.text()
    assert "context" in window.statusBar().currentMessage()
    window.chat.composer.setPlainText("hi")  # and the chat goes on
    window.chat.send()
    qtbot.waitUntil(lambda: not window.session.busy, timeout=30_000)
    assert window.session.messages[-1]["status"] == "done"


def test_an_engine_that_cannot_start_says_why_and_is_not_restarted_in_a_loop(qtbot):
    engine = EngineProcess(extra_args=["--max-queue", "-5"])
    window = MainWindow(engine)
    qtbot.addWidget(window)
    engine.start()
    qtbot.waitUntil(lambda: window.engine_state == "failed", timeout=60_000)
    assert engine.restarts == 0
    assert "batching.max_queue" in window.statusBar().state_label.toolTip()
    assert "max_queue" in window.statusBar().state_label.text()  # the reason on the status bar, not just "code 2:"
    assert any("could not start" in r[2] and "max_queue" in r[2] for r in window.logs.rows())


def test_an_unreadable_chat_history_is_kept_aside_and_a_new_one_started(make_window, qtbot, app_data):
    app_data.mkdir(parents=True)
    (app_data / "chats.sqlite3").write_bytes(b"garbage, not SQLite" * 100)
    window = make_window(engine=False)
    qtbot.waitUntil(lambda: any("could not be read" in r[2] for r in window.logs.rows()), timeout=10_000)
    [kept] = app_data.glob("chats.sqlite3.unreadable-*")
    assert kept.read_bytes() == b"garbage, not SQLite" * 100
    window.session.new_conversation("fresh start")
    qtbot.waitUntil(lambda: window.chat.conversation_list.count() == 1, timeout=10_000)
    assert not any(r[1] == "error" for r in window.logs.rows())


def test_a_garbled_settings_file_falls_back_to_defaults(make_window, app_data):
    app_data.mkdir(parents=True)
    (app_data / "settings.ini").write_text("[window]\ngeometry=nonsense\ntheme=purple\n[library]\nfolders={oops\n"
                                          "[engine]\nlast_load=" + json.dumps("not a dict") + "\n[monitor]\nwindow=7 years\ninterval=0\nvram_alert=lots\n")
    window = make_window(engine=False)
    assert window.theme == "dark" and window.width() == 1440
    assert window.library.folders and window.last_load is None
    assert window.monitor.window_s() == 300 and window.monitor.interval_box.currentText() == "1 s"
    assert window.telemetry.alerts.vram_threshold == 0.9


def run_on_store(qtbot, window, sql: str):
    """One statement on the history's own connection, on its own thread (SQLite wants that)."""
    result = []
    window.store.call(lambda: window.store.store.db.execute(sql).fetchall(), on_done=result.append)
    qtbot.waitUntil(lambda: bool(result), timeout=10_000)
    return result[0]


def test_a_full_disk_during_a_chat_loses_nothing_once_there_is_room(make_window, qtbot, llama_dir):
    """SQLite's own "database or disk is full", reached by capping the file at its current size
    (PRAGMA max_page_count): the real error path, without filling this machine's disk."""
    window = make_window()
    wait_state(qtbot, window, "idle")
    load_and_wait(qtbot, window, llama_dir)
    [[pages]] = run_on_store(qtbot, window, "PRAGMA page_count")
    run_on_store(qtbot, window, f"PRAGMA max_page_count = {pages}")
    long_message = "a paragraph that needs pages of its own. " * 150  # more than the file has room for
    window.chat.composer.setPlainText(long_message)
    window.chat.send()
    qtbot.waitUntil(lambda: not window.session.busy, timeout=30_000)
    qtbot.waitUntil(lambda: any("disk is full" in r[2] for r in window.logs.rows()), timeout=10_000)
    assert window.session.messages[0]["content"] == long_message.strip()  # still on screen
    run_on_store(qtbot, window, "PRAGMA max_page_count = 1073741823")  # room again
    window.chat.composer.setPlainText("hi")
    window.chat.send()
    qtbot.waitUntil(lambda: not window.session.busy, timeout=30_000)
    qtbot.waitUntil(lambda: not window.session._unsaved, timeout=10_000)
    conversation = window.session.current["id"]
    window.close()
    again = make_window(engine=False)
    saved = []
    again.store.messages(conversation, on_done=saved.append)
    qtbot.waitUntil(lambda: bool(saved), timeout=10_000)
    assert [m["content"] for m in saved[0] if m["role"] == "user"] == [long_message.strip(), "hi"]
