"""What a load does with its weights, decided before any weight is read: the methods each device
and the installed libraries can run, ``auto``'s choice, and the refusals that say what would work
instead (torch-free)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from engine.quantization.census import INT4_GROUP_SIZES
from engine.quantization.checkpoints import PreQuantized, package_present, prequantized_problem

REQUESTS = ("none", "int8", "int4", "auto")


class QuantizationRefused(ValueError):
    """A quantization this device or these libraries cannot run; the message says what would."""


@dataclass(frozen=True)
class QuantizationPlan:
    """What a load will do with the weights.

    Attributes:
        method: none | int8 | int4 (quantized while loading) | pre-quantized (loaded as saved).
        backend: torchao | bitsandbytes | the checkpoint's method; None for none.
        group_size: int4's group along the input.
        note: why (``auto``'s choice and the sizes behind it), for the log and the ready event.
    """

    method: str
    backend: Optional[str] = None
    group_size: Optional[int] = None
    note: str = ""
    pre_quantized: Optional[PreQuantized] = None

    @property
    def quantized(self) -> bool:
        return self.method != "none"

    def describe(self) -> str:
        if self.method == "none":
            return "none"
        if self.pre_quantized is not None:
            return f"pre-quantized {self.pre_quantized.label}"
        group = f", group {self.group_size}" if self.group_size else ""
        return f"{self.method} ({self.backend}{group})"


def available_methods(device: str) -> dict[str, Optional[str]]:
    """For each of int8 and int4: the backend that would quantize on ``device``, or None."""
    torchao = package_present("torchao")
    if device.startswith("cuda") and package_present("bitsandbytes"):
        return {"int8": "bitsandbytes", "int4": "bitsandbytes"}
    if device == "mps":
        return {"int8": None, "int4": None}
    return {"int8": "torchao" if torchao else None, "int4": "torchao" if torchao else None}


def int4_group_size(widths: list[int]) -> Optional[int]:
    """The largest int4 group size that divides every linear input width (None: no widths); 32
    when none does (the layers it does not divide stay in float)."""
    widths = [w for w in widths if w]
    for size in INT4_GROUP_SIZES:
        if widths and all(w % size == 0 for w in widths):
            return size
    return INT4_GROUP_SIZES[-1] if widths else None


def plan(requested: str, device: str, *, pre_quantized: Optional[PreQuantized] = None,
         group_size: Optional[int] = None, fits: Optional[dict[str, Optional[bool]]] = None,
         sizes: Optional[dict[str, int]] = None, free_bytes: Optional[int] = None) -> QuantizationPlan:
    """Decide what a load does with its weights, before any weight is read.

    Args:
        requested: none | int8 | int4 | auto.
        device: the resolved device ("cpu", "cuda:0" …).
        pre_quantized: the checkpoint's own quantization, if any.
        fits: for ``auto``: whether a load with each of none/int8/int4 fits the device (None: unknown).
        sizes, free_bytes: what the note quotes (estimated totals, the device's free memory).
    Raises:
        QuantizationRefused: the device or libraries cannot run it; the message says what would.
    """
    if requested not in REQUESTS:
        raise QuantizationRefused(f"quantization {requested!r}: expected one of {', '.join(REQUESTS)}")
    if pre_quantized is not None:
        return _plan_prequantized(requested, device, pre_quantized)
    if requested == "none":
        return QuantizationPlan("none")
    backends = available_methods(device)
    if requested == "auto":
        return _plan_auto(device, backends, group_size, fits or {}, sizes or {}, free_bytes)
    backend = backends[requested]
    if backend is None:
        raise QuantizationRefused(_cannot_quantize(requested, device))
    return QuantizationPlan(requested, backend, group_size if requested == "int4" else None)


def _cannot_quantize(requested: str, device: str) -> str:
    if device == "mps":
        return (f"quantization {requested!r} is not available on Apple's MPS device here (torchao's and "
                f"bitsandbytes' kernels are CPU/CUDA); load on the CPU (device = \"cpu\") or use quantization = \"none\"")
    return (f"quantization {requested!r} needs the torchao package on {device} (pip install torchao)"
            + (" or bitsandbytes with a CUDA GPU" if device.startswith("cuda") else "")
            + "; or load with quantization = \"none\"")


def _plan_prequantized(requested: str, device: str, pre: PreQuantized) -> QuantizationPlan:
    same = pre.method == "torchao" and requested == f"int{pre.bits}"
    if requested in ("int8", "int4") and not same:
        raise QuantizationRefused(
            f"the model is already quantized with {pre.label}; quantization {requested!r} (torchao "
            f"{requested} while loading) cannot be applied on top: load it with quantization = \"none\" "
            f"(as saved) or start from its float checkpoint")
    problem = prequantized_problem(pre, device)
    if problem:
        raise QuantizationRefused(f"cannot load on {device}: {problem}")
    return QuantizationPlan("pre-quantized", pre.method, None, f"loaded as saved: {pre.label}", pre)


def _plan_auto(device: str, backends: dict[str, Optional[str]], group_size: Optional[int],
               fits: dict[str, Optional[bool]], sizes: dict[str, int], free_bytes: Optional[int]) -> QuantizationPlan:
    from engine.memory import format_bytes  # memory imports this module: at call time

    free = f"{format_bytes(free_bytes)} free on {device}"
    quoted = ", ".join(f"{m} {format_bytes(sizes[m])}" for m in ("none", "int8", "int4") if m in sizes)
    if fits.get("none") is None:
        return QuantizationPlan("none", note=f"auto: free memory of {device} unknown, loading unquantized")
    for method in ("none", "int8", "int4"):
        if method != "none" and backends[method] is None:
            continue
        if fits.get(method):
            note = f"auto picked {method if method != 'none' else 'no quantization'}: {quoted} needed, {free}"
            return QuantizationPlan(method, backends.get(method) if method != "none" else None,
                                    group_size if method == "int4" else None, note)
    if backends["int4"] is None:
        return QuantizationPlan("none", note=f"auto: nothing fits ({quoted} needed, {free}) and no quantization "
                                             f"library runs on {device}; loading unquantized")
    return QuantizationPlan("int4", backends["int4"], group_size,
                            f"auto picked int4, the smallest, though even it may not fit: {quoted} needed, {free}")

