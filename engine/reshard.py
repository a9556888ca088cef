"""Rewrite a checkpoint into shards of bounded size, so that loads proceed in bounded pieces."""

from __future__ import annotations

import shutil
from pathlib import Path

from engine.catalog import inspect_folder
from engine.safetensors_meta import write_shards
from engine.staging import staged_folder


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
    with staged_folder(out) as staging:
        _copy_side_files(src, staging)
        tensors = {}
        for file in sorted(src.glob("*.safetensors")):
            with safe_open(str(file), framework="pt") as f:
                for name in f.keys():
                    tensors[name] = f.get_tensor(name)
        write_shards(tensors, staging, int(chunk_mb * 2**20))
    return out


def _copy_side_files(src: Path, staging: Path) -> None:
    """Config, tokenizer and the rest, but not the old shards or their index (rewritten)."""
    for item in src.iterdir():
        if item.is_file() and not item.name.endswith((".safetensors", ".safetensors.index.json")):
            shutil.copy2(item, staging / item.name)
