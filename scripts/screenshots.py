"""Screenshots of each panel at 1440 x 900, with the demo model loaded and a conversation held,
for the README and for looking at what we build. Renders offscreen (the same painting as a window).

Usage: python scripts/screenshots.py [--out docs/screenshots] [--theme dark|light]
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


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", default=str(ROOT / "docs" / "screenshots"))
    parser.add_argument("--theme", default="dark")
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
    sweep(window, spin)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for name in PANELS:
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


if __name__ == "__main__":
    main()
