"""``record``: one JSON run record of a configuration and where it ran.

``model`` (name, path, fingerprint, parameters, dtype), ``hardware`` (CPU model and cores, RAM, GPUs
with driver and CUDA versions), ``software`` (Python, torch, transformers, this project), ``config``
(the config in force, without secrets) and ``figures`` (the latest bench or sweep figures).
``export --from record.json --format engine-toml`` gives the same configuration back.
"""

from __future__ import annotations

import json
from typing import Any

from engine.export.common import Rendered, export_date, header_lines
from engine.export.engine_toml import exportable
from engine.export.source import ExportSource
from engine.records import RECORD_KIND, RECORD_VERSION, hardware_summary, software_versions


def render(source: ExportSource, **_options: Any) -> Rendered:
    config, notes = exportable(source.config)
    # Measured elsewhere (a sweep, another record): keep that machine's facts; otherwise this one's.
    hardware = source.hardware or hardware_summary()
    software = source.software or software_versions()
    record = {
        "kind": RECORD_KIND,
        "version": RECORD_VERSION,
        "created": source.created or export_date(),
        "exported": export_date(),
        "source": source.origin,
        "about": header_lines(source, "run record", notes),
        "model": source.model,
        "hardware": hardware,
        "software": software,
        "config": config.model_dump(mode="json", exclude_none=True, context={"reveal_secrets": True}),
        "status": _status(source.status),
        "figures": source.figures or ({"sweep_point": source.point} if source.point else None),
        "sampling": source.sampling,
        "unknown": source.unknown,
        "not_mapped": [note.line() for note in notes],
    }
    return Rendered(files={"run-record.json": json.dumps(record, indent=2, ensure_ascii=False) + "\n"}, notes=notes)


def _status(status: Any) -> Any:
    """What of ``/admin/status`` describes the run: not the config again, not the process's memory."""
    if not isinstance(status, dict):
        return None
    keep = ("state", "model", "path", "device", "dtype", "context_length", "memory_bytes", "batching_mode",
            "batching_warning")
    return {k: status.get(k) for k in keep if k in status}
