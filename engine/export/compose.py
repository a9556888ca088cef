"""``compose`` and ``compose-vllm``: Docker Compose folders (filled in below)."""

from __future__ import annotations

from typing import Any

from engine.export.common import Rendered
from engine.export.source import ExportError, ExportSource


def render_engine(source: ExportSource, **_options: Any) -> Rendered:
    raise ExportError("compose export: not yet")


def render_vllm(source: ExportSource, **_options: Any) -> Rendered:
    raise ExportError("compose-vllm export: not yet")
