"""The desktop app: torch-free, starts a real worker, chats with it, monitors it.

Each check runs in its own process (tests/gui_checks.py), as the app does, and ends the way the
app ends (see deepseek_desktop.app.exit_now).
"""

import subprocess
import sys

from helpers import ROOT


def run_check(*args, timeout=240):
    result = subprocess.run([sys.executable, str(ROOT / "tests" / "gui_checks.py"), *map(str, args)],
                            cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0 and "OK" in result.stdout, result.stdout + result.stderr[-3000:]


def test_gui_process_never_imports_torch():
    run_check("torch_free")


def test_window_starts_worker_streams_a_reply_and_samples_it(llama_dir):
    run_check("window_chat", llama_dir)


def test_a_killed_worker_is_reported_and_the_window_keeps_its_transcript(llama_dir):
    run_check("killed_worker", llama_dir)


def test_monitor_panel_plots_live_telemetry_of_a_real_worker(server, tmp_path):
    run_check("monitor", server.url, server.api_key, server.proc.pid, tmp_path)
