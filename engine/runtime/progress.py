"""Load progress through transformers' own loader (imports torch via transformers).

transformers walks the checkpoint tensor by tensor behind a tqdm bar ("Loading weights") and
lets a hook replace that bar (``transformers.utils.logging.set_tqdm_hook``). The hook here wraps
the bar's iterable: between two tensors it reports bytes, tensors and shard, and it is the one
place a cancel or a timeout can stop the load cleanly, between tensors.
"""

from __future__ import annotations

import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Optional

WEIGHTS_BAR = "Loading weights"


class LoadCancelled(Exception):
    """Raised inside transformers' loading loop to stop a load; never escapes the loader."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


@dataclass
class CheckpointLayout:
    """Bytes, shard and file position of each checkpoint tensor, from the safetensors headers."""

    tensor_bytes: dict[str, int]
    tensor_shard: dict[str, int]
    shards: int
    tensor_span: dict[str, tuple[str, int, int]] = field(default_factory=dict)  # file, start, end
    tensor_dtype: dict[str, str] = field(default_factory=dict)  # safetensors names: F32, BF16 …

    @property
    def total_bytes(self) -> int:
        return sum(self.tensor_bytes.values())


class PageReleaser:
    """Drops the pages of checkpoint tensors already converted to another dtype.

    safetensors maps each file into memory; when the load converts dtypes (a float32 checkpoint
    loaded as bfloat16) every source page stays resident until the load ends, so peak memory is
    the whole file plus the converted copy. Once a tensor is converted its source pages are not
    needed: ``madvise(MADV_DONTNEED)`` on a clean read-only file mapping returns them at once
    (they would be read again from the file if anything touched them). Linux only; a no-op
    elsewhere or when nothing is converted.
    """

    MADV_DONTNEED = 4

    def __init__(self, layout: CheckpointLayout, target_dtype: str):
        self.layout = layout
        self.target_dtype = target_dtype
        self._bases: Optional[dict[str, int]] = None
        self._page = 4096
        try:
            import ctypes
            import mmap

            self._libc = ctypes.CDLL("libc.so.6", use_errno=True)
            self._libc.madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
            self._page = mmap.PAGESIZE
        except (OSError, AttributeError):
            self._libc = None

    def _mapping_bases(self) -> dict[str, int]:
        bases: dict[str, int] = {}
        files = {span[0] for span in self.layout.tensor_span.values()}
        try:
            with open("/proc/self/maps") as maps:
                for line in maps:
                    parts = line.split(maxsplit=5)
                    if len(parts) == 6 and parts[5].strip() in files and int(parts[2], 16) == 0:
                        bases.setdefault(parts[5].strip(), int(parts[0].split("-")[0], 16))
        except OSError:
            pass
        return bases

    def release_all(self) -> None:
        """Every checkpoint tensor's pages, views or not: after a quantized load the few tensors
        still viewing the file (norms) read their pages back on use, while the rest of the file,
        touched once to be quantized, would otherwise stay resident for as long as they live."""
        self._bases = None  # mapped anew since the load began
        for name in self.layout.tensor_span:
            self.release(name, force=True)

    def release(self, name: str, force: bool = False) -> None:
        span = self.layout.tensor_span.get(name)
        # Only converted tensors: one loaded as it is stays a view of these very pages.
        if self._libc is None or span is None or (self.layout.tensor_dtype.get(name) == self.target_dtype
                                                  and not force):
            return
        if self._bases is None:  # the files are mapped once transformers starts reading them
            self._bases = self._mapping_bases()
        base = self._bases.get(span[0])
        if base is None:
            return
        start = -(-(base + span[1]) // self._page) * self._page  # whole pages inside the tensor only
        end = (base + span[2]) // self._page * self._page
        if end > start:
            self._libc.madvise(start, end - start, self.MADV_DONTNEED)


class LoadWatch:
    """Reports progress and enforces cancel/timeout while transformers loads."""

    def __init__(self, layout: CheckpointLayout, emit: Callable[[dict], None], chunk_bytes: int,
                 cancel: threading.Event, timeout_s: Optional[float], target_dtype: Optional[str] = None,
                 quantizing: bool = False):
        self.layout = layout
        converts = target_dtype is not None and set(layout.tensor_dtype.values()) - {target_dtype}
        # A quantizing load reads every tensor once to quantize it: all its pages can go as it
        # goes (the few kept as views, norms, read theirs back on use).
        self.quantizing = quantizing
        self.releaser = PageReleaser(layout, target_dtype or "") if converts or quantizing else None
        self.emit = emit
        self.chunk_bytes = max(1, chunk_bytes)
        self.cancel = cancel
        self.started = time.monotonic()
        self.deadline = self.started + timeout_s if timeout_s else None
        self.timeout_s = timeout_s
        self.bytes_done = 0
        self.tensors_done = 0
        self.shard = 1 if layout.shards else 0

    def check(self) -> None:
        if self.cancel.is_set():
            raise LoadCancelled("cancelled")
        if self.deadline is not None and time.monotonic() > self.deadline:
            raise LoadCancelled(f"timed out after {self.timeout_s:g} s (load_timeout_s)")

    def wrap(self, iterable: Any) -> Iterator[Any]:
        """Iterate transformers' (name, mapping) items, reporting after each one is loaded."""
        items = list(iterable)
        names = [item[0] if isinstance(item, tuple) else str(item) for item in items]
        known = [n for n in names if n in self.layout.tensor_bytes]
        unknown = len(names) - len(known)
        # Names transformers renamed or fused (MoE experts) share the bytes no name accounts for.
        leftover = max(0, self.layout.total_bytes - sum(self.layout.tensor_bytes[n] for n in known))
        per_unknown = leftover // unknown if unknown else 0
        last_emitted = 0
        total = len(items)
        for name, item in zip(names, items):
            self.check()
            yield item  # transformers materialises this tensor before asking for the next one
            if self.releaser is not None:
                self.releaser.release(name, force=self.quantizing)
            self.tensors_done += 1
            self.bytes_done += self.layout.tensor_bytes.get(name, per_unknown)
            shard = self.layout.tensor_shard.get(name, self.shard)
            if self.bytes_done - last_emitted >= self.chunk_bytes or shard != self.shard:
                self.shard = shard
                last_emitted = self.bytes_done
                self._emit(total)
        self.check()
        self.bytes_done = self.layout.total_bytes
        self.shard = self.layout.shards
        self._emit(total)

    def _emit(self, tensors_total: int) -> None:
        elapsed = time.monotonic() - self.started
        total = self.layout.total_bytes
        done = min(self.bytes_done, total)
        eta = elapsed / done * (total - done) if done else None
        self.emit({
            "type": "progress", "bytes_done": done, "bytes_total": total,
            "tensors_done": self.tensors_done, "tensors_total": tensors_total,
            "shard": self.shard, "shards": self.layout.shards,
            "elapsed_s": round(elapsed, 3), "eta_s": None if eta is None else round(eta, 3),
        })


class _PassThroughBar:
    """A tqdm stand-in for the loading bar: iterates, and ignores the rest of tqdm's API."""

    def __init__(self, iterator: Iterator[Any]):
        self._iterator = iterator

    def __iter__(self):
        return self._iterator

    def __getattr__(self, name: str):
        return lambda *args, **kwargs: None


_hook_lock = threading.Lock()


@contextmanager
def watching(watch: LoadWatch):
    """Route transformers' "Loading weights" bar through ``watch`` for the duration."""
    from transformers.utils import logging as hf_logging

    def hook(factory, args, kwargs):
        iterable = args[0] if args else kwargs.get("iterable")
        if kwargs.get("desc") == WEIGHTS_BAR and iterable is not None:
            return _PassThroughBar(watch.wrap(iterable))
        return factory(*args, **{**kwargs, "disable": True})

    with _hook_lock:  # the hook is process-wide; one load at a time
        previous = hf_logging.set_tqdm_hook(hook)
        try:
            yield watch
        finally:
            hf_logging.set_tqdm_hook(previous)
