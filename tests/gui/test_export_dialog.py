"""Export from the app: File → Export configuration… on the running engine, Export on a sweep point,
a target that cannot be written (a notifier error, the dialog stays, no file), and File → Presets…
(save the engine's settings, load, rename, delete)."""

from __future__ import annotations

import json
from pathlib import Path

import httpx

from deepseek_desktop.notifier import Notifier
from deepseek_desktop.widgets.export_dialog import ExportDialog
from engine.config import EngineConfig

SWEEP = Path(__file__).resolve().parent.parent / "data" / "export" / "sweep.json"


def menu_action(window, text: str):
    file_menu = window.menuBar().actions()[0].menu()
    return next(a for a in file_menu.actions() if a.text() == text)


def test_export_from_the_file_menu(qtbot, make_window, server, tmp_path):
    window = make_window(engine=False, url=server.url, api_key=server.api_key)
    qtbot.waitUntil(lambda: window.engine_session.client is not None, timeout=30_000)
    menu_action(window, "Export configuration…").trigger()
    dialog = window.export_dialog
    qtbot.addWidget(dialog)
    qtbot.waitUntil(lambda: dialog.source is not None, timeout=30_000)
    assert dialog.origin.text() == f"engine at {server.url}"
    dialog.set_format("engine-toml")
    dialog.path.setText(str(tmp_path / "engine.toml"))
    notices = []
    window.notifier.posted.connect(notices.append)
    with qtbot.waitSignal(dialog.exported, timeout=30_000):
        dialog.export_button.click()
    exported = EngineConfig.from_toml(tmp_path / "engine.toml")
    in_force = httpx.get(server.url + "/admin/config", headers=server.headers).json()
    assert exported.batching.max_queue == in_force["batching"]["max_queue"] == 4
    assert any(n.level == "info" and "exported engine-toml" in n.text for n in notices)


def test_export_a_sweep_point_and_a_target_that_cannot_be_written(qtbot, tmp_path):
    notifier = Notifier()
    dialog = ExportDialog.for_sweep_point(json.loads(SWEEP.read_text()), 1, notifier)
    qtbot.addWidget(dialog)
    qtbot.waitUntil(lambda: dialog.source is not None, timeout=10_000)
    dialog.set_format("vllm")  # the record keeps no model path: vLLM needs one, the dialog says so
    qtbot.waitUntil(lambda: "vLLM needs a model" in dialog.error.text(), timeout=10_000)
    assert not dialog.export_button.isEnabled()
    dialog.set_format("engine-toml")
    qtbot.waitUntil(lambda: dialog.preview.toPlainText().startswith("deepseek-engine configuration"), timeout=10_000)
    assert "sweep point #1: batching.max_batch_size=8" in dialog.preview.toPlainText()
    errors = []
    notifier.posted.connect(lambda n: errors.append(n) if n.level == "error" else None)
    dialog.path.setText(str(tmp_path / "missing" / "engine.toml"))
    dialog.start_export()
    qtbot.waitUntil(lambda: bool(errors), timeout=10_000)
    assert "cannot write into" in errors[0].text and "no such folder" in dialog.error.text()
    assert not (tmp_path / "missing").exists() and dialog.export_button.isEnabled()
    dialog.path.setText(str(tmp_path / "point.toml"))
    with qtbot.waitSignal(dialog.exported, timeout=10_000):
        dialog.start_export()
    config = EngineConfig.from_toml(tmp_path / "point.toml")
    assert config.batching.max_batch_size == 8 and config.batching.max_wait_ms == 0
    assert [p.name for p in tmp_path.iterdir()] == ["point.toml"]


def test_presets_from_the_file_menu(qtbot, make_window, server):
    window = make_window(engine=False, url=server.url, api_key=server.api_key)
    qtbot.waitUntil(lambda: window.engine_session.client is not None, timeout=30_000)
    menu_action(window, "Presets…").trigger()
    dialog = window.presets_dialog
    qtbot.addWidget(dialog)
    dialog.save_current("queue of four")
    qtbot.waitUntil(lambda: dialog.store.names() == ["queue of four"], timeout=30_000)
    config, _sampling = dialog.store.load("queue of four")
    assert config.batching.max_queue == 4 and config.model.path
    dialog.rename("queue of four", "q4")
    assert [dialog.list.item(i).text() for i in range(dialog.list.count())] == ["q4"]
    notices = []
    window.notifier.posted.connect(notices.append)
    dialog.list.setCurrentRow(0)
    dialog.load_selected()  # PUT /admin/config with the preset's batching and cache: the same values
    qtbot.waitUntil(lambda: any("preset applied" in n.text for n in notices), timeout=30_000)
    dialog.delete_selected()
    assert dialog.store.names() == [] and dialog.list.count() == 0
