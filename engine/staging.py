"""Write a folder in full beside its target, then swap it in (torch-free).

The GGUF import and the resharder both write a model folder that the Models panel may be scanning
at the same moment: a reader must see the old folder or the new one, never half of one, and a
failed or cancelled job must leave the old folder as it was.
"""

from __future__ import annotations

import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator


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
        if target.exists():
            shutil.rmtree(target)
        staging.replace(target)
    except BaseException:  # KeyboardInterrupt and a killed job's SystemExit too
        shutil.rmtree(staging, ignore_errors=True)
        raise
