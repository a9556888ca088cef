"""What every format shares: the header that says where an export came from, and atomic writes.

Every exported file starts with the same facts (model, fingerprint, dates, the sweep point) and
lists, as comments, each setting that did not map and why. Files are written to a temporary name
and renamed; a folder is built beside its target and renamed into place, so a failed export never
leaves a partial file or folder behind.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from engine.export.source import ExportError, ExportSource
from engine.staging import atomic_write_text, staged_folder


@dataclass
class Note:
    """A setting that has no counterpart in the target (or only a near one), and why."""

    setting: str
    why: str

    def line(self) -> str:
        return f"{self.setting}: {self.why}"


@dataclass
class Rendered:
    """What a format produced: files (relative path -> text) and, for vLLM, the command line."""

    files: dict[str, str]
    notes: list[Note] = field(default_factory=list)
    command: Optional[str] = None


@dataclass
class ExportResult:
    paths: list[Path]
    notes: list[Note]
    command: Optional[str] = None


def export_date() -> str:
    """Now, or ``SOURCE_DATE_EPOCH`` (reproducible output: the golden-file tests set it)."""
    epoch = os.environ.get("SOURCE_DATE_EPOCH")
    stamp = int(epoch) if epoch and epoch.isdigit() else int(time.time())
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(stamp))


def header_lines(source: ExportSource, title: str, notes: list[Note]) -> list[str]:
    """The top of every export, without comment markers: origin, model, dates, point, what did not map."""
    model = source.model or {}
    lines = [title, f"exported by deepseek-engine {_version()} on {export_date()} from {source.origin}"]
    lines.append(f"model: {model.get('name') or source.config.model.served_model_name or 'unknown'}"
                 f" · path {model.get('path') or source.config.model.path or 'unknown'}"
                 f" · fingerprint {model.get('fingerprint') or 'unknown (model not on this machine)'}"
                 + (f" · {model['params']:,} parameters" if model.get("params") else ""))
    if source.created:
        lines.append(f"source measured/recorded: {source.created}")
    if source.point:
        lines.append("sweep point " + _point_text(source.point))
    for text in source.unknown:
        lines.append(f"unknown: {text}")
    if notes:
        lines.append("not mapped, or mapped to the nearest setting:")
        lines += [f"  - {note.line()}" for note in notes]
    else:
        lines.append("not mapped: nothing, every setting carried over")
    return lines


def _point_text(point: dict) -> str:
    keys = ", ".join(f"{k}={v}" for k, v in sorted((point.get("config") or {}).items())) or "the reference settings"
    parts = [f"#{point.get('index')}: {keys}"]
    if point.get("concurrency") is not None:
        parts.append(f"concurrency {point['concurrency']}")
    if point.get("output_tokens_per_s") is not None:
        parts.append(f"{point['output_tokens_per_s']:.1f} output tok/s")
    e2e = point.get("e2e_s") or {}
    if isinstance(e2e, dict) and e2e.get("p99") is not None:
        parts.append(f"p99 e2e {e2e['p99']:.3f} s")
    return " · ".join(parts)


def commented(lines: list[str], marker: str = "#") -> str:
    return "".join(f"{marker} {line}".rstrip() + "\n" for line in lines)


def _version() -> str:
    from importlib import metadata

    try:
        return metadata.version("deepseek-desktop")
    except metadata.PackageNotFoundError:
        return "(source tree)"


# ---------------------------------------------------------------------------- writing


def write_file(path: Path, text: str) -> Path:
    """Write ``text`` to ``path`` atomically (temporary name in the same folder, then rename).

    Raises:
        ExportError: the folder is missing or not writable, or ``path`` is a folder.
    """
    path = Path(path)
    if path.is_dir():
        raise ExportError(f"{path} is a folder: give a file name for this format")
    _check_folder(path.parent)
    try:
        return atomic_write_text(path, text)
    except OSError as exc:
        raise ExportError(f"cannot write {path}: {exc.strerror or exc}") from None


def write_folder(path: Path, files: dict[str, str]) -> list[Path]:
    """Build the folder beside ``path`` and rename it into place (an older export there is replaced).

    Raises:
        ExportError: the parent is missing or not writable, or ``path`` is a file.
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise ExportError(f"{path} is a file: this format writes a folder")
    _check_folder(path.parent)
    try:
        with staged_folder(path) as staging:
            for relative, text in files.items():
                target = staging / relative
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_text(text, encoding="utf-8")
    except OSError as exc:
        raise ExportError(f"cannot write {path}: {exc.strerror or exc}") from None
    return [path / relative for relative in files]


def _check_folder(folder: Path) -> None:
    folder = folder if str(folder) else Path(".")
    if not folder.is_dir():
        raise ExportError(f"cannot write into {folder}: no such folder")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise ExportError(f"cannot write into {folder}: permission denied")
