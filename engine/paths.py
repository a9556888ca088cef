"""Where the engine keeps its files by default (torch-free)."""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Iterable

from platformdirs import user_cache_dir, user_data_dir

APP_NAME = "deepseek-desktop"
DEMO_MODEL_NAME = "SmolLM2-135M-Instruct"


def data_dir() -> Path:
    """``DEEPSEEK_DESKTOP_DATA`` or the platform's user data folder."""
    return Path(os.environ.get("DEEPSEEK_DESKTOP_DATA") or user_data_dir(APP_NAME))


def cache_dir() -> Path:
    return Path(os.environ.get("DEEPSEEK_DESKTOP_CACHE") or user_cache_dir(APP_NAME))


def models_dir() -> Path:
    return data_dir() / "models"


def demo_model_dir(base: Path | None = None) -> Path:
    return (base or models_dir()) / DEMO_MODEL_NAME


def is_model_folder(path: Path) -> bool:
    return (path / "config.json").is_file() and any(path.glob("*.safetensors"))


def make_private(folder: Path, files: Iterable[str] = ()) -> list[str]:
    """Keep ``folder`` to its owner, as ssh and gpg keep theirs: it is made 0700 (created so, or
    tightened when others may read it) and the files directly in it 0600; each of ``files`` absent
    is created empty and 0600, so what is later written into it (chat history, settings) starts
    private. Nothing is done where permissions are not POSIX ones.

    Returns:
        what was tightened, as "path (644 → 600)", for the app's Logs.
    """
    folder = Path(folder)
    if os.name != "posix":
        folder.mkdir(parents=True, exist_ok=True)
        return []
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    for name in files:
        if not (folder / name).exists():
            os.close(os.open(folder / name, os.O_CREAT | os.O_WRONLY, 0o600))
    changed = []
    for path, private in [(folder, 0o700)] + [(p, 0o600) for p in sorted(folder.iterdir())]:
        info = path.lstat()
        if stat.S_ISLNK(info.st_mode) or (path != folder and not stat.S_ISREG(info.st_mode)):
            continue  # a link's target is not ours to change; subfolders are behind this one
        mode = stat.S_IMODE(info.st_mode)
        if mode & 0o077:
            os.chmod(path, mode & ~0o077 if path == folder else private)
            changed.append(f"{path} ({mode:o} → {stat.S_IMODE(path.lstat().st_mode):o})")
    return changed
