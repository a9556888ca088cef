"""GUI tests (pytest-qt, offscreen) against real workers. Each test gets its own data folder, so
settings, chat history and fetched models never leak between tests or into the user's."""

import pytest

from deepseek_desktop.engine_process import EngineProcess
from deepseek_desktop.window import MainWindow

STARTUP_MS = 120_000


@pytest.fixture(autouse=True)
def app_data(tmp_path, monkeypatch):
    monkeypatch.setenv("DEEPSEEK_DESKTOP_DATA", str(tmp_path / "data"))
    monkeypatch.setenv("DEEPSEEK_DESKTOP_CACHE", str(tmp_path / "cache"))
    return tmp_path / "data"


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
