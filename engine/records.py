"""What a run record says about the machine, the software and the model (torch-free).

A run record (``deepseek-engine export --format record``) makes a tuned configuration
reproducible: the model (name, path, fingerprint, parameters, dtype), the hardware (CPU model and
cores, RAM, GPUs with driver and CUDA versions), the software (Python, torch, transformers, this
project), the config in force and the latest bench or sweep figures. Versions are read from the
installed distributions' metadata, so torch is never imported here.
"""

from __future__ import annotations

import hashlib
import os
import platform
from importlib import metadata
from pathlib import Path
from typing import Any, Optional

RECORD_KIND = "deepseek-desktop/run-record"
RECORD_VERSION = 1
_DISTRIBUTIONS = ("deepseek-desktop", "torch", "transformers", "accelerate", "safetensors", "tokenizers",
                  "PySide6-Essentials")


def model_fingerprint(path: str | Path) -> Optional[str]:
    """A portable fingerprint of a model: config.json's bytes and the weight files' names and sizes.

    Unlike the prefix cache's key it holds no file times, dtype or device, so a copy of the same
    model on another machine has the same fingerprint. None when the path is not here.
    """
    path = Path(path)
    if path.is_file():
        files = [path]
    elif path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix in (".json", ".safetensors", ".gguf") and p.is_file())
    else:
        return None
    h = hashlib.sha256()
    for f in files:
        h.update(f"{f.name}|{f.stat().st_size}".encode())
        if f.name == "config.json":
            h.update(f.read_bytes())
    return "sha256:" + h.hexdigest()[:24]


def model_summary(path: Optional[str], served_name: Optional[str] = None, dtype: Optional[str] = None) -> dict[str, Any]:
    """name, path, fingerprint, parameters, dtype, format and architecture; None where unknown."""
    summary: dict[str, Any] = {"name": served_name, "path": path, "fingerprint": None, "params": None,
                               "dtype": dtype, "format": None, "architecture": None, "context_length": None}
    if not path:
        return summary
    summary["format"] = "gguf" if str(path).endswith(".gguf") else "safetensors"
    if not Path(path).exists():
        return summary
    from engine.catalog import inspect_path

    entry = inspect_path(Path(path))
    summary.update(name=served_name or entry.name, fingerprint=model_fingerprint(path), params=entry.params,
                   format=entry.format, architecture=entry.architecture, context_length=entry.context_length)
    if summary["dtype"] in (None, "auto"):
        summary["dtype"] = entry.dtype or summary["dtype"]
    return summary


def _cpu_model() -> Optional[str]:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or None


def hardware_summary() -> dict[str, Any]:
    """CPU model and cores, RAM, and each NVIDIA GPU with the driver and CUDA versions (NVML)."""
    import psutil

    from engine.telemetry.gpu import GpuSource

    gpus = GpuSource()
    snapshots = gpus.snapshot()
    return {
        "os": f"{platform.system()} {platform.release()}",
        "machine": platform.machine(),
        "cpu": {"model": _cpu_model(), "cores": psutil.cpu_count(logical=False), "threads": os.cpu_count()},
        "ram_bytes": psutil.virtual_memory().total,
        "gpus": [{"index": s.index, "name": s.name, "memory_bytes": s.mem_total_bytes} for s in snapshots],
        "gpu_driver": gpus.driver,
        "cuda": gpus.cuda,
        "gpu_note": None if gpus.available else gpus.reason,
    }


def software_versions() -> dict[str, Optional[str]]:
    """Python and the installed versions of this project and the libraries that decide its outputs."""
    versions: dict[str, Optional[str]] = {"python": platform.python_version()}
    for name in _DISTRIBUTIONS:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions
