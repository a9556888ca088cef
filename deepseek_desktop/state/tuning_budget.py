"""The memory budget the Tuning panel draws: per device, what the engine would need under the
settings being edited (``engine.memory_budget.device_budget``, torch-free), against what the other
processes leave. Plain functions of the engine's view and the edited values."""

from __future__ import annotations

from typing import Any, Callable, Collection, Optional

from deepseek_desktop.state.tuning_engine import EngineView
from engine.memory import DTYPE_BYTES, DeviceMemory, layer_placement, plan_quantization, resolve_dtype
from engine.memory_budget import DeviceBudget, device_budget
from engine.placement import DevicePlacement

KV_DTYPES = ("auto", "float32", "bfloat16", "float16", "float8")
DEFAULT_CONTEXT = 2048     # what the estimate assumes while neither the model nor a what-if says
# Editing any of these resizes continuous batching's block pool: the one in force no longer holds.
POOL_SETTINGS = ("batching.mode", "batching.num_blocks", "batching.page_size", "batching.kv_memory_share")


def compute_budgets(engine: EngineView, value: Callable[[str], Any], edited: Collection[str],
                    context: Optional[int], kv_dtype: str) -> list[DeviceBudget]:
    """One budget per device holding weights (the host's too when only it holds the prefix cache);
    none until the model, its dtype and the devices' memory are known.

    Args:
        value: a dotted setting's value, the edited one where there is one.
        edited: the dotted settings being edited.
        context: the context the budget is drawn for (None: ``DEFAULT_CONTEXT``).
    """
    e = engine
    if e.entry is None or not e.memory or not e.status.get("dtype"):
        return []
    batch = int(value("batching.max_batch_size") or 1)
    context = int(context or DEFAULT_CONTEXT)
    cache_on = value("cache.type") != "none"
    prefix = int(float(value("cache.memory_mb") or 0) * 2**20) if cache_on else 0
    spread = layer_spread(e)
    # Spread over several devices (max_memory): the estimate's placement says each one's part (the
    # engine's /metrics reports the weights on one device only).
    several = len(spread) > 1
    devices = (list(spread) if several else list(e.weights)) or [e.status.get("device") or "cpu"]
    total_weights = sum(e.weights.values()) or 1
    total_placed = sum(p.bytes for p in spread.values()) or 1
    out = []
    for device in devices:
        memory = e.memory.get(device) or DeviceMemory(device, None, None, "unknown")
        on_host = not device.startswith("cuda")
        share = spread[device].bytes / total_placed if several else e.weights.get(device, total_weights) / total_weights
        engine_bytes = e.status.get("process_rss_bytes") if on_host else None
        measured = int(e.weights[device]) if device in e.weights and not several else None
        try:
            budget = device_budget(
                e.entry, memory, dtype=e.status["dtype"], batch=batch, context=context, kv_dtype=kv_dtype,
                share=share, prefix_cache_bytes=prefix if on_host else 0,
                kv_pool_bytes=kv_pool(e, value, edited, kv_dtype, share),
                weights_bytes=measured, engine_bytes=engine_bytes,
                engine_accounted_bytes=int(sum(e.weights.values()) + e.kv_now + e.prefix_now),
                quantization=held_quantization(e.status))
        except (ValueError, KeyError):
            return []
        budget.layers = spread[device].modules if device in spread else None
        out.append(budget)
    if prefix and all(not d.startswith("cpu") for d in devices) and "cpu" in e.memory:
        out.append(device_budget(e.entry, e.memory["cpu"], dtype=e.status["dtype"], batch=0, context=context,
                                 share=0.0, prefix_cache_bytes=prefix, weights_bytes=0))
    return out


_SPREADS: dict[tuple, dict[str, DevicePlacement]] = {}  # the budget is redrawn at every edit: read the headers once


def layer_spread(engine: EngineView) -> dict[str, DevicePlacement]:
    """Device -> the layers the load placed there (``engine.memory.layer_placement`` over the
    engine's ``max_memory``; all on its device without it). {} when it cannot be told."""
    e = engine
    if e.entry is None or not e.status.get("dtype"):
        return {}
    device = e.status.get("device") or "cpu"
    limits = tuple(sorted((e.max_memory or {}).items()))
    key = (e.entry.path, e.entry.size_bytes, e.status.get("dtype"), e.status.get("quantization"), device, limits)
    if key not in _SPREADS:
        try:
            held = plan_quantization(e.entry, held_quantization(e.status), e.status["dtype"], device)
            placed = layer_placement(e.entry, resolve_dtype(e.status["dtype"], device), held, device,
                                     dict(limits) or None)
        except (ValueError, KeyError):
            placed = None
        _SPREADS.clear()
        _SPREADS[key] = {p.device: p for p in placed or [] if p.device != "disk"}
    return _SPREADS[key]


def held_quantization(status: dict) -> str:
    """int8 | int4 when the served model's weights were quantized on load ("int4 (torchao, group
    64)" in /admin/status), else none: the estimate's weights then are the float (or as-saved) ones.
    The measured weights from /metrics count quantized tensors as they are, so this matters only
    until they arrive."""
    method = str(status.get("quantization") or "none").split(" ", 1)[0]
    return method if method in ("int8", "int4") else "none"


def kv_pool(engine: EngineView, value: Callable[[str], Any], edited: Collection[str], kv_dtype: str,
            share: float) -> Optional[int]:
    """Continuous batching reserves its KV blocks up front: the pool in force (from /metrics)
    while its settings are unchanged; sized from num_blocks x page_size when edited."""
    if value("batching.mode") != "continuous":
        return None
    blocks, page = value("batching.num_blocks"), value("batching.page_size")
    per_token = engine.entry.kv_elements_per_token() if engine.entry else None
    if not any(k in edited for k in POOL_SETTINGS) and engine.kv_now:
        return int(engine.kv_now)
    if blocks and page and per_token:
        dtype = engine.status.get("dtype") if kv_dtype == "auto" else kv_dtype
        return int(blocks * page * per_token * DTYPE_BYTES.get(dtype, 4) * share)
    return None
