"""Import GGUF… with a real GGUF file (the demo model's, from PyPI): the Models panel runs the
import as a child process, shows its steps, and the new folder joins the catalog, loadable."""

import re

import pytest

pytestmark = pytest.mark.slow  # demo_gguf: the session's one download (tests/conftest.py)


def test_import_gguf_from_the_models_panel_adds_a_loadable_model(make_window, qtbot, demo_gguf, app_data, monkeypatch):
    from PySide6.QtWidgets import QFileDialog

    window = make_window(engine=False)
    seen = []
    window.library.job_progress.connect(lambda line, _percent: seen.append(line))
    # The file dialog is native and modal: its answer is stood in for; the import itself is real.
    monkeypatch.setattr(QFileDialog, "getOpenFileName", lambda *a, **k: (str(demo_gguf), "GGUF files (*.gguf)"))
    with qtbot.waitSignal(window.library.job_finished, timeout=300_000) as finished:
        window.models.import_button.click()
        assert not window.models.job_bar.isHidden() and not window.models.import_button.isEnabled()
    ok, message, path = finished.args
    assert ok, message
    assert path.endswith(demo_gguf.stem) and "import" in message
    # The conversion's tensors were counted on the bar, as tidy lines ("…: 174 of 272 (64%)")
    assert any(re.search(r": \d+ of \d+ \(\d{1,3}%\)$", line) for line in seen), seen[-5:]
    qtbot.waitUntil(lambda: window.models.select_path(path), timeout=30_000)
    # The demo's Q4_1 file keeps its precision class (issue 20): bfloat16 weights marked to load as int4
    selected = window.models.selected
    assert selected.loadable and selected.dtype == "bfloat16" and selected.precision_class == "int4"
    weights = window.models.estimate_values["Weights"]
    qtbot.waitUntil(lambda: weights.text() not in ("—", "N/A", ""), timeout=30_000)  # estimated before any load
    assert window.models.import_button.isEnabled() and window.models.job_bar.isHidden()


def test_quitting_during_an_import_ends_it_quietly(make_window, qtbot, demo_gguf, capfd):
    from deepseek_desktop.state.library import models_dir

    window = make_window(engine=False)
    assert window.library.import_gguf(str(demo_gguf))
    job = window.library.job
    qtbot.waitUntil(lambda: job.pid() > 0, timeout=10_000)
    pid = job.pid()
    window.close()
    import psutil

    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    assert "already deleted" not in capfd.readouterr().err
    assert not (models_dir() / demo_gguf.stem).exists()  # nothing half-written left as a model
