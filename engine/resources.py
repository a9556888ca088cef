"""Files the program reads at run time, in one place (torch-free; the app and ``export`` share them).

The source tree keeps them at the top level, in ``resources/`` (icons, the Grafana dashboard, the
Prometheus template, the commented default engine TOML) and ``packaging/`` (Dockerfiles, the
default compose file, the Linux desktop entry). The wheel carries both as ``engine/_data/`` (setup.py
copies them at build time), so an installed program never reads outside its own package.
"""

from __future__ import annotations

from pathlib import Path

_PACKAGED = Path(__file__).resolve().parent / "_data"
_SOURCE_TREE = Path(__file__).resolve().parent.parent


def data_root() -> Path:
    """``engine/_data`` in an installed wheel; the source tree in a checkout (or an editable install)."""
    return _PACKAGED if _PACKAGED.is_dir() else _SOURCE_TREE


def resource(relative: str) -> Path:
    """The file ``relative`` (``"resources/engine.toml"``, ``"packaging/docker/Dockerfile"``).

    Raises:
        FileNotFoundError: this install lacks the file (a wheel built without it).
    """
    path = data_root() / relative
    if not path.exists():
        raise FileNotFoundError(f"resource missing from this install: {relative} (looked in {data_root()})")
    return path


def read_resource(relative: str) -> str:
    return resource(relative).read_text(encoding="utf-8")
