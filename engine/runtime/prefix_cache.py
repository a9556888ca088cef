"""Tiered prefix KV cache: RAM (LRU by bytes) over a disk tier (safetensors files).

KV is kept for block-aligned prompt prefixes, keyed by a fingerprint of the model (config, weight
files, dtype) and a chained hash of the token blocks, so a later prompt that shares a prefix (a
system prompt, a chat history, a document) computes only the rest. Entries are written through
to disk by a background thread; RAM keeps the most recently used within ``memory_mb``, disk the
most recently used within ``disk_mb``; the disk tier survives restarts. A disk file that is corrupt, written for
another model or in another format is logged, deleted and never loaded.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import queue
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import torch
from safetensors.torch import load_file, save_file

from engine.metrics import EngineMetrics

log = logging.getLogger("engine.prefix_cache")

BLOCK_TOKENS = 32
FORMAT = "deepseek-desktop-prefix-kv/1"


@dataclass
class PrefixKV:
    """KV of one prefix: per layer (keys, values), each [1, heads, tokens, dim]."""

    tokens: int
    layers: list[tuple[torch.Tensor, torch.Tensor]]

    @property
    def nbytes(self) -> int:
        return sum(k.numel() * k.element_size() + v.numel() * v.element_size() for k, v in self.layers)


def model_fingerprint(path: Path, dtype: torch.dtype, device: torch.device) -> str:
    """Changes when the weights, the config, the dtype or the kind of device change."""
    h = hashlib.sha256(f"{FORMAT}|{dtype}|{device.type}".encode())
    files = [path] if path.is_file() else sorted(p for p in path.iterdir() if p.suffix in (".json", ".safetensors"))
    for f in files:
        stat = f.stat()
        h.update(f"{f.name}|{stat.st_size}|{stat.st_mtime_ns}".encode())
        if f.name == "config.json":
            h.update(f.read_bytes())
    return h.hexdigest()[:32]


def block_keys(fingerprint: str, tokens: list[int], block: int = BLOCK_TOKENS) -> list[tuple[int, str]]:
    """(prefix length, key) for every whole block of ``tokens``, shortest first; each key chains
    the previous one, so equal keys mean equal prefixes."""
    keys, digest = [], fingerprint
    for end in range(block, len(tokens) + 1, block):
        digest = hashlib.sha256((digest + ",".join(map(str, tokens[end - block:end]))).encode()).hexdigest()
        keys.append((end, digest[:40]))
    return keys


class PrefixCache:
    def __init__(self, fingerprint: str, memory_bytes: int, disk_bytes: int, directory: Optional[Path],
                 metrics: EngineMetrics, device: torch.device):
        self.fingerprint = fingerprint
        self.memory_bytes = memory_bytes
        self.disk_bytes = disk_bytes if directory else 0
        self.dir = Path(directory) / fingerprint if directory else None
        self.metrics = metrics
        self.device = device
        self._ram: "OrderedDict[str, PrefixKV]" = OrderedDict()
        self._ram_used = 0
        self._lock = threading.Lock()
        self._writes: "queue.Queue[tuple[str, PrefixKV]]" = queue.Queue()
        self._index: dict[str, tuple[str, int]] = {}  # block key -> (entry key, entry length)
        self._disk_used = 0  # kept as a count: no listing of the folder on the generation thread
        if self.dir is not None:
            self.dir.mkdir(parents=True, exist_ok=True)
            self._index_disk()
            # Written through to disk off the generation thread, so a restart finds it there.
            threading.Thread(target=self._writer, name="prefix-cache-writer", daemon=True).start()
        self._update_gauges()

    def _index_disk(self) -> None:
        """Learn which prefixes the disk tier holds (headers only; a bad file is dropped)."""
        from safetensors import safe_open

        for path in self.dir.glob("*.safetensors"):
            try:
                with safe_open(str(path), framework="pt") as f:
                    meta = f.metadata() or {}
                if meta.get("format") != FORMAT or meta.get("fingerprint") != self.fingerprint:
                    raise ValueError("written for another model or in another format")
                key, length = meta["key"], int(meta["tokens"])
                for block in json.loads(meta.get("blocks", "[]")) + [key]:
                    self._index.setdefault(block, (key, length))
                self._disk_used += path.stat().st_size
            except Exception as exc:
                self._drop(path, exc)

    def _drop(self, path: Path, reason: Exception) -> None:
        """A corrupt, foreign or stale file: logged, deleted, never loaded."""
        log.warning("dropping prefix cache file %s: %s", path.name, reason,
                    extra={"event": "prefix_cache_drop", "file": str(path), "reason": str(reason)})
        self._remove(path)

    def _remove(self, path: Path) -> None:
        try:
            size = path.stat().st_size
            path.unlink()
        except OSError:
            return
        self._disk_used = max(0, self._disk_used - size)

    def _writer(self) -> None:
        while True:
            key, entry = self._writes.get()
            try:
                self._write_disk(key, entry)
            finally:
                self._writes.task_done()

    def flush(self) -> None:
        """Wait until every queued disk write is done (tests, shutdown)."""
        if self.dir is not None:
            self._writes.join()

    # ------------------------------------------------------------------ lookup
    def lookup(self, tokens: list[int]) -> Optional[PrefixKV]:
        """The longest cached prefix of ``tokens`` that leaves at least one token to compute.

        An entry kept for a long prefix also serves every shorter whole-block prefix of it: the
        index maps each block's key to the entry that holds it.
        """
        candidates = [(n, k) for n, k in block_keys(self.fingerprint, tokens) if n < len(tokens)]
        if not candidates:
            return None
        for tier in ("ram", "disk"):
            self.metrics.prefix_queries.labels(tier=tier).inc()
            for length, key in reversed(candidates):
                found = self._index.get(key)
                if found is None:
                    continue
                entry_key, entry_length = found
                entry = self._from_ram(entry_key) if tier == "ram" else self._from_disk(entry_key, entry_length)
                if entry is None:
                    continue
                self.metrics.prefix_hits.labels(tier=tier).inc()
                if tier == "disk":
                    self._put_ram(entry_key, entry)
                return PrefixKV(length, [(k[:, :, :length], v[:, :, :length]) for k, v in entry.layers])
        return None

    def _from_ram(self, key: str) -> Optional[PrefixKV]:
        with self._lock:
            entry = self._ram.get(key)
            if entry is not None:
                self._ram.move_to_end(key)
            return entry

    def _from_disk(self, key: str, length: int) -> Optional[PrefixKV]:
        if self.dir is None:
            return None
        path = self.dir / f"{key}.safetensors"
        if not path.exists():
            return None
        try:
            entry = self._read(path, key, length)
        except Exception as exc:  # corrupt, foreign or stale: never trusted
            self._drop(path, exc)
            self._update_gauges()
            return None
        os.utime(path)  # disk LRU is by last use
        return entry

    def _read(self, path: Path, key: str, length: int) -> PrefixKV:
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
        if meta.get("format") != FORMAT:
            raise ValueError(f"not a prefix cache file of this version (format {meta.get('format')!r})")
        if meta.get("fingerprint") != self.fingerprint or meta.get("key") != key:
            raise ValueError("written for another model or prefix")
        if int(meta.get("tokens", -1)) != length:
            raise ValueError("prefix length does not match its key")
        tensors = load_file(str(path), device=str(self.device))
        layers = []
        for i in range(int(meta["layers"])):
            k, v = tensors[f"k{i}"], tensors[f"v{i}"]
            if k.shape[2] != length or v.shape[2] != length:
                raise ValueError(f"layer {i} holds {k.shape[2]} tokens, expected {length}")
            layers.append((k, v))
        return PrefixKV(length, layers)

    # ------------------------------------------------------------------ store
    def store(self, tokens: list[int], layers: list[tuple[torch.Tensor, torch.Tensor]]) -> None:
        """Keep KV for the longest whole-block prefix of ``tokens`` that is not cached yet.

        Args:
            layers: per layer (keys, values) [1, heads, >= that many tokens, dim]; copied here.
        """
        keys = [(n, k) for n, k in block_keys(self.fingerprint, tokens) if n < len(tokens)]
        if not keys:
            return
        length, key = keys[-1]
        with self._lock:
            for _, block in keys:  # every shorter prefix is served by this (newest) entry
                self._index[block] = (key, length)
            if key in self._ram:
                self._ram.move_to_end(key)
                return
        entry = PrefixKV(length, [(k[:, :, :length].clone(), v[:, :, :length].clone()) for k, v in layers])
        if self.dir is not None:
            self._writes.put((key, entry))
        if entry.nbytes <= self.memory_bytes:
            self._put_ram(key, entry)

    def _put_ram(self, key: str, entry: PrefixKV) -> None:
        evicted = []
        with self._lock:
            if key in self._ram:
                return
            self._ram[key] = entry
            self._ram_used += entry.nbytes
            while self._ram_used > self.memory_bytes and len(self._ram) > 1:
                old_key, old = self._ram.popitem(last=False)
                self._ram_used -= old.nbytes
                evicted.append((old_key, old))
        for _ in evicted:  # already written through to disk, if there is a disk tier
            self.metrics.prefix_evictions.labels(tier="ram").inc()
        self._update_gauges()

    def _on_disk(self, key: str) -> bool:
        return self.dir is not None and (self.dir / f"{key}.safetensors").exists()

    def _write_disk(self, key: str, entry: PrefixKV) -> None:
        if self.dir is None or entry.nbytes > self.disk_bytes or self._on_disk(key):
            return
        self.dir.mkdir(parents=True, exist_ok=True)
        tensors = {}
        for i, (k, v) in enumerate(entry.layers):
            tensors[f"k{i}"], tensors[f"v{i}"] = k.contiguous().cpu(), v.contiguous().cpu()
        blocks = [k for k, (main, _) in list(self._index.items()) if main == key]
        meta = {"format": FORMAT, "fingerprint": self.fingerprint, "key": key, "tokens": str(entry.tokens),
                "layers": str(len(entry.layers)), "blocks": json.dumps(blocks)}
        tmp, path = self.dir / f".{key}.tmp", self.dir / f"{key}.safetensors"
        try:
            save_file(tensors, str(tmp), metadata=meta)
            tmp.replace(path)  # atomic: a crash leaves no half file
            self._disk_used += path.stat().st_size
        except OSError as exc:  # full disk: the cache is an optimisation, never a failure
            log.warning("cannot write prefix cache file: %s", exc, extra={"event": "prefix_cache_write_failed"})
            tmp.unlink(missing_ok=True)
            return
        self._enforce_disk_budget()

    def _enforce_disk_budget(self) -> None:
        if self._disk_used > self.disk_bytes:  # only then is the folder listed, oldest use first
            files = sorted(self.dir.glob("*.safetensors"), key=lambda p: p.stat().st_mtime)
            while self._disk_used > self.disk_bytes and files:
                self._remove(files.pop(0))
                self.metrics.prefix_evictions.labels(tier="disk").inc()
        self._update_gauges()

    # ------------------------------------------------------------------ figures
    def disk_used(self) -> int:
        return self._disk_used

    def _update_gauges(self) -> None:
        self.metrics.prefix_bytes.labels(tier="ram").set(self._ram_used)
        self.metrics.prefix_bytes.labels(tier="disk").set(self.disk_used())

    def ram_keys(self) -> list[str]:
        with self._lock:
            return list(self._ram)
