"""Engine → Backend: which engine the app starts, remembered for the next launch (the running one
keeps serving until then; ``deepseek-desktop --backend`` chooses for one launch and remembers too)."""

from __future__ import annotations

from PySide6.QtGui import QAction, QActionGroup
from PySide6.QtWidgets import QMenu, QWidget

from deepseek_desktop.state.settings import BACKENDS, chosen_backend, remember_backend

LABELS = {"built-in": "Built-in engine (transformers)", "vllm": "vLLM (its own Python environment)"}


def install_backend_menu(window: QWidget, engine_menu: QMenu) -> QMenu:
    """Add the Backend submenu; ``window.notifier`` says when the choice takes effect."""
    menu = engine_menu.addMenu("Backend")
    group = QActionGroup(menu)
    running = window.engine_session.backend or "attached"
    for name in BACKENDS:
        action = QAction(LABELS[name], menu, checkable=True, checked=name == chosen_backend())
        action.setObjectName(f"backend-{name}")
        action.triggered.connect(lambda _=False, n=name: _choose(window, n, running))
        group.addAction(action)
        menu.addAction(action)
    return menu


def _choose(window: QWidget, name: str, running: str) -> None:
    remember_backend(name)
    if name == running:
        window.notifier.info(f"backend: {name} (running now)")
    else:
        window.notifier.info(f"backend: {name} from the next launch ({running} runs until then)")
