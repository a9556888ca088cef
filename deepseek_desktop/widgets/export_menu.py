"""The File menu's "Export configuration…" and "Presets…", and the app icon, wired onto the main window.

Kept out of ``window.py`` (layout only): ``install_export_menu(window, file_menu)`` adds the two
actions; the dialogs they open are kept as ``window.export_dialog`` and ``window.presets_dialog``.
"""

from __future__ import annotations

from typing import Optional

from PySide6.QtGui import QIcon

from deepseek_desktop.widgets.export_dialog import ExportDialog

CHAT_SAMPLING = ("temperature", "top_p", "max_tokens")


def app_icon() -> QIcon:
    """The app icon (resources/icons), every PNG size and the SVG."""
    from engine.resources import resource

    icon = QIcon()
    for size in (16, 24, 32, 48, 64, 128, 256, 512):
        icon.addFile(str(resource(f"resources/icons/deepseek-desktop-{size}.png")))
    return icon


def install_export_menu(window, file_menu) -> None:
    window.export_dialog = None
    window.presets_dialog = None
    file_menu.addAction("Export configuration…", lambda: open_export(window))
    file_menu.addAction("Presets…", lambda: open_presets(window))


def open_export(window) -> Optional[ExportDialog]:
    """The export dialog on the running engine's configuration (a notice when none runs)."""
    client = window.engine_session.client
    if client is None:
        window.notifier.warning("export: no engine is running yet; start one, or export a preset")
        return None
    window.export_dialog = ExportDialog.for_engine(client.url, client.api_key, window.notifier, window)
    window.export_dialog.open()
    return window.export_dialog


def open_presets(window):
    from engine.presets import PresetStore

    from deepseek_desktop.widgets.presets_dialog import PresetsDialog

    def read_config(on_done, on_failed) -> None:
        client = window.engine_session.client
        if client is None:
            on_failed("no engine is running")
            return
        client.request("GET", "/admin/config", on_done, on_failed)

    window.presets_dialog = PresetsDialog(PresetStore(), window.notifier, read_config,
                                          lambda config, sampling: apply_preset(window, config, sampling),
                                          lambda: current_sampling(window), window)
    window.presets_dialog.open()
    return window.presets_dialog


def current_sampling(window) -> dict:
    conversation = window.session.current or {}
    values = {k: v for k, v in (conversation.get("settings") or {}).items() if k in CHAT_SAMPLING}
    if conversation.get("system_prompt"):
        values["system_prompt"] = conversation["system_prompt"]
    return values


def apply_preset(window, config, sampling: dict) -> None:
    """Run-time settings (batching, cache) to the engine; the sampling defaults to the chat."""
    body = config.model_dump(mode="json", include={"batching", "cache"})
    model = config.model.path

    def done(_result) -> None:
        later = f"; its model ({model}) loads from the Models panel" if model else ""
        window.notifier.info(f"preset applied: batching and cache settings in force{later}")

    window.engine_session.admin("PUT", "/admin/config", body, done)
    chat = {k: sampling[k] for k in CHAT_SAMPLING if k in sampling}
    if chat or "system_prompt" in sampling:
        current = window.session.current or {}
        window.session.configure(sampling.get("system_prompt", current.get("system_prompt") or ""),
                                 {**(current.get("settings") or {}), **chat})
