"""vLLM as the app's engine (``VllmProcess``), with vLLM's real CPU build on the real demo model:
started from the app, a greedy answer, Monitor rows from vLLM's metrics, a crash reported and
restarted, stopped with the app, a bad flag not restarted.

Runs where ``.venv-vllm`` exists (``make vllm``; ``make test`` builds it, so CI runs these);
elsewhere it is SKIPPED, which is not a pass. One vLLM serves the module's first tests (a start is
~45 s here with ``--enforce-eager``, ~3.5 min with vLLM's default compilation); the crash test
restarts that one, the bad flag exits in vLLM's argument parser (no model loaded).
"""

from __future__ import annotations

import os
import signal
import time

import psutil
import pytest

from deepseek_desktop.vllm_process import VllmProcess
from deepseek_desktop.window import MainWindow
from helpers import ROOT

VLLM_PYTHON = ROOT / ".venv-vllm" / "bin" / "python"
pytestmark = pytest.mark.skipif(not VLLM_PYTHON.exists(),
                                reason="vLLM is not installed here: run 'make vllm' to build .venv-vllm "
                                       "(vLLM's CPU build); these tests did NOT run")
DEMO = "SmolLM2-135M-Instruct"
START_MS = 420_000
# Eager: vLLM's inductor compilation costs minutes per start on 2 cores; a small KV space.
FLAGS = ["--enforce-eager"]
SMALL = {"model": {"max_context": 1024}, "batching": {"max_batch_size": 4}}


@pytest.fixture(scope="module")
def demo_dir(demo_fetch):
    base, result = demo_fetch
    assert result.returncode == 0, result.stderr[-2000:]
    return base / DEMO


@pytest.fixture(scope="module")
def vllm_app(qapp, demo_dir, tmp_path_factory):
    """The app with the vLLM backend, started on the demo model, shared by the module's tests up
    to the one that stops it; (window, when it was started)."""
    folder = tmp_path_factory.mktemp("vllm-app")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("DEEPSEEK_DESKTOP_DATA", str(folder / "data"))
        patch.setenv("DEEPSEEK_DESKTOP_CACHE", str(folder / "cache"))
        engine = VllmProcess(str(demo_dir), extra_args=FLAGS, config=SMALL)
        window = MainWindow(engine)
        started = time.monotonic()
        engine.start()
        window.show()
    yield window, started
    if window.isVisible():
        window.close()


def test_the_app_starts_vllm_on_the_demo_model(vllm_app, qtbot):
    window, started = vllm_app
    qtbot.waitUntil(lambda: window.engine_state == "ready", timeout=START_MS)
    print(f"vLLM's first start from the app: {time.monotonic() - started:.0f} s")
    engine = window.engine
    assert window.model_id == DEMO and engine.backend == "vllm" and engine.python == str(VLLM_PYTHON)
    assert window.statusBar().model_label.text() == f"{DEMO} · vLLM"
    assert window.statusBar().state_label.text() == "ready"
    command = " ".join(psutil.Process(engine.pid()).cmdline())
    assert engine.api_key not in command and f"--port {engine.port}" in command
    assert f"port: {engine.port}" in engine.config_file.read_text()  # started from the exported file
    import httpx

    assert httpx.get(engine.url + "/v1/models", timeout=10).status_code == 401  # the key is vLLM's
    logs = [row[2] for row in window.logs.rows()]
    assert any("Application startup complete" in text for text in logs)
    assert not any('"GET /health' in text or '"GET /metrics' in text for text in logs)


def test_the_chat_gets_the_greedy_paris_answer(vllm_app, qtbot):
    window, _ = vllm_app
    chat, session = window.chat, window.session
    chat.temperature.setValue(0.0)
    chat.max_tokens.setValue(24)
    chat._apply_settings()
    chat.composer.setPlainText("What is the capital of France?")
    chat.send_button.click()
    qtbot.waitUntil(lambda: not session.busy and session.messages and session.messages[-1]["role"] == "assistant",
                    timeout=60_000)
    reply = session.messages[-1]
    assert reply["status"] == "done" and "Paris" in reply["content"], reply


def test_monitor_rows_come_from_vllms_metrics(vllm_app, qtbot):
    window, _ = vllm_app
    rows = []
    window.telemetry.row_added.connect(rows.append)
    client = window.engine_session.client
    body = {"model": DEMO, "prompt": "Count: one two three", "max_tokens": 64, "temperature": 0, "ignore_eos": True}
    import httpx

    for _ in range(3):  # a few seconds of generating, so rows see the counters move
        response = httpx.post(client.url + "/v1/completions", json=body, headers=client.headers, timeout=60)
        assert response.status_code == 200, response.text
    qtbot.waitUntil(lambda: any((r.get("engine_generation_tokens_per_s") or 0) > 0 for r in rows), timeout=20_000)
    assert all(r["engine_requests_running"] is not None for r in rows)  # vLLM's gauge, 0 when idle: not N/A
    assert window.telemetry.last_row["worker_rss_bytes"] > 0  # the vLLM server's own process


def test_load_controls_that_need_admin_say_so(vllm_app, qtbot):
    window, _ = vllm_app
    window.engine_session.unload()
    assert "needs the built-in engine's /admin API" in window.notifier.history[-1].text
    assert "/admin API" in window.models.unload_button.toolTip()
    assert window.model_id == DEMO  # nothing happened to the served model


def test_the_tuning_sweep_runs_workload_only_against_vllm(vllm_app, qtbot):
    """vLLM has no PUT /admin/config: the Tuning panel greys out the settings and the grid, says
    why, and its sweep measures the concurrency levels against the settings vLLM runs with."""
    window, _ = vllm_app
    qtbot.waitUntil(lambda: window.engine_state == "ready", timeout=START_MS)
    panel = window.tuning
    model = panel.model
    model.refresh()
    qtbot.waitUntil(lambda: model.engine.url == window.engine.url and "no /admin API" in model.engine.reason,
                    timeout=30_000)
    assert not model.engine.admin
    assert "no /admin API" in panel.notice.text() and "workload-only sweep" in panel.notice.text()
    assert not panel.form.grid_edit.isEnabled() and "workload-only" in panel.form.grid_edit.toolTip()
    assert panel.knobs and not any(knob.editor.isEnabled() for knob in panel.knobs.values())
    assert not panel.apply_button.isEnabled()
    form = panel.form
    form.prompt_box.setValue(16)
    form.output_box.setValue(8)
    form.concurrency_edit.setText("1,2")
    form.per_value.setValue(2)
    finished, failed = [], []
    model.sweeps.sweep_finished.connect(finished.append)
    model.sweeps.sweep_failed.connect(failed.append)
    panel.run_sweep()
    qtbot.waitUntil(lambda: bool(finished or failed), timeout=180_000)
    assert not failed, failed
    record = finished[0]
    assert record.status == "finished", (record.stopped_reason, [p.to_dict() for p in record.points])
    assert record.admin is False and record.grid == {}
    assert [p.concurrency for p in record.points] == [1, 2]
    assert all(p.ok == p.requests >= 2 and p.output_tokens_per_s > 0 for p in record.points), record.points
    assert record.restored is not False and not record.restore_error  # nothing to put back: nothing was changed
    assert not [n.text for n in window.notifier.history if "/admin/config" in n.text and n.level == "error"]


def test_a_crash_is_reported_with_its_output_and_restarted(vllm_app, qtbot):
    window, _ = vllm_app
    engine = window.engine
    first = psutil.Process(engine.pid())
    family = [first, *first.children(recursive=True)]  # vLLM's engine core runs in a child
    os.kill(first.pid, signal.SIGKILL)
    qtbot.waitUntil(lambda: window.engine_state == "crashed", timeout=20_000)
    errors = [n.text for n in window.notifier.history if n.level == "error" and n.source == "engine"]
    assert errors and errors[-1].startswith("engine crashed: |"), errors
    assert "Application startup complete" in errors[-1] or "POST /v1/" in errors[-1]  # vLLM's own last lines
    assert "GET /metrics" not in errors[-1]
    gone, alive = psutil.wait_procs(family[1:], timeout=30)
    assert not alive, f"vLLM's children outlived it: {alive}"
    restarted = time.monotonic()
    qtbot.waitUntil(lambda: engine.pid() not in (0, first.pid), timeout=30_000)  # after the 1 s back-off
    qtbot.waitUntil(lambda: window.engine_state == "ready", timeout=START_MS)
    print(f"vLLM's second start (after the crash): {time.monotonic() - restarted:.0f} s")
    assert window.model_id == DEMO and engine.restarts == 1


def test_closing_the_app_stops_vllm_and_its_children(vllm_app, qtbot):
    window, _ = vllm_app
    server = psutil.Process(window.engine.pid())
    family = [server, *server.children(recursive=True)]
    assert len(family) >= 2
    window.close()
    gone, alive = psutil.wait_procs(family, timeout=15)
    assert not alive, f"still running after the app closed: {alive}"


def test_a_bad_flag_fails_once_without_a_restart_loop(demo_dir, qtbot):
    engine = VllmProcess(str(demo_dir), extra_args=["--no-such-flag"], config=SMALL)
    finished = []
    engine.finished.connect(finished.append)
    engine.start()
    try:
        qtbot.waitUntil(lambda: engine.state == "failed", timeout=120_000)
        qtbot.wait(3000)  # the first back-off is 1 s: a restart would have begun
        assert not engine.running() and engine.restarts == 0 and len(finished) == 1
        assert finished[0].startswith("engine could not start (exited with code 2)"), finished
        assert "--no-such-flag" in finished[0]
    finally:
        engine.stop()
