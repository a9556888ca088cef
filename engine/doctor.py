"""``deepseek-engine doctor``: the usual reasons a model does not run here, each found with what to do.

Torch-free (the app's Help → Diagnostics runs it too): torch's CUDA build is read from its
installed ``torch/version.py``, not by importing torch. The machine is read once into ``Readings``;
``diagnose`` turns readings into findings, so a test can hand it stand-in readings (a driver and a
CUDA build that do not match) that no machine here has.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import re
import shutil
import socket
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Optional

OK, NOTE, WARN, BLOCK = "ok", "note", "warning", "blocking"
GIB = 2**30
LOW_DISK = 10 * GIB
BROKEN_PYSIDE = "6.12."  # 6.12.0 aborts after a few thousand calls returning None/bool (pyproject.toml)


@dataclass
class Finding:
    check: str
    level: str          # ok | note | warning | blocking
    says: str           # what was found
    todo: str = ""      # what to do about it (empty when nothing)


@dataclass
class Readings:
    """What ``diagnose`` looks at; ``read_machine`` fills it here, tests fill it by hand."""

    gpus: list[dict] = field(default_factory=list)   # name, total_bytes, free_bytes per GPU
    nvml_error: Optional[str] = None                  # why NVML could not be read
    driver: Optional[str] = None
    driver_cuda: Optional[str] = None                 # the newest CUDA the driver runs ("12.4")
    nvidia_device_files: bool = False                 # /dev/nvidia0: a GPU the driver does not answer for
    torch_version: Optional[str] = None
    torch_cuda: Optional[str] = None                  # the CUDA torch was built for; None: a CPU build
    pyside: Optional[str] = None
    ram_available_bytes: Optional[int] = None
    disks: dict[str, Optional[int]] = field(default_factory=dict)  # folder -> free bytes
    hf_cache: Optional[str] = None
    port: Optional[int] = None
    port_error: Optional[str] = None
    model: Optional[dict] = None                      # the configured model's catalog entry and estimate


def _version(dist: str) -> Optional[str]:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def torch_build() -> tuple[Optional[str], Optional[str]]:
    """(torch's version, the CUDA it was built for or None) without importing torch."""
    spec = importlib.util.find_spec("torch")
    if spec is None or not spec.submodule_search_locations:
        return None, None
    version_file = Path(list(spec.submodule_search_locations)[0]) / "version.py"
    try:
        text = version_file.read_text()
    except OSError:
        return _version("torch"), None
    version = re.search(r"^__version__\s*=\s*['\"]([^'\"]+)", text, re.M)
    cuda = re.search(r"^cuda\s*(?::\s*[^=]+)?=\s*['\"]([^'\"]+)", text, re.M)
    return (version[1] if version else _version("torch")), (cuda[1] if cuda else None)


def read_gpus(readings: Readings) -> None:
    from engine.telemetry.gpu import GpuSource, gpu_memory

    source = GpuSource()
    readings.nvidia_device_files = Path("/dev/nvidia0").exists()
    if not source.available:
        readings.nvml_error = source.reason
        return
    readings.driver, readings.driver_cuda = source.driver, source.cuda
    for index, handle in enumerate(source._handles):
        memory = gpu_memory(index)
        name = source._read(source._nvml.nvmlDeviceGetName, handle)
        readings.gpus.append({"name": name, "total_bytes": memory.total_bytes, "free_bytes": memory.free_bytes})


def free_bytes(folder: Path) -> Optional[int]:
    """Free space on the disk that holds ``folder`` (its nearest existing parent)."""
    for candidate in (folder, *folder.parents):
        if candidate.exists():
            return shutil.disk_usage(candidate).free
    return None


def read_machine(model: Optional[str] = None, port: Optional[int] = None, host: str = "127.0.0.1",
                 dtype: str = "auto") -> Readings:
    import psutil

    from engine.catalog import hf_hub_cache
    from engine.paths import cache_dir, models_dir

    readings = Readings(pyside=_version("PySide6-Essentials") or _version("PySide6"))
    read_gpus(readings)
    readings.torch_version, readings.torch_cuda = torch_build()
    readings.ram_available_bytes = psutil.virtual_memory().available
    readings.hf_cache = str(hf_hub_cache())
    for folder in (models_dir(), cache_dir(), Path(readings.hf_cache)):
        readings.disks[str(folder)] = free_bytes(folder)
    if port:
        readings.port = port
        with socket.socket() as probe:
            try:
                probe.bind((host, port))
            except OSError as exc:
                readings.port_error = str(exc)
    if model:
        readings.model = read_model(Path(model), dtype, "cuda" if readings.gpus else "cpu")
    return readings


def read_model(path: Path, dtype: str, device: str) -> dict:
    from engine.catalog import inspect_path
    from engine.memory import estimate

    entry = inspect_path(path)
    out = {"path": str(path), "name": entry.name, "problem": entry.problem, "loadable": entry.loadable,
           "size_bytes": getattr(entry, "size_bytes", None), "needs_bytes": None}
    if entry.loadable:
        try:
            out["needs_bytes"] = estimate(entry, dtype, device=device).total_bytes
        except Exception as exc:  # an architecture the estimate cannot size: said, not fatal
            out["estimate_error"] = str(exc)
    return out


# --------------------------------------------------------------------------- findings


def _cuda_tuple(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", version)[:2])


def check_gpu(r: Readings) -> list[Finding]:
    if r.gpus:
        names = ", ".join(str(g.get("name")) for g in r.gpus)
        return [Finding("NVIDIA driver and NVML", OK, f"{len(r.gpus)} GPU(s): {names}; driver {r.driver}, "
                                                       f"CUDA {r.driver_cuda} or older")]
    if r.nvidia_device_files:
        return [Finding("NVIDIA driver and NVML", BLOCK, f"an NVIDIA device is present but NVML does not answer "
                                                         f"({r.nvml_error})",
                        "reinstall or load the NVIDIA driver (nvidia-smi must work), then restart")]
    return [Finding("NVIDIA driver and NVML", NOTE, f"no NVIDIA GPU here ({r.nvml_error}): models run on the CPU",
                    "nothing, for a CPU setup; on a GPU machine install the NVIDIA driver")]


def check_torch(r: Readings) -> list[Finding]:
    if r.torch_version is None:
        return [Finding("torch", BLOCK, "torch is not installed: the engine cannot load a model",
                        "make setup (or pip install torch)")]
    if r.torch_cuda is None:
        if r.gpus:
            return [Finding("torch build", WARN, f"torch {r.torch_version} is built for the CPU while a GPU is "
                                                 "present: models run on the CPU, slowly",
                            "install the CUDA build: pip install torch --index-url "
                            "https://download.pytorch.org/whl/cu124 (a CUDA version the driver runs)")]
        return [Finding("torch build", OK, f"torch {r.torch_version}, a CPU build (no GPU here)")]
    if r.driver_cuda and _cuda_tuple(r.torch_cuda) > _cuda_tuple(r.driver_cuda):
        return [Finding("CUDA version mismatch", BLOCK,
                        f"torch {r.torch_version} is built for CUDA {r.torch_cuda} but the driver "
                        f"{r.driver} runs CUDA {r.driver_cuda} at most: torch sees no GPU",
                        f"update the NVIDIA driver, or install a torch built for CUDA {r.driver_cuda} or older "
                        f"(https://download.pytorch.org/whl/cu{r.driver_cuda.replace('.', '')})")]
    if not r.gpus:
        return [Finding("torch build", NOTE, f"torch {r.torch_version} is built for CUDA {r.torch_cuda} but there "
                                             "is no GPU: models run on the CPU", "nothing, unless a GPU should be here")]
    return [Finding("torch build", OK, f"torch {r.torch_version} for CUDA {r.torch_cuda}; the driver runs "
                                       f"CUDA {r.driver_cuda}")]


def check_memory(r: Readings) -> list[Finding]:
    from engine.memory import format_bytes

    if not r.model:
        return [Finding("memory for the model", NOTE, "no model configured (--model or --config): not compared")]
    needs = r.model.get("needs_bytes")
    if needs is None:
        return [Finding("memory for the model", NOTE, f"no estimate for {r.model['name']}: "
                                                      f"{r.model.get('estimate_error') or r.model.get('problem')}")]
    if r.gpus:
        free = sum(g.get("free_bytes") or 0 for g in r.gpus)
        where = f"free on {len(r.gpus)} GPU(s)"
    else:
        free, where = r.ram_available_bytes or 0, "RAM available"
    text = f"{r.model['name']} needs about {format_bytes(needs)}; {format_bytes(free)} {where}"
    if needs > free:
        return [Finding("memory for the model", BLOCK, text,
                        "a smaller model, a shorter context or int8/int4 quantization (see the estimate in "
                        "'deepseek-engine inspect'), or free memory")]
    return [Finding("memory for the model", OK, text)]


def check_disks(r: Readings) -> list[Finding]:
    from engine.memory import format_bytes

    out = []
    for folder, free in r.disks.items():
        if free is None:
            out.append(Finding(f"disk: {folder}", WARN, "cannot tell the free space", "check the folder exists"))
        elif free < LOW_DISK:
            out.append(Finding(f"disk: {folder}", WARN, f"only {format_bytes(free)} free",
                               "free space: a model of a few billion parameters takes 5-20 GB"))
        else:
            out.append(Finding(f"disk: {folder}", OK, f"{format_bytes(free)} free"))
    return out


def check_port(r: Readings) -> list[Finding]:
    if r.port is None:
        return [Finding("port", OK, "none asked for: the app gives the engine a free port")]
    if r.port_error:
        return [Finding("port", BLOCK, f"port {r.port} is taken ({r.port_error})",
                        "stop what listens there (ss -ltnp) or choose another port (--port, [server] port)")]
    return [Finding("port", OK, f"port {r.port} is free")]


def check_model(r: Readings) -> list[Finding]:
    if not r.model:
        return []
    if not r.model["loadable"]:
        return [Finding("model folder", BLOCK, f"{r.model['path']}: {r.model['problem']}",
                        "point at a folder with config.json and *.safetensors (or a .gguf file)")]
    return [Finding("model folder", OK, f"{r.model['path']}: loadable")]


def check_pyside(r: Readings) -> list[Finding]:
    if r.pyside is None:
        return [Finding("PySide6", NOTE, "not installed: the desktop app cannot start (the engine can)",
                        "pip install 'PySide6-Essentials<6.12'")]
    if r.pyside.startswith(BROKEN_PYSIDE):
        return [Finding("PySide6", BLOCK, f"PySide6 {r.pyside} has a known defect: the app aborts "
                                          "(\"none_dealloc\") after a few thousand calls",
                        "pip install 'PySide6-Essentials<6.12'")]
    return [Finding("PySide6", OK, f"PySide6 {r.pyside}")]


def check_hf_cache(r: Readings) -> list[Finding]:
    return [Finding("Hugging Face cache", NOTE, f"{r.hf_cache} (the Models panel lists it; HF_HOME moves it)")]


CHECKS = (check_gpu, check_torch, check_memory, check_disks, check_port, check_model, check_pyside, check_hf_cache)


def diagnose(readings: Readings) -> list[Finding]:
    return [finding for check in CHECKS for finding in check(readings)]


def blocking(findings: list[Finding]) -> bool:
    return any(f.level == BLOCK for f in findings)


def report(findings: list[Finding]) -> str:
    marks = {OK: "ok  ", NOTE: "note", WARN: "WARN", BLOCK: "FAIL"}
    lines = []
    for f in findings:
        lines.append(f"[{marks[f.level]}] {f.check}: {f.says}")
        if f.todo and f.level != OK:
            lines.append(f"       -> {f.todo}")
    verdict = "something blocks: see FAIL above" if blocking(findings) else "nothing blocks"
    lines.append(f"{verdict} (python {sys.version.split()[0]})")
    return "\n".join(lines)


def as_json(readings: Readings, findings: list[Finding]) -> dict:
    return {"blocking": blocking(findings), "findings": [asdict(f) for f in findings], "readings": asdict(readings)}
