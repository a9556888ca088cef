"""``deepseek-desktop --install-desktop-entry``: the app in the current user's desktop menus.

Copies the desktop entry and the AppStream metainfo from ``packaging/linux/`` and the icons from
``resources/icons/`` (the wheel carries both) into the user's XDG data folder
(``$XDG_DATA_HOME`` or ``~/.local/share``): ``applications/``, ``metainfo/`` and
``icons/hicolor/<size>/apps/``. ``Exec`` and ``TryExec`` point at this install's ``deepseek-desktop``.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

from engine.resources import resource

APP_ID = "io.github.deepseek_desktop.DeepSeekDesktop"
ICON = "deepseek-desktop"
PNG_SIZES = (16, 24, 32, 48, 64, 128, 256, 512)


def _data_home() -> Path:
    return Path(os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share")


def _executable() -> str:
    """This install's launcher: the script beside the running Python, else the one on PATH."""
    beside = Path(sys.executable).parent / "deepseek-desktop"
    return str(beside) if beside.exists() else (shutil.which("deepseek-desktop") or "deepseek-desktop")


def install_desktop_entry(data_home: Path | None = None) -> list[Path]:
    """Install the entry, the metainfo and the icons; returns the files written.

    Raises:
        OSError: the data folder cannot be written.
    """
    base = data_home or _data_home()
    written: list[Path] = []
    entry = resource(f"packaging/linux/{APP_ID}.desktop").read_text(encoding="utf-8")
    exe = _executable()
    entry = entry.replace("Exec=deepseek-desktop", f"Exec={exe}").replace("TryExec=deepseek-desktop", f"TryExec={exe}")
    written.append(_write(base / "applications" / f"{APP_ID}.desktop", entry))
    metainfo = resource(f"packaging/linux/{APP_ID}.metainfo.xml").read_text(encoding="utf-8")
    written.append(_write(base / "metainfo" / f"{APP_ID}.metainfo.xml", metainfo))
    icons = base / "icons" / "hicolor"
    written.append(_copy(resource(f"resources/icons/{ICON}.svg"), icons / "scalable" / "apps" / f"{ICON}.svg"))
    for size in PNG_SIZES:
        written.append(_copy(resource(f"resources/icons/{ICON}-{size}.png"),
                             icons / f"{size}x{size}" / "apps" / f"{ICON}.png"))
    return written


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)
    return path


def _copy(source: Path, target: Path) -> Path:
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(source, target)
    return target


def main() -> int:
    try:
        written = install_desktop_entry()
    except OSError as exc:
        print(f"error: cannot install the desktop entry: {exc}", file=sys.stderr)
        return 2
    print(f"installed {written[0]} and {len(written) - 1} more files (metainfo, icons)")
    return 0
