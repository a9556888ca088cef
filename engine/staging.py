"""Write a file or a folder in full beside its target, then swap it in (torch-free).

The GGUF import and the resharder both write a model folder that the Models panel may be scanning
at the same moment: a reader must see the old folder or the new one, never half of one, and a
failed or cancelled job must leave the old folder as it was. Configs, presets, sweep records and
exports are single files held to the same rule: a crash mid-write never leaves half of one.
"""

from __future__ import annotations

import os
import shutil
import stat
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator


def atomic_write_text(path: str | Path, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` under a temporary name in the same folder, then rename
    it over ``path``; on any failure the temporary file is removed and ``path`` is left as it was.

    The file gets the mode a plain ``open(path, "w")`` would give: an existing file keeps its
    own (a config holding API keys that its owner made 0600 stays 0600), a new one 0666 less the
    umask.

    Raises:
        OSError: the folder is missing or not writable, or ``path`` is a folder.
    """
    path = Path(path)
    # Beside the target, not in /tmp: a rename across filesystems would fail at the last step.
    # A unique name (O_EXCL) so two writers never share a temporary file.
    while True:
        tmp = path.with_name(f".{path.name}.{os.urandom(4).hex()}.tmp")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
            break
        except FileExistsError:
            continue
    try:
        try:
            os.fchmod(fd, stat.S_IMODE(os.stat(path).st_mode))
        except FileNotFoundError:
            pass
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


@contextmanager
def staged_folder(target: Path) -> Iterator[Path]:
    """Yield an empty private folder beside ``target``; when the block ends cleanly it replaces
    ``target`` (a rename on the same filesystem), and when the block raises it is removed and
    ``target`` is left untouched.

    Args:
        target: the folder to create or replace; its parent is created if missing.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    # Beside the target, not in /tmp: a rename across filesystems would fail at the last step.
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        yield staging
        staging.chmod(0o755)  # mkdtemp makes it private to this user
        _swap_in(staging, target)
    except BaseException:  # KeyboardInterrupt and a killed job's SystemExit too
        shutil.rmtree(staging, ignore_errors=True)
        raise


def _swap_in(staging: Path, target: Path) -> None:
    """Rename ``staging`` to ``target``; an older ``target`` is moved aside first and removed only
    once the new one is in place, so a failed rename puts it back."""
    old = None
    if target.exists():
        old = target.with_name(f".{target.name}.old-{os.getpid()}")
        os.replace(target, old)
    try:
        os.replace(staging, target)
    except BaseException:
        if old is not None and not target.exists():
            os.replace(old, target)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
