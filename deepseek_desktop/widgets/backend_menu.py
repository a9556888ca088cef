"""Engine → Backend: which engine the app starts, remembered for the next launch (the running one
keeps serving until then; ``deepseek-desktop --backend`` chooses for one launch and remembers too).

Why not switch at once: the window, its engine session, the sampler, the status bar and the panels
are each built around the one engine process the app was started with (its signals, its pid, whether
it has our /admin API), and replies may be streaming from it. Swapping it under them would leave
them bound to the stopped one; a relaunch builds them all around the new one. The menu says so."""

from __future__ import annotations

from PySide6.QtGui import QAction, QActionGroup
from PySide6.QtWidgets import QMenu, QWidget

from deepseek_desktop.state.settings import BACKENDS, chosen_backend, remember_backend

LABELS = {"built-in": "Built-in engine (transformers)", "vllm": "vLLM (its own Python environment)"}
NEXT_LAUNCH = ("The choice is remembered and takes effect when the app starts next: the engine running now "
               "keeps serving until then (the window and its panels are built around it, and replies may "
               "be streaming from it)")


def install_backend_menu(window: QWidget, engine_menu: QMenu) -> QMenu:
    """Add the Backend submenu; ``window.notifier`` says when the choice takes effect."""
    menu = engine_menu.addMenu("Backend")
    menu.setToolTipsVisible(True)
    group = QActionGroup(menu)
    running = window.engine_session.backend or "attached"
    for name in BACKENDS:
        action = QAction(LABELS[name], menu, checkable=True, checked=name == chosen_backend())
        action.setObjectName(f"backend-{name}")
        action.setToolTip(NEXT_LAUNCH)
        action.triggered.connect(lambda _=False, n=name: _choose(window, n, running))
        group.addAction(action)
        menu.addAction(action)
    menu.addSeparator()
    note = menu.addAction(f"Applies at the next launch ({LABELS.get(running, running).split(' (')[0]} runs now)")
    note.setObjectName("backend-next-launch")
    note.setEnabled(False)  # a statement, not a command
    note.setToolTip(NEXT_LAUNCH)
    return menu


def _choose(window: QWidget, name: str, running: str) -> None:
    remember_backend(name)
    if name == running:
        window.notifier.info(f"backend: {name} (running now)")
    else:
        window.notifier.info(f"backend: {name} from the next launch ({running} runs until then)")
