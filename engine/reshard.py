"""Rewrite a checkpoint into shards of bounded size, so that loads proceed in bounded pieces."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from engine.catalog import inspect_folder
from engine.safetensors_meta import write_shards


class ReshardError(RuntimeError):
    pass


def reshard(src: Path, out: Path, chunk_mb: float) -> Path:
    """Copy ``src`` to ``out`` with its weights in shards of at most ``chunk_mb`` MB.

    Raises:
        ReshardError: ``src`` is not a loadable model folder, or ``out`` is ``src``.
    """
    from safetensors import safe_open

    src, out = Path(src).resolve(), Path(out).resolve()
    entry = inspect_folder(src)
    if entry.problem:
        raise ReshardError(f"cannot reshard {src}: {entry.problem}")
    if out == src:
        raise ReshardError("--out must be another folder than the model's own")
    if chunk_mb <= 0:
        raise ReshardError("--chunk-size must be positive")
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent if out.parent.exists() else None))
    try:
        for item in src.iterdir():
            if item.is_file() and not item.name.endswith(".safetensors") and not item.name.endswith(".safetensors.index.json"):
                shutil.copy2(item, staging / item.name)
        tensors = {}
        for file in sorted(src.glob("*.safetensors")):
            with safe_open(str(file), framework="pt") as f:
                for name in f.keys():
                    tensors[name] = f.get_tensor(name)
        write_shards(tensors, staging, int(chunk_mb * 2**20))
        staging.chmod(0o755)
        if out.exists():
            shutil.rmtree(out)
        out.parent.mkdir(parents=True, exist_ok=True)
        staging.replace(out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return out
