"""The engine's ``/metrics`` (this engine's names or vLLM's), turned into rates and percentiles
over the interval between two scrapes."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import httpx
from prometheus_client.parser import text_string_to_metric_families

# Our name -> vLLM's, for a console attached to a vLLM server.
VLLM_NAMES = {
    "engine_requests_running": "vllm:num_requests_running",
    "engine_requests_waiting": "vllm:num_requests_waiting",
    "engine_prompt_tokens_total": "vllm:prompt_tokens_total",
    "engine_generation_tokens_total": "vllm:generation_tokens_total",
    "engine_time_to_first_token_seconds": "vllm:time_to_first_token_seconds",
    "engine_inter_token_latency_seconds": "vllm:inter_token_latency_seconds",
    "engine_kv_cache_usage": "vllm:kv_cache_usage_perc",
}


@dataclass
class EngineSnapshot:
    requests_running: Optional[float] = None
    requests_waiting: Optional[float] = None
    prompt_tokens_per_s: Optional[float] = None
    generation_tokens_per_s: Optional[float] = None
    ttft_p50_s: Optional[float] = None
    ttft_p99_s: Optional[float] = None
    itl_p50_s: Optional[float] = None
    itl_p99_s: Optional[float] = None
    batch_size_mean: Optional[float] = None
    prefix_cache_hit_rate: Optional[float] = None
    prefix_cache_bytes: Optional[float] = None
    kv_cache_usage: Optional[float] = None
    # Where the model's memory went (this engine only): its weights, the running requests' KV,
    # and the prefix cache's RAM tier, all on ``model_device`` ("cuda:0", "cpu").
    model_device: Optional[str] = None
    weights_bytes: Optional[float] = None
    kv_cache_bytes: Optional[float] = None
    prefix_cache_ram_bytes: Optional[float] = None


def parse(text: str) -> dict[str, dict[tuple, float]]:
    """name -> {sorted label items: value} for every sample."""
    samples: dict[str, dict[tuple, float]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples.setdefault(sample.name, {})[tuple(sorted(sample.labels.items()))] = sample.value
    return samples


def _value(samples: dict, name: str, **labels) -> Optional[float]:
    for candidate in (name, VLLM_NAMES.get(name)):
        if candidate and candidate in samples:
            series = samples[candidate]
            matching = [v for k, v in series.items() if all(dict(k).get(a) == b for a, b in labels.items())]
            return sum(matching) if matching else None
    return None


def _label(samples: dict, name: str, label: str) -> Optional[str]:
    for labels in samples.get(name, {}):
        if label in dict(labels):
            return dict(labels)[label]
    return None


def _buckets(samples: dict, name: str) -> Optional[list[tuple[float, float]]]:
    for candidate in (name, VLLM_NAMES.get(name)):
        series = samples.get(f"{candidate}_bucket") if candidate else None
        if series:
            merged: dict[float, float] = {}
            for labels, value in series.items():
                le = float(dict(labels)["le"])
                merged[le] = merged.get(le, 0.0) + value
            return sorted(merged.items())
    return None


def quantile(buckets_now, buckets_before, q: float) -> Optional[float]:
    """The q-quantile of what a histogram observed between two scrapes (upper bucket bound)."""
    if not buckets_now:
        return None
    before = dict(buckets_before or [])
    delta = [(le, count - before.get(le, 0.0)) for le, count in buckets_now]
    total = delta[-1][1]
    if total <= 0:
        return None
    for le, count in delta:
        if count >= q * total:
            return le if le != float("inf") else delta[-2][0] if len(delta) > 1 else None
    return None


class EngineMetricsSource:
    def __init__(self, url: str, api_key: Optional[str] = None, timeout: float = 2.0):
        self.url = url.rstrip("/") + "/metrics"
        self.headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.timeout = timeout
        self._client = httpx.Client(timeout=timeout)  # one kept-alive connection, not one per sample
        self.error: Optional[str] = None
        self._previous: Optional[tuple[float, dict]] = None

    def snapshot(self, now: float) -> EngineSnapshot:
        try:
            response = self._client.get(self.url, headers=self.headers)
            response.raise_for_status()
            samples = parse(response.text)
            self.error = None
        except (httpx.HTTPError, ValueError) as exc:
            self.error = f"{type(exc).__name__}: {exc}"
            self._previous = None
            return EngineSnapshot()
        snap = EngineSnapshot(
            requests_running=_value(samples, "engine_requests_running"),
            requests_waiting=_value(samples, "engine_requests_waiting"),
            prefix_cache_bytes=_value(samples, "engine_prefix_cache_bytes"),
            kv_cache_usage=_value(samples, "engine_kv_cache_usage"),
            model_device=_label(samples, "engine_model_weights_bytes", "device"),
            weights_bytes=_value(samples, "engine_model_weights_bytes"),
            kv_cache_bytes=_value(samples, "engine_kv_cache_bytes"),
            prefix_cache_ram_bytes=_value(samples, "engine_prefix_cache_bytes", tier="ram"),
        )
        if self._previous is not None:
            then, before = self._previous
            elapsed = max(now - then, 1e-6)
            snap.prompt_tokens_per_s = _rate(samples, before, "engine_prompt_tokens_total", elapsed)
            snap.generation_tokens_per_s = _rate(samples, before, "engine_generation_tokens_total", elapsed)
            for attr, name in (("ttft", "engine_time_to_first_token_seconds"),
                               ("itl", "engine_inter_token_latency_seconds")):
                now_b, then_b = _buckets(samples, name), _buckets(before, name)
                setattr(snap, f"{attr}_p50_s", quantile(now_b, then_b, 0.5))
                setattr(snap, f"{attr}_p99_s", quantile(now_b, then_b, 0.99))
            batches = _delta(samples, before, "engine_batch_size_count")
            if batches:
                snap.batch_size_mean = _delta(samples, before, "engine_batch_size_sum") / batches
            queries = _delta(samples, before, "engine_prefix_cache_queries_total", tier="ram")
            if queries:
                hits = sum(_delta(samples, before, "engine_prefix_cache_hits_total", tier=t) or 0 for t in ("ram", "disk"))
                snap.prefix_cache_hit_rate = hits / queries
        self._previous = (now, samples)
        return snap


def _delta(now: dict, before: dict, name: str, **labels) -> Optional[float]:
    a, b = _value(now, name, **labels), _value(before, name, **labels)
    return None if a is None or b is None else a - b


def _rate(now: dict, before: dict, name: str, elapsed: float) -> Optional[float]:
    delta = _delta(now, before, name)
    return None if delta is None else max(delta, 0.0) / elapsed
