"""The scheduler for a batching mode."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

from engine import paths
from engine.config import BatchingConfig, CacheConfig
from engine.metrics import EngineMetrics
from engine.runtime.batcher import DynamicBatcher
from engine.runtime.generator import QueuedGenerator, SequentialGenerator
from engine.runtime.loader import LoadedModel
from engine.runtime.prefix_cache import PrefixCache, model_fingerprint

SCHEDULERS = {"dynamic": DynamicBatcher, "sequential": SequentialGenerator}


def make_generator(loaded: LoadedModel, metrics: EngineMetrics, batching: BatchingConfig,
                   prefix_cache: Optional[PrefixCache] = None) -> QueuedGenerator:
    return SCHEDULERS[batching.mode](loaded, metrics, batching, prefix_cache)


def make_prefix_cache(loaded: LoadedModel, metrics: EngineMetrics, cache: CacheConfig) -> Optional[PrefixCache]:
    if cache.type == "none":
        return None
    directory = Path(cache.dir).expanduser() if cache.dir else paths.cache_dir() / "prefix-kv"
    return PrefixCache(model_fingerprint(loaded.path, loaded.dtype, loaded.device),
                       int(cache.memory_mb * 2**20), int(cache.disk_mb * 2**20),
                       directory if cache.disk_mb > 0 else None, metrics, loaded.device)
