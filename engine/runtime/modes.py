"""The scheduler for a batching mode."""

from __future__ import annotations

from engine.config import BatchingConfig
from engine.metrics import EngineMetrics
from engine.runtime.batcher import DynamicBatcher
from engine.runtime.generator import QueuedGenerator, SequentialGenerator
from engine.runtime.loader import LoadedModel

SCHEDULERS = {"dynamic": DynamicBatcher, "sequential": SequentialGenerator}


def make_generator(loaded: LoadedModel, metrics: EngineMetrics, batching: BatchingConfig) -> QueuedGenerator:
    return SCHEDULERS[batching.mode](loaded, metrics, batching)
