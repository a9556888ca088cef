"""Screenshots of each panel at 1440 x 900, with the demo model loaded and a conversation held,
for the README and for looking at what we build. Renders offscreen (the same painting as a window).

Usage: python scripts/screenshots.py [--out docs/screenshots] [--theme dark|light] [--panels Search,Chat]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
ROOT = Path(__file__).resolve().parent.parent
PROMPT = "Write a Python function that reverses a string, in a code block, then explain it in one sentence."
SEARCH_QUERY = "event loop lateness"
SEARCH_QUESTION = "How does the app keep the GUI from blocking?"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", default=str(ROOT / "docs" / "screenshots"))
    parser.add_argument("--theme", default="dark")
    parser.add_argument("--panels", default="", help="comma-separated panels to shoot (default: all)")
    args = parser.parse_args()
    from engine.paths import demo_model_dir, is_model_folder

    demo = demo_model_dir()  # the user's copy, fetched by `make run` or `deepseek-engine fetch-demo`
    if not is_model_folder(demo):
        sys.exit(f"no demo model in {demo}: run 'deepseek-engine fetch-demo' first")
    os.environ["DEEPSEEK_DESKTOP_DATA"] = tempfile.mkdtemp(prefix="screens-")  # a clean profile

    from PySide6.QtCore import QEventLoop, QTimer
    from PySide6.QtWidgets import QApplication

    from deepseek_desktop.engine_process import EngineProcess
    from deepseek_desktop.window import PANELS, MainWindow

    app = QApplication([])

    def spin(until, timeout: float) -> None:
        loop, deadline = QEventLoop(), time.monotonic() + timeout
        while not until() and time.monotonic() < deadline:
            QTimer.singleShot(50, loop.quit)
            loop.exec()

    engine = EngineProcess()
    window = MainWindow(engine)
    window.set_theme(args.theme)
    window.resize(1440, 900)
    engine.start()
    window.show()
    spin(lambda: window.engine_state == "idle", 120)
    window.library.set_folders([str(demo.parent)], hf_cache=False)
    spin(lambda: window.models.select_path(str(demo)), 20)
    window.show_panel("Models")
    window.models.load_button.click()
    spin(lambda: window.model_id is not None, 300)
    window.show_panel("Chat")
    window.chat.composer.setPlainText(PROMPT)
    window.chat.send()
    spin(lambda: not window.session.busy, 300)
    spin(lambda: False, 6)  # a few telemetry samples for the Monitor
    wanted = [p.strip().title() for p in args.panels.split(",") if p.strip()] or PANELS
    if "Tuning" in wanted:
        sweep(window, spin)
    if "Search" in wanted:
        search(window, spin)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for name in wanted:
        window.show_panel(name)
        spin(lambda: False, 1.5)
        path = out / f"{name.lower()}-{args.theme}.png"
        window.grab().save(str(path))
        print(path)
    window.close()


def sweep(window, spin) -> None:
    """A small finished sweep for the Tuning panel (a few minutes on a CPU), its best point chosen."""
    window.show_panel("Tuning")
    panel = window.tuning
    spin(lambda: bool(panel.model.budgets), 30)
    panel.grid_edit.setPlainText('"batching.max_batch_size" = [1, 4, 8]\n"batching.max_wait_ms" = [0, 50]\n')
    panel.concurrency_edit.setText("1,4")
    panel.per_value.setValue(4)
    panel.prompt_box.setValue(32)
    panel.output_box.setValue(16)
    panel.run_sweep()
    spin(lambda: not panel.model.running, 900)
    best = panel.model.record.recommended if panel.model.record else None
    panel.select(best.index if best else None)


def search(window, spin) -> None:
    """A collection of this project's README, a query typed, and a question asked about it."""
    import shutil

    folder = Path(tempfile.mkdtemp(prefix="screens-docs-")) / "project-docs"
    folder.mkdir()
    shutil.copy(ROOT / "README.md", folder)
    window.show_panel("Search")
    panel = window.search
    spin(lambda: panel.model.available, 60)
    panel.create_collection("project-docs", [str(folder)])
    spin(lambda: panel.model.collections.get("project-docs", {}).get("state") == "ready", 600)
    panel.query_box.setText(SEARCH_QUERY)
    spin(lambda: bool((panel.model.last_results or {}).get("hits")), 30)
    panel.ask_model.max_tokens = 96
    panel.ask_model.ask(SEARCH_QUESTION, "project-docs")
    spin(lambda: not panel.ask_model.busy, 600)
    if panel.ask_model.answer and panel.ask_model.answer["citations"]:
        panel.citations.show_passage(1)


if __name__ == "__main__":
    main()
