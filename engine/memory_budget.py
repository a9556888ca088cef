"""The memory budget of a running engine, device by device (torch-free; the Tuning panel draws
it): the engine's parts under a set of settings (weights, KV cache, prefix cache, activations,
reserve; measured where the engine or the OS says, estimated by ``engine.memory`` otherwise),
what the other processes hold, what stays free, the verdict and what batch and context could
grow to. ``engine.memory`` estimates a model before it is loaded; this module weighs one that is.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from engine.catalog import ModelEntry
from engine.memory import (
    TIGHT_MARGIN,
    DeviceMemory,
    _parts,
    max_batch,
    max_context,
    plan_quantization,
    resolve_dtype,
)

BUDGET_PARTS = ("weights", "kv_cache", "prefix_cache", "activations", "reserve", "other", "free")


@dataclass
class BudgetPart:
    key: str                      # one of BUDGET_PARTS
    bytes: Optional[int]
    measured: bool                # read from the engine or the OS, not estimated


@dataclass
class DeviceBudget:
    """Where one device's memory goes under a set of settings: the engine's parts, the other
    processes, what stays free; the verdict and what the settings could grow to."""

    device: str
    total_bytes: Optional[int]
    parts: list[BudgetPart]
    need_bytes: int               # the engine's, under the settings
    available_bytes: Optional[int]  # the device's total less the other processes
    verdict: str                  # fits | tight | will-not-fit | unknown
    max_batch: Optional[int] = None    # at the context; None where this device holds no KV
    max_context: Optional[int] = None  # at the batch
    layers: Optional[list[str]] = None  # the modules the load places here ("embed_tokens", "layers 0-13" …)

    def part(self, key: str) -> Optional[BudgetPart]:
        return next((p for p in self.parts if p.key == key), None)


def device_budget(entry: ModelEntry, memory: DeviceMemory, *, dtype: str, batch: int, context: int,
                  kv_dtype: str = "auto", share: float = 1.0, prefix_cache_bytes: int = 0,
                  kv_pool_bytes: Optional[int] = None, weights_bytes: Optional[int] = None,
                  engine_bytes: Optional[int] = None, engine_accounted_bytes: int = 0,
                  quantization: str = "none") -> DeviceBudget:
    """The budget of ``memory.device`` for a model already loaded there.

    Args:
        share: the part of the model (weights, KV, activations) on this device (several GPUs).
        kv_pool_bytes: continuous batching's reserved block pool, instead of batch x context.
        weights_bytes: measured (``/metrics``); the estimate's otherwise.
        engine_bytes: what the engine holds on this device now (RSS on the host, its NVML share on
            a GPU); with ``memory.free_bytes`` it tells the other processes apart, and on the host
            what it holds beyond ``engine_accounted_bytes`` (weights, KV, prefix cache now) is
            its runtime's reserve.
        quantization: how the model's weights are held (none | int8 | int4), for the estimate.
    """
    device = memory.device
    load_dtype = resolve_dtype(dtype, device)
    try:
        held = plan_quantization(entry, quantization, dtype, device) if quantization != "none" else None
    except ValueError:  # refused where it is asked about: count the float weights
        held = None
    weights, kv, activations, reserve = _parts(entry, load_dtype, load_dtype if kv_dtype == "auto" else kv_dtype,
                                               batch, context, device, held)
    measured_weights = weights_bytes is not None
    weights = weights_bytes if measured_weights else int(weights * share)
    kv = kv_pool_bytes if kv_pool_bytes is not None else int(kv * share)
    activations = int(activations * share)
    runtime_measured = engine_bytes is not None and not device.startswith("cuda")
    if runtime_measured:
        reserve = max(reserve, engine_bytes - engine_accounted_bytes)
    need = weights + kv + prefix_cache_bytes + activations + reserve
    other = None
    if memory.total_bytes is not None and memory.free_bytes is not None:
        other = max(0, memory.total_bytes - memory.free_bytes - (engine_bytes or 0))
    available = memory.total_bytes - other if other is not None else None
    parts = [BudgetPart("weights", weights, measured_weights), BudgetPart("kv_cache", kv, kv_pool_bytes is not None),
             BudgetPart("prefix_cache", prefix_cache_bytes, False), BudgetPart("activations", activations, False),
             BudgetPart("reserve", reserve, runtime_measured), BudgetPart("other", other, other is not None),
             BudgetPart("free", None if available is None else max(0, available - need), available is not None)]
    result = DeviceBudget(device, memory.total_bytes, parts, need, available, _verdict(need, available))
    if available is not None and share > 0:
        room = int((available - weights - prefix_cache_bytes - reserve) / share)
        result.max_batch = max_batch(entry, context, room, load_dtype, kv_dtype, device)
        result.max_context = max_context(entry, batch, room, load_dtype, kv_dtype, device)
    return result


def _verdict(need: int, available: Optional[int]) -> str:
    if available is None:
        return "unknown"
    if need > available:
        return "will-not-fit"
    return "tight" if need > available * (1 - TIGHT_MARGIN) else "fits"
