"""The worker's life as the user sees it: kill -9 of the worker mid-reply (reported, restarted,
the model reloaded, the history intact) and kill -9 of the GUI (no worker left behind)."""

import os
import signal
import subprocess
import sys
import time

import psutil
from conftest import load_and_wait, wait_state

from deepseek_desktop.engine_process import EngineProcess
from helpers import ROOT


def test_a_worker_killed_mid_reply_is_reported_restarted_and_the_history_kept(make_window, qtbot, long_model_dir):
    window = make_window()
    wait_state(qtbot, window, "idle")
    load_and_wait(qtbot, window, long_model_dir)
    first_pid = window.engine.pid()
    chat, session = window.chat, window.session
    chat.max_tokens.setValue(4000)
    chat._apply_settings()
    chat.composer.setPlainText("Write until you are stopped")
    chat.send_button.click()
    qtbot.waitUntil(lambda: bool(session.reply and len(session.reply["content"]) > 10), timeout=60_000)
    os.kill(first_pid, signal.SIGKILL)

    qtbot.waitUntil(lambda: not session.busy, timeout=20_000)
    cut = session.messages[-1]
    assert cut["status"] == "interrupted" and len(cut["content"]) > 10
    assert "interrupted" in chat.widgets[cut["id"]].status_label.text()
    qtbot.waitUntil(lambda: window.engine_state == "crashed", timeout=20_000)
    assert "crashed" in window.statusBar().state_label.text()
    assert any(r[1] == "error" and "engine" in r[2] for r in window.logs.rows())

    # Restarted after the back-off, with the model that was loaded.
    qtbot.waitUntil(lambda: window.engine.pid() not in (0, first_pid), timeout=30_000)
    qtbot.waitUntil(lambda: window.model_id == long_model_dir.name, timeout=120_000)
    assert window.engine_state == "ready"
    assert [m["status"] for m in session.messages] == ["done", "interrupted"]
    chat.max_tokens.setValue(8)
    chat._apply_settings()
    chat.composer.setPlainText("Still there?")
    chat.send_button.click()
    qtbot.waitUntil(lambda: not session.busy, timeout=60_000)
    assert session.messages[-1]["status"] == "done" and len(session.messages) == 4


def test_killing_the_gui_leaves_no_worker(tmp_path, llama_dir):
    env = {**os.environ, "DEEPSEEK_DESKTOP_DATA": str(tmp_path / "data"), "QT_QPA_PLATFORM": "offscreen"}
    gui = subprocess.Popen([sys.executable, "-m", "deepseek_desktop.app", "--model", str(llama_dir)],
                           cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        workers = []
        while not workers and time.monotonic() < deadline:
            workers = [p for p in psutil.Process(gui.pid).children() if "engine" in " ".join(p.cmdline())]
            time.sleep(0.2)
        assert workers, "the GUI started no worker"
        [worker] = workers
        gui.send_signal(signal.SIGKILL)
        gui.wait(10)
        gone, alive = psutil.wait_procs([worker], timeout=15)
        assert not alive, f"worker {worker.pid} outlived its GUI"
    finally:
        if gui.poll() is None:
            gui.kill()


def test_quit_stops_the_worker_and_the_app_exits_cleanly(tmp_path, llama_dir):
    env = {**os.environ, "DEEPSEEK_DESKTOP_DATA": str(tmp_path / "data"), "QT_QPA_PLATFORM": "offscreen"}
    gui = subprocess.Popen([sys.executable, "-m", "deepseek_desktop.app", "--model", str(llama_dir),
                            "--quit-after", "10"], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, text=True)
    time.sleep(3)
    workers = [p for p in psutil.Process(gui.pid).children() if "engine" in " ".join(p.cmdline())]
    out, err = gui.communicate(timeout=60)
    assert gui.returncode == 0, err[-3000:]
    assert "Fatal Python error" not in err
    assert workers and not any(w.is_running() and w.status() != psutil.STATUS_ZOMBIE for w in workers)


def test_the_worker_gets_its_key_from_the_environment_even_one_starting_with_a_dash(qtbot):
    """token_urlsafe() starts with "-" once in 64; on the command line argparse took such a key for
    an option and the worker exited 2 (the app said "engine failed"). The key also stays out of
    the process list, where other local users could read it."""
    import httpx

    engine = EngineProcess(restart=False)
    engine.api_key = "-" + engine.api_key
    engine.start()
    try:
        qtbot.waitUntil(lambda: engine.url is not None, timeout=60_000)
        assert engine.api_key not in " ".join(psutil.Process(engine.pid()).cmdline())
        headers = {"Authorization": f"Bearer {engine.api_key}"}
        assert httpx.get(engine.url + "/admin/status", headers=headers, timeout=10).status_code == 200
        assert httpx.get(engine.url + "/admin/status", timeout=10).status_code == 401
    finally:
        engine.stop()


def test_quit_while_attached_to_an_engine_that_keeps_running(tmp_path):
    """The attached engine stays up, so its /admin/events stream stays open: quitting must end it
    (it used to block the app's exit for good, waiting on the stream's thread)."""
    from helpers import EngineServer

    env = {**os.environ, "DEEPSEEK_DESKTOP_DATA": str(tmp_path / "data"), "QT_QPA_PLATFORM": "offscreen"}
    with EngineServer(None).start(wait_ready=False) as srv:  # no model: listening is enough
        gui = subprocess.Popen([sys.executable, "-m", "deepseek_desktop.app", "--engine-url", srv.url,
                                "--api-key", srv.api_key, "--quit-after", "4"], cwd=ROOT, env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            out, err = gui.communicate(timeout=40)
        finally:
            if gui.poll() is None:
                gui.kill()
        assert gui.returncode == 0, err[-3000:]
        assert srv.proc.poll() is None  # the engine the app did not start is left running


def test_restart_and_a_relaunch_bring_the_loaded_model_back_selected_in_models(make_window, qtbot, llama_dir):
    """One rule for a crash (above), Engine → Restart engine and a relaunch: the model that was
    loaded comes back, and the Models panel selects it. One unloaded by hand stays unloaded."""
    def selected(window) -> bool:
        entry = window.models.selected
        return entry is not None and entry.path == str(llama_dir)

    window = make_window()
    wait_state(qtbot, window, "idle")
    load_and_wait(qtbot, window, llama_dir)
    first_pid = window.engine.pid()
    seen = []
    window.engine.state_changed.connect(seen.append)
    window.engine.finished.connect(lambda why: seen.append(("ended", window.engine.running())))
    window.engine_session.restart()
    # It returned at once: the old worker is still ending; the new one starts after it has ended.
    assert window.engine.running() and window.engine.pid() == first_pid and seen == ["stopped"]
    qtbot.waitUntil(lambda: window.engine.pid() not in (0, first_pid), timeout=60_000)
    assert seen[:3] == ["stopped", ("ended", False), "starting"]
    qtbot.waitUntil(lambda: window.model_id == llama_dir.name, timeout=120_000)
    qtbot.waitUntil(lambda: selected(window) and window.models.unload_button.isEnabled(), timeout=10_000)
    window.close()

    again = make_window()  # the same data folder: a relaunch
    qtbot.waitUntil(lambda: again.model_id == llama_dir.name, timeout=120_000)
    qtbot.waitUntil(lambda: selected(again) and again.models.unload_button.isEnabled(), timeout=10_000)
    assert any("loaded when the app was last closed" in n.text for n in again.notifier.history)
    again.models.unload_button.click()
    qtbot.waitUntil(lambda: again.model_id is None, timeout=30_000)
    assert again.models.progress_label.text() == "" and again.models.result_label.text() == ""  # nothing stale
    again.close()

    third = make_window()
    wait_state(qtbot, third, "idle")
    assert third.engine_session.pending_load is None and third.model_id is None
    assert "Last used: tiny-llama" in third.engine_session.model_hint()
