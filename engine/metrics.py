"""Prometheus metrics of one engine (torch-free). Names and meanings are listed in the README.

Each engine owns its registry, so several engines in one process (tests) never collide.
"""

from __future__ import annotations

from typing import Callable, Optional

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client import ProcessCollector

from engine.states import ModelState

# Below 100 ms matters on a GPU (inter-token latency is a few ms); the top covers slow CPUs.
LATENCY_BUCKETS = (
    0.001, 0.0025, 0.005, 0.01, 0.02, 0.03, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.5,
    0.75, 1.0, 2.5, 5.0, 10.0, 20.0, 40.0, 80.0,
)
MODEL_STATES = tuple(ModelState)  # one engine_model_state series each; the label is the wire spelling


class EngineMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        ProcessCollector(registry=self.registry)  # process_resident_memory_bytes, cpu seconds …
        r = self.registry
        self.requests_running = Gauge("engine_requests_running", "Requests being generated now", registry=r)
        self.requests_waiting = Gauge("engine_requests_waiting", "Requests queued, not yet started", registry=r)
        self.requests_total = Counter(
            "engine_requests", "Generation requests finished, by outcome and protocol (rest, grpc, library)",
            ["outcome", "protocol"], registry=r
        )
        self.rate_limited = Counter(
            "engine_rate_limited", "Requests refused by a rate limit, by key name (anonymous: per address)",
            ["key"], registry=r)
        self.circuit_state = Gauge(
            "engine_circuit_state", "1 for the circuit breaker's current state (closed, open, half_open), 0 for the others",
            ["state"], registry=r)
        self.prompt_tokens = Counter("engine_prompt_tokens", "Prompt tokens processed", registry=r)
        self.generation_tokens = Counter("engine_generation_tokens", "Tokens generated", registry=r)
        def latency(name: str, documentation: str) -> Histogram:
            return Histogram(name, documentation, buckets=LATENCY_BUCKETS, registry=r)

        self.ttft = latency("engine_time_to_first_token_seconds", "Arrival to first generated token")
        self.itl = latency("engine_inter_token_latency_seconds", "Time between consecutive generated tokens")
        self.e2e = latency("engine_e2e_request_latency_seconds", "Arrival to last token")
        self.queue_time = latency("engine_request_queue_time_seconds", "Arrival to start of generation")
        self.batch_size = Histogram(
            "engine_batch_size", "Requests decoded together, per batch",
            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256), registry=r,
        )
        self.batch_joins = Counter(
            "engine_batch_joins", "Requests that joined a batch already decoding (dynamic mode)", registry=r,
        )
        self.prefix_queries = Counter("engine_prefix_cache_queries", "Prefix KV lookups, per tier", ["tier"], registry=r)
        self.prefix_hits = Counter("engine_prefix_cache_hits", "Prefix KV lookups that found a prefix", ["tier"], registry=r)
        self.prefix_evictions = Counter("engine_prefix_cache_evictions", "Entries evicted, per tier", ["tier"], registry=r)
        self.prefix_bytes = Gauge("engine_prefix_cache_bytes", "Bytes held, per tier", ["tier"], registry=r)
        self.prefix_tokens_reused = Counter(
            "engine_prefix_cache_tokens_reused", "Prompt tokens not computed thanks to the cache", registry=r)
        self.model_state = Gauge(
            "engine_model_state", "1 for the current model state, 0 for the others", ["state"], registry=r
        )
        self.device_memory = Gauge(
            "engine_device_memory_allocated_bytes", "Memory held by torch on the model's device",
            registry=r,
        )
        self.weights_bytes = Gauge(
            "engine_model_weights_bytes", "Parameters and buffers of the loaded model, by device", ["device"],
            registry=r,
        )
        self.kv_cache_bytes = Gauge(
            "engine_kv_cache_bytes",
            "KV cache of the requests running now, on the model's device (continuous mode: its reserved block pool)",
            registry=r,
        )
        self.kv_cache_bytes.set_function(lambda: 0.0)
        self.set_model_state(ModelState.IDLE)

    def set_model_state(self, state: ModelState) -> None:
        for name in MODEL_STATES:
            self.model_state.labels(state=name.value).set(1 if name == state else 0)

    def set_circuit_state(self, state: str) -> None:
        # Imported here: engine.service imports this module.
        from engine.service.circuit import STATES

        for name in STATES:
            self.circuit_state.labels(state=name).set(1 if name == state else 0)

    def track_device_memory(self, read: Optional[Callable[[], float]]) -> None:
        self.device_memory.set_function(read or (lambda: 0.0))

    def track_model(self, device: Optional[str], weights_bytes: float = 0.0,
                    kv_cache_bytes: Optional[Callable[[], float]] = None) -> None:
        """What the loaded model holds (None: no model): the monitor splits VRAM, or RAM, by it."""
        self.weights_bytes.clear()
        if device is not None:
            self.weights_bytes.labels(device=device).set(weights_bytes)
        self.kv_cache_bytes.set_function(kv_cache_bytes or (lambda: 0.0))

    def render(self) -> bytes:
        return generate_latest(self.registry)
