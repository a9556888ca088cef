"""How much memory a model will take before it is loaded (torch-free; the GUI uses it).

    total = weights + KV cache + activations/workspace + reserve

* weights: parameters (counted from the safetensors headers) x bytes of the load dtype; quantized
  (``engine.quantization``): the linear layers at 8 or 4 bits with their scales, the embedding and
  head at 8 bits per row, the rest (norms, biases, fused experts) in the load dtype; a checkpoint
  saved quantized holds what its files hold;
* KV cache: batch x context x KV elements per token (layers x KV heads x (K + V head dims); for
  DeepSeek-V2/V3's MLA, layers x (kv_lora_rank + qk_rope_head_dim), the compressed latent that
  transformers caches) x bytes of the KV dtype;
* activations: the peak of one prefill of ``batch x context`` tokens: a few hidden-size and
  intermediate-size vectors per token, the last-token logits in float32, and for attention with
  unequal K/V head dims (MLA) one layer's score matrix;
* reserve: the runtime's own (the CUDA context, allocator slack; the torch runtime on a CPU).

Where the weights go: on the one device, or, with ``[load] max_memory``, spread the way the
loader's ``device_map="auto"`` spreads them (``engine.placement``): ``placement`` lists, device by
device, the layers placed there and their bytes (``cuda:0: embed_tokens + layers 0-13``).

The free memory of the chosen device comes from NVML for NVIDIA GPUs and psutil for the host.
The budget of a model already loaded (measured parts beside these estimates) is
``engine.memory_budget``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Optional

from engine.catalog import ModelEntry
from engine.placement import DevicePlacement, model_tree, plan_device_map, summarize, tensor_bytes_of
from engine.quantization import (
    QuantizationPlan,
    WeightCensus,
    census_from_dims,
    census_of,
    held_tensor_bytes,
    int4_group_size,
    int4_kept_float,
    plan,
    quantized_weights_bytes,
)
from engine.telemetry.gpu import gpu_memory

DTYPE_BYTES = {"float32": 4, "float16": 2, "bfloat16": 2, "float8": 1, "int8": 1, "float64": 8}
GPU_RESERVE = 600 * 2**20        # CUDA context + cuBLAS workspace + allocator slack, measured typical
CPU_RESERVE = 16 * 2**20         # torch's own buffers on first use (measured: 11-13 MiB on CPU)
TIGHT_MARGIN = 0.10              # under 10% headroom left reads as "tight"


@dataclass
class DeviceMemory:
    device: str
    total_bytes: Optional[int]
    free_bytes: Optional[int]
    source: str                  # nvml | psutil | unknown


@dataclass
class MemoryEstimate:
    model: str
    dtype: str
    kv_dtype: str
    batch: int
    context: int
    weights_bytes: int
    kv_cache_bytes: int
    activation_bytes: int
    reserve_bytes: int
    total_bytes: int
    device: Optional[str] = None
    device_free_bytes: Optional[int] = None
    device_total_bytes: Optional[int] = None
    verdict: str = "unknown"     # fits | tight | will-not-fit | unknown
    quantization: str = "none"   # none | int8 | int4 | pre-quantized (what the weights figure counts)
    float_weights_bytes: int = 0  # the same weights unquantized, in the load dtype
    max_memory: Optional[dict[str, str]] = None  # [load] max_memory: the devices the layers spread over
    # Device by device, the layers the load puts there and their weights' bytes ({device, modules,
    # bytes, limit_bytes}); None where the files give no tensor names (GGUF).
    placement: Optional[list[dict]] = None

    def as_dict(self) -> dict:
        return asdict(self)

    def placement_lines(self) -> list[str]:
        """"cuda:0: embed_tokens + layers 0-13 (1.20 GiB of 20.00 GiB)", one a device."""
        out = []
        for p in self.placement or []:
            limit = f" of {format_bytes(p['limit_bytes'])}" if p["limit_bytes"] and self.max_memory else ""
            out.append(f"{p['device']}: {' + '.join(p['modules'])} ({format_bytes(p['bytes'])}{limit})")
        return out


def resolve_dtype(dtype: str, device: str) -> str:
    """The dtype the loader will use (same rule as engine.runtime.loader.resolve_dtype)."""
    if dtype != "auto":
        return dtype
    return "bfloat16" if device.startswith("cuda") else "float32"


def estimate(entry: ModelEntry, dtype: str = "auto", batch: int = 1, context: Optional[int] = None,
             kv_dtype: str = "auto", device: str = "cpu", quantization: str = "none",
             max_memory: Optional[dict[str, str]] = None) -> MemoryEstimate:
    """Estimate the memory a load of ``entry`` needs and compare it with ``device``'s free memory.

    Args:
        quantization: none | int8 | int4 | auto (resolved as the load would: see ``plan_quantization``).
        max_memory: ``[load] max_memory`` ({"cuda:0": "20GiB", "cpu": "64GiB"}): the layers' placement
            over those devices (without it, all on ``device``).
    Raises:
        ValueError: the entry lacks what the estimate needs (parameters, layers, heads), or a
            ``max_memory`` entry is not a device and size (engine.placement.MaxMemoryError).
        engine.quantization.QuantizationRefused: the quantization cannot run there.
    """
    if not entry.params:
        raise ValueError(f"{entry.name}: parameter count unknown ({entry.problem or 'no weights'})")
    context = context or entry.context_length or 2048
    load_dtype = resolve_dtype(dtype, device)
    kv_dtype = load_dtype if kv_dtype == "auto" else kv_dtype
    chosen = plan_quantization(entry, quantization, dtype, device, batch, context)
    weights, kv, activations, reserve = _parts(entry, load_dtype, kv_dtype, batch, context, device, chosen)
    result = MemoryEstimate(
        model=entry.name, dtype=load_dtype, kv_dtype=kv_dtype, batch=batch, context=context,
        weights_bytes=weights, kv_cache_bytes=kv, activation_bytes=activations, reserve_bytes=reserve,
        total_bytes=weights + kv + activations + reserve, quantization=chosen.method,
        float_weights_bytes=entry.params * DTYPE_BYTES[load_dtype], max_memory=max_memory,
    )
    spread = layer_placement(entry, load_dtype, chosen, device, max_memory)
    result.placement = None if spread is None else [asdict(p) for p in spread]
    compare_with_device(result, device_memory(device))
    return result


def layer_placement(entry: ModelEntry, load_dtype: str, quantization: QuantizationPlan, device: str,
                    max_memory: Optional[dict[str, str]] = None) -> Optional[list[DevicePlacement]]:
    """Device by device, the layers a load places there (``engine.placement``: transformers'
    ``device_map="auto"`` planning over ``max_memory``; all on ``device`` without it), each module
    sized as the load holds it (quantized layers by the census). None for a GGUF file."""
    planned = layer_device_map(entry, load_dtype, quantization, device, max_memory)
    return None if planned is None else summarize(*planned)


def _planned_quantized_bytes(census: WeightCensus, quantization: QuantizationPlan, device: str,
                             max_memory: Optional[dict[str, str]]) -> dict[str, int]:
    """What transformers' quantizer counts for each weight it quantizes while it places the layers
    (``param_element_size``): 1 byte for int8; for int4 0.5 where it packs on a GPU (bitsandbytes,
    torchao's tile format), 1 with torchao's CPU int4 config, whose class name its size rule does
    not read. Scales are not counted, and the embedding and head (int8 after the load here) are
    planned in float: the placement follows these sizes, the bytes a device then holds the census's."""
    on_gpu = device.startswith("cuda") or any(str(k).startswith("cuda") for k in (max_memory or {}))
    element = 1.0 if quantization.method == "int8" or (quantization.backend == "torchao" and not on_gpu) else 0.5
    kept = (set(int4_kept_float(census, quantization.group_size or 32))
            if quantization.method == "int4" and quantization.backend == "torchao" else set())
    return {f"{name}.weight": int(rows * cols * element)
            for name, (rows, cols) in zip(census.linear_names, census.linear) if name not in kept}


def layer_device_map(entry: ModelEntry, load_dtype: str, quantization: QuantizationPlan, device: str,
                     max_memory: Optional[dict[str, str]] = None):
    """``layer_placement``'s plan before it is summarized: (module tree sized as held, device map,
    limits). A quantized load is placed by transformers' own sizes (``_planned_quantized_bytes``)
    within 0.9 of each limit, as its quantizers plan."""
    if entry.format == "gguf" or (not max_memory and not device.startswith(("cpu", "cuda", "mps"))):
        return None
    as_saved = quantization.method == "pre-quantized" or (quantization.method == "none" and entry.pre_quantized)
    floats = tensor_bytes_of(entry.path, None if as_saved else DTYPE_BYTES[load_dtype])
    if not floats:
        return None
    held, planning = floats, floats
    quantizing = quantization.method in ("int8", "int4")
    if quantizing and (census := census_of(entry.path)) is not None:
        held = {**floats, **{k: v for k, v in held_tensor_bytes(
            census, quantization.method, DTYPE_BYTES[load_dtype], quantization.group_size,
            tables_quantized=quantization.backend != "bitsandbytes").items() if k in floats}}
        planning = {**floats, **{k: v for k, v in _planned_quantized_bytes(
            census, quantization, device, max_memory).items() if k in floats}}
    rope = entry.qk_rope_head_dim if entry.attention == "mla" else entry.head_dim
    shape = dict(tied=entry.tied_embeddings, rotary_bytes=4 * (rope or 0))
    _, device_map, limits = plan_device_map(planning, max_memory or {device: 2**62},
                                            limit_factor=0.9 if quantizing and max_memory else 1.0, **shape)
    return model_tree(held, **shape)[0], device_map, limits


def _parts(entry: ModelEntry, load_dtype: str, kv_dtype: str, batch: int, context: int,
           device: str, quantization: Optional[QuantizationPlan] = None) -> tuple[int, int, int, int]:
    """(weights, KV cache, activations, reserve) in bytes."""
    wbytes, kvbytes = DTYPE_BYTES[load_dtype], DTYPE_BYTES[kv_dtype]
    per_token = entry.kv_elements_per_token()
    if per_token is None:
        raise ValueError(f"{entry.name}: layers/heads unknown, cannot size the KV cache")
    return (weights_bytes(entry, load_dtype, quantization), batch * context * per_token * kvbytes,
            _activation_bytes(entry, batch, context, wbytes),
            GPU_RESERVE if device.startswith("cuda") else CPU_RESERVE)


def weights_bytes(entry: ModelEntry, load_dtype: str, quantization: Optional[QuantizationPlan] = None) -> int:
    """The weights' bytes once loaded in ``load_dtype`` (a resolved dtype) as ``quantization`` says."""
    method = quantization.method if quantization is not None else "none"
    if method == "pre-quantized" or (method == "none" and entry.pre_quantized is not None):
        return entry.size_bytes  # held as saved (the headers' few KiB aside)
    if method == "none":
        return entry.params * DTYPE_BYTES[load_dtype]
    census = _census(entry)
    return quantized_weights_bytes(census, method, DTYPE_BYTES[load_dtype], quantization.group_size,
                                   tables_quantized=quantization.backend != "bitsandbytes")


def _census(entry: ModelEntry):
    census = census_of(entry.path) if entry.format != "gguf" else None
    return census or census_from_dims(entry.params or 0, entry.vocab_size, entry.hidden_size,
                                      entry.intermediate_size, tied=entry.tied_embeddings or entry.format == "gguf")


def plan_quantization(entry: ModelEntry, requested: str, dtype: str = "auto", device: str = "cpu",
                      batch: int = 1, context: Optional[int] = None) -> QuantizationPlan:
    """What a load with ``requested`` quantization does on ``device``; ``auto`` takes the first of
    none, int8, int4 whose estimate (at ``batch`` x ``context``) fits the device's free memory.

    Raises:
        engine.quantization.QuantizationRefused: the request cannot run there (what would is said).
    """
    context = context or min(entry.context_length or 2048, 2048)
    census = _census(entry) if entry.params and entry.pre_quantized is None else None
    group = int4_group_size(census.input_widths()) if census else None
    if requested != "auto" or entry.pre_quantized is not None:
        return plan(requested, device, pre_quantized=entry.pre_quantized, group_size=group)
    memory = device_memory(device)
    load_dtype = resolve_dtype(dtype, device)
    sizes, fits = {}, {}
    for method in ("none", "int8", "int4"):
        candidate = QuantizationPlan(method, "torchao" if method != "none" else None, group)
        sizes[method] = sum(_parts(entry, load_dtype, load_dtype, batch, context, device, candidate))
        fits[method] = None if memory.free_bytes is None else sizes[method] * (1 + TIGHT_MARGIN) <= memory.free_bytes
    return plan("auto", device, group_size=group, fits=fits, sizes=sizes, free_bytes=memory.free_bytes)


def run_bytes(entry: ModelEntry, batch: int, context: int, dtype: str = "auto", kv_dtype: str = "auto",
              device: str = "cpu") -> int:
    """What one batch at one context adds on top of the weights: its KV cache and activations."""
    load_dtype = resolve_dtype(dtype, device)
    _, kv, activations, _ = _parts(entry, load_dtype, load_dtype if kv_dtype == "auto" else kv_dtype,
                                   batch, context, device)
    return kv + activations


def _largest(fits, low: int, high: int) -> int:
    """The largest n in [low, high] with fits(n), for a ``fits`` true up to some n and false after
    (0 when not even ``low`` fits)."""
    if not fits(low):
        return 0
    while low < high:
        middle = (low + high + 1) // 2
        low, high = (middle, high) if fits(middle) else (low, middle - 1)
    return low


def max_batch(entry: ModelEntry, context: int, budget_bytes: int, dtype: str = "auto", kv_dtype: str = "auto",
              device: str = "cpu", limit: int = 1024) -> int:
    """The largest batch (at most ``limit``) whose KV cache and activations at ``context`` tokens
    fit in ``budget_bytes`` (what is left once the weights, the reserve and the rest are counted);
    0 when not even one request fits. Solves the estimate, which grows with the batch."""
    return _largest(lambda b: run_bytes(entry, b, context, dtype, kv_dtype, device) <= budget_bytes, 1, limit)


def max_context(entry: ModelEntry, batch: int, budget_bytes: int, dtype: str = "auto", kv_dtype: str = "auto",
                device: str = "cpu", limit: Optional[int] = None) -> int:
    """The longest context (at most ``limit``, default the model's) at which ``batch`` requests'
    KV cache and activations fit in ``budget_bytes``; 0 when not even 16 tokens fit."""
    limit = limit or entry.context_length or 2048
    return _largest(lambda c: run_bytes(entry, batch, c, dtype, kv_dtype, device) <= budget_bytes, min(16, limit), limit)


def _activation_bytes(entry: ModelEntry, batch: int, context: int, act_bytes: int) -> int:
    """Peak transient memory of one prefill over ``batch x context`` tokens.

    Measured on CPU (torch 2.13, SDPA, which never materialises the full score matrix): the peak
    above steady state is about 3 hidden-size and 3 intermediate-size vectors per token (residual,
    normed input and attention output; the MLP's gate, up and their product).
    """
    hidden = entry.hidden_size or 0
    intermediate = entry.intermediate_size or 4 * hidden  # a 4x MLP when the config does not say
    rows = batch * context
    logits = batch * (entry.vocab_size or 0) * 4 * 2       # last-token logits in float32, and softmax
    return rows * (3 * hidden + 3 * intermediate) * act_bytes + logits + _attention_scores_bytes(
        entry, batch, context, act_bytes)


def _attention_scores_bytes(entry: ModelEntry, batch: int, context: int, act_bytes: int) -> int:
    """Fused SDPA kernels never hold the score matrix, but they need equal K and V head dims.
    MLA's differ (192 vs 128 in DeepSeek-V3), so torch falls back to the math path, which holds
    one layer's scores and their softmax, plus the causal mask (measured on CPU)."""
    if entry.attention != "mla" and entry.head_dim == (entry.v_head_dim or entry.head_dim):
        return 0
    return 2 * batch * (entry.heads or 1) * context * context * act_bytes + context * context * 4


def compare_with_device(result: MemoryEstimate, memory: DeviceMemory) -> None:
    result.device = memory.device
    result.device_free_bytes = memory.free_bytes
    result.device_total_bytes = memory.total_bytes
    if memory.free_bytes is None:
        result.verdict = "unknown"
    elif result.total_bytes > memory.free_bytes:
        result.verdict = "will-not-fit"
    elif result.total_bytes > memory.free_bytes * (1 - TIGHT_MARGIN):
        result.verdict = "tight"
    else:
        result.verdict = "fits"


def device_memory(device: str) -> DeviceMemory:
    """Free and total memory of ``cpu``, ``cuda`` or ``cuda:N`` (N/A as None when unreadable)."""
    if device.startswith("cuda"):
        index = int(device.partition(":")[2] or 0)
        return _nvml_memory(index, device)
    import psutil

    vm = psutil.virtual_memory()
    return DeviceMemory("cpu", vm.total, vm.available, "psutil")


def _nvml_memory(index: int, device: str) -> DeviceMemory:
    gpu = gpu_memory(index)  # no nvidia-ml-py, no driver, no such GPU: N/A, never 0
    source = "unknown" if gpu.total_bytes is None else "nvml"
    return DeviceMemory(device, gpu.total_bytes, gpu.free_bytes, source)


def format_bytes(n: Optional[int]) -> str:
    if n is None:
        return "N/A"
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.2f} {unit}"
        n /= 1024
    return f"{n} B"
