"""Help → Diagnostics: the doctor's findings in a dialog, off the GUI thread, copied whole."""

from PySide6.QtGui import QGuiApplication

from deepseek_desktop.widgets.diagnostics_dialog import DiagnosticsDialog


def test_help_diagnostics_shows_the_doctors_findings_and_copies_them(make_window, qtbot, llama_dir):
    window = make_window(engine=False)
    [help_menu] = [a.menu() for a in window.menuBar().actions() if a.text() == "&Help"]
    [action] = [a for a in help_menu.actions() if a.text() == "Diagnostics…"]
    window.engine_session.last_load = {"path": str(llama_dir)}
    action.trigger()
    dialog = window.findChild(DiagnosticsDialog)
    qtbot.waitUntil(lambda: dialog.done_once, timeout=30_000)
    text = dialog.text.toPlainText()
    assert "NVIDIA driver and NVML" in text and "torch build" in text
    assert f"model folder: {llama_dir}: loadable" in text
    assert dialog.verdict.text() == "Nothing blocks a model from running here."
    dialog.copy_button.click()
    assert QGuiApplication.clipboard().text() == text
    dialog.close()
