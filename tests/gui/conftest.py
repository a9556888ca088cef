"""GUI tests (pytest-qt, offscreen) against real workers, each marked ``gui`` (``-m "not gui"``
runs the rest). Each test gets its own data folder from the root conftest's ``app_data``, so
settings, chat history and fetched models never leak between tests or into the user's."""

from __future__ import annotations

from pathlib import Path

import pytest

from deepseek_desktop.engine_process import EngineProcess
from deepseek_desktop.window import MainWindow

STARTUP_MS = 120_000
GUI_TESTS = Path(__file__).parent


def pytest_collection_modifyitems(items):
    # A conftest's hook sees the whole session's items: mark only the ones in this folder.
    for item in items:
        if GUI_TESTS in item.path.parents:
            item.add_marker(pytest.mark.gui)


@pytest.fixture
def make_window(qtbot):
    """Factory: a main window, by default with its own worker started (as the app does)."""
    windows = []

    def make(engine: bool = True, **kwargs) -> MainWindow:
        process = EngineProcess() if engine else None
        window = MainWindow(process, **kwargs)
        if process is not None:
            process.start()
        window.show()
        windows.append(window)
        return window

    yield make
    for window in windows:
        window.close()  # stops its worker: terminate, then kill after 5 s


def wait_state(qtbot, window, state: str, timeout: int = STARTUP_MS) -> None:
    qtbot.waitUntil(lambda: window.engine_state == state, timeout=timeout)


def load_and_wait(qtbot, window, model_dir, timeout: int = STARTUP_MS) -> None:
    """Through the Models panel, as a user would: pick the folder's model, press Load."""
    window.library.set_folders([str(model_dir.parent)], hf_cache=False)
    qtbot.waitUntil(lambda: window.models.select_path(str(model_dir)), timeout=10_000)
    qtbot.waitUntil(window.models.load_button.isEnabled, timeout=timeout)
    window.models.load_button.click()
    qtbot.waitUntil(lambda: window.model_id == model_dir.name, timeout=timeout)
