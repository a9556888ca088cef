"""``deepseek-desktop``: parse the command line, open the window at once, start (or attach to) the
engine in the background."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Optional

from PySide6.QtCore import QTimer
from PySide6.QtWidgets import QApplication

from deepseek_desktop.engine_process import EngineProcess
from deepseek_desktop.state.settings import BACKENDS, chosen_backend, read_json, remember_backend
from deepseek_desktop.window import PANELS, MainWindow

# Kept for scripts and tests that import it from here.
__all__ = ["MainWindow", "main"]


def parse_args(argv: Optional[list[str]]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="deepseek-desktop")
    parser.add_argument("--model", help="model folder (or .gguf file) to load at start")
    parser.add_argument("--demo", action="store_true", help="load the demo model at start (fetched first if absent)")
    parser.add_argument("--engine-url", help="attach to an engine already running (any OpenAI-compatible server)")
    parser.add_argument("--api-key", help="its API key")
    parser.add_argument("--backend", choices=BACKENDS,
                        help="the engine the app starts: built-in (its own worker) or vllm (vLLM's OpenAI server "
                             "from its own environment, see 'make vllm'); remembered (Engine → Backend)")
    parser.add_argument("--panel", choices=[p.lower() for p in PANELS], help="the panel to open on")
    parser.add_argument("--report-startup", action="store_true",
                        help="print the time of the first painted window as a JSON line (benchmarks)")
    parser.add_argument("--quit-after", type=float, metavar="S", help="close the window after S seconds (scripts)")
    parser.add_argument("--install-desktop-entry", action="store_true",
                        help="add the app (menu entry, icon, AppStream metainfo) to this user's desktop, then exit")
    return parser.parse_args(argv)


def start_after_first_paint(window: MainWindow, engine: EngineProcess, at_latest_ms: int = 1000) -> None:
    """Start the worker once the window is drawn: its own start-up (a Python process importing
    its server) would otherwise take a core from the first paint. ``at_latest_ms``: a window
    that is never painted (minimised) does not hold the engine back longer than that."""
    started = []

    def start() -> None:
        if not started and window.isVisible():  # not once the window is closed
            started.append(True)
            engine.start()
    fallback = QTimer(window, singleShot=True, interval=at_latest_ms, timeout=start)
    fallback.start()
    # Queued: the paint that emitted first_painted finishes before the process is forked.
    window.first_painted.connect(lambda _when: QTimer.singleShot(0, start))


def make_engine(backend: str, model: Optional[str], demo: bool) -> EngineProcess:
    """The worker the app owns. vLLM serves one model chosen at its start: the one asked for, the
    demo's, or the one loaded last (another is served by Load, which restarts it)."""
    if backend != "vllm":
        return EngineProcess()
    from deepseek_desktop.vllm_process import VllmProcess
    from deepseek_desktop.state.engine_session import reload_at_launch
    from engine.paths import demo_model_dir, is_model_folder

    if model is None and demo and is_model_folder(demo_model_dir()):
        model = str(demo_model_dir())
    if model is None and reload_at_launch():  # Engine → "Load the last model at launch"
        last = read_json("engine/last_load", None)
        model = last.get("path") if isinstance(last, dict) else None
    return VllmProcess(model_path=model)


def main(argv: Optional[list[str]] = None) -> int:
    args = parse_args(argv)
    if args.install_desktop_entry:
        from deepseek_desktop.desktop_entry import main as install

        return install()
    app = QApplication(sys.argv[:1])
    app.setApplicationName("DeepSeek Desktop")
    if args.backend:
        remember_backend(args.backend)
    backend = chosen_backend()
    engine = make_engine(backend, args.model, args.demo) if not args.engine_url else None
    load = {"path": args.model} if args.model and backend != "vllm" else None
    window = MainWindow(engine, args.engine_url, args.api_key, load_on_start=load)
    if engine is not None:
        start_after_first_paint(window, engine)
    if args.report_startup:
        window.first_painted.connect(lambda t: print(json.dumps({"event": "first_paint", "time": t}), flush=True))
    if args.panel:
        window.show_panel(args.panel.title())
    window.show()
    if args.demo and not args.model and not (engine is not None and engine.model_path):
        window.fetch_and_load_demo()
    if args.quit_after is not None:
        QTimer.singleShot(int(args.quit_after * 1000), window.close)
    return app.exec()  # closing the window stopped the worker, the sampler and the chat store


if __name__ == "__main__":
    sys.exit(main())
