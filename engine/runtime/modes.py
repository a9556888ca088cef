"""The scheduler for a batching mode."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Optional

from engine import paths
from engine.config import BatchingConfig, CacheConfig
from engine.metrics import EngineMetrics
from engine.runtime.batcher import DynamicBatcher
from engine.runtime.loader import LoadedModel
from engine.runtime.prefix_cache import PrefixCache, model_fingerprint
from engine.runtime.sequential import SequentialGenerator
from engine.scheduling import Scheduler

log = logging.getLogger("engine.modes")

SCHEDULERS = {"dynamic": DynamicBatcher, "sequential": SequentialGenerator}


def make_generator(loaded: LoadedModel, metrics: EngineMetrics, batching: BatchingConfig,
                   prefix_cache: Optional[PrefixCache] = None) -> Scheduler:
    """The scheduler for ``batching.mode``. Continuous mode is probed first; where transformers'
    manager cannot run the model, dynamic batching serves instead and ``warning`` says why."""
    if batching.mode == "continuous":
        from engine.runtime.continuous import ContinuousGenerator, ContinuousUnsupported

        try:
            return ContinuousGenerator(loaded, metrics, batching)
        except ContinuousUnsupported as exc:
            warning = f"{exc}; serving with batching mode 'dynamic' instead"
            log.warning(warning, extra={"event": "batching_fallback", "requested": "continuous", "mode": "dynamic"})
            generator = DynamicBatcher(loaded, metrics, batching, prefix_cache)
            generator.warning = warning
            return generator
    return SCHEDULERS[batching.mode](loaded, metrics, batching, prefix_cache)


def make_prefix_cache(loaded: LoadedModel, metrics: EngineMetrics, cache: CacheConfig) -> Optional[PrefixCache]:
    if cache.type == "none":
        return None
    directory = Path(cache.dir).expanduser() if cache.dir else paths.cache_dir() / "prefix-kv"
    return PrefixCache(model_fingerprint(loaded.path, loaded.dtype, loaded.device),
                       int(cache.memory_mb * 2**20), int(cache.disk_mb * 2**20),
                       directory if cache.disk_mb > 0 else None, metrics, loaded.device)
