"""Quantized weights: which methods exist, which this device and the installed libraries can run,
what a load will hold in memory, and the refusals that say what would work instead (torch-free).

Two kinds of quantized model reach the engine:

* a float checkpoint quantized while it loads (``[model] quantization = "int8" | "int4"``), through
  transformers' own quantization configs: torchao on a CPU (and on a GPU without bitsandbytes),
  bitsandbytes where a CUDA GPU is present and the package installed;
* a checkpoint saved quantized (a ``quantization_config`` in its config.json: GPTQ, AWQ, FP8,
  bitsandbytes, compressed-tensors, torchao …), loaded as it is where the library and device allow.

What is quantized (weight-only; activations stay in the load dtype):

* every ``nn.Linear`` of the decoder: int8 per output row, or int4 in groups of 32 along the
  input (measured on the demo model: groups of 64 keep 0.75 of float32's greedy choices, groups
  of 32 0.97, for 0.18x against 0.20x of float32's bytes); a layer whose shape the int4 kernels
  cannot pack stays in float, and so the estimate counts it;
* the input embedding and the output head (``lm_head``) in int8 per row: in a small model they are
  a fifth of the weights, and int4 there costs more agreement than it saves. A tied head shares
  the embedding's int8 table;
* nothing else: norms, biases, MoE routers and experts that transformers fuses into 3-D tensors
  (not ``nn.Linear``) stay in the load dtype.

The page that builds the transformers config lives in ``engine.runtime.quantize`` (it imports
torch); this module is what the GUI, the catalog, the estimate and the refusals share.
"""

from __future__ import annotations

import importlib.util
import json
import re
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Optional

REQUESTS = ("none", "int8", "int4", "auto")
INT4_GROUP_SIZES = (32,)  # larger groups tried and measured: see the module's docstring
INT4_ROW_TILE = 16

# Bytes a method holds per weight and per scale group (measured on torchao 0.18's CPU tensors:
# Int8Tensor keeps a float32 scale and an int8 zero point per row; Int4OpaqueTensor packs two
# weights a byte and keeps a float32 scale and zero per group).
INT8_ROW_OVERHEAD = 5
INT4_GROUP_OVERHEAD = 8

# Pre-quantized checkpoints: the package transformers needs for each method, and whether that
# method runs only on a GPU. Methods not listed are named with their quant_method and refused.
_PREQUANTIZED_NEEDS = {
    "torchao": ("torchao", False),
    "gptq": ("gptqmodel", False),
    "awq": ("gptqmodel", False),
    "bitsandbytes": ("bitsandbytes", True),
    "fp8": ("accelerate", True),
    "fbgemm_fp8": ("fbgemm_gpu", True),
    "compressed-tensors": ("compressed_tensors", False),
    "mxfp4": ("kernels", True),
    "hqq": ("hqq", False),
    "quanto": ("optimum.quanto", False),
    "eetq": ("eetq", True),
}
_WHAT_WORKS_ON_CPU = ("load the original float checkpoint with quantization = \"int8\" or \"int4\" "
                      "(torchao, which runs on this CPU)")


class QuantizationRefused(ValueError):
    """A quantization this device or these libraries cannot run; the message says what would."""


@dataclass(frozen=True)
class PreQuantized:
    """The ``quantization_config`` of a checkpoint saved quantized."""

    method: str                 # transformers' quant_method: gptq, awq, fp8, bitsandbytes, torchao …
    bits: Optional[int]         # weight bits, where the config says
    detail: str = ""            # e.g. "Int8WeightOnlyConfig", "nf4", "group 128"

    @property
    def label(self) -> str:
        bits = f" {self.bits}-bit" if self.bits else ""
        detail = f" ({self.detail})" if self.detail else ""
        return f"{self.method}{bits}{detail}"


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


# ---------------------------------------------------------------------------- checkpoints


def read_quantization_config(config: dict) -> Optional[PreQuantized]:
    """The checkpoint's quantization from its config.json, or None when it is not quantized."""
    q = config.get("quantization_config") or (config.get("text_config") or {}).get("quantization_config")
    if not isinstance(q, dict):
        return None
    method = str(q.get("quant_method") or "unknown").lower()
    method = "compressed-tensors" if method == "compressed_tensors" else method
    bits, detail = _bits_and_detail(method, q)
    return PreQuantized(method, bits, detail)


def _bits_and_detail(method: str, q: dict) -> tuple[Optional[int], str]:
    if method in ("gptq", "awq"):
        bits = q.get("bits") or q.get("w_bit")
        group = q.get("group_size") or q.get("q_group_size")
        return (int(bits) if bits else None), (f"group {group}" if group else "")
    if method == "bitsandbytes":
        if q.get("load_in_4bit"):
            return 4, str(q.get("bnb_4bit_quant_type") or "nf4")
        return (8, "LLM.int8") if q.get("load_in_8bit") else (None, "")
    if method in ("fp8", "fbgemm_fp8"):
        block = q.get("weight_block_size")
        return 8, (f"block {block[0]}x{block[1]}" if isinstance(block, list) and len(block) == 2 else "")
    if method == "torchao":
        return _torchao_bits(q.get("quant_type"))
    if method == "compressed-tensors":
        for group in (q.get("config_groups") or {}).values():
            weights = (group or {}).get("weights") or {}
            if weights.get("num_bits"):
                return int(weights["num_bits"]), str(weights.get("type") or q.get("format") or "")
        return None, str(q.get("format") or "")
    return (int(q["bits"]) if isinstance(q.get("bits"), int) else None), ""


def _torchao_bits(quant_type: Any) -> tuple[Optional[int], str]:
    """torchao saves its config as {"default": {"_type": "Int8WeightOnlyConfig", …}} (or a string)."""
    names: list[str] = []
    if isinstance(quant_type, str):
        names = [quant_type]
    elif isinstance(quant_type, dict):
        text = json.dumps(quant_type)
        names = re.findall(r'"_type": "(\w+Config)"', text) or [str(k) for k in quant_type]
    bits = [int(m) for n in names for m in re.findall(r"Int(\d)Weight", n)]
    main = next((n for n in names if "Weight" in n and "FqnTo" not in n), names[0] if names else "")
    return (min(bits) if bits else None), main


def _package_present(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):  # a parent package that is absent
        return False


def prequantized_problem(pre: PreQuantized, device: str) -> Optional[str]:
    """Why this device and these libraries cannot load the checkpoint as saved; None when they can.

    ``device`` is the resolved kind: "cpu" or "cuda[:N]" (or "mps")."""
    needs = _PREQUANTIZED_NEEDS.get(pre.method)
    on_gpu = device.startswith("cuda")
    if needs is None:
        return f"quantized with {pre.label}, which this engine does not load; {_WHAT_WORKS_ON_CPU}"
    package, gpu_only = needs
    if gpu_only and not on_gpu:
        return (f"quantized with {pre.label}, which runs only on a CUDA GPU and this load is on {device}; "
                f"{_WHAT_WORKS_ON_CPU}")
    if not _package_present(package):
        return (f"quantized with {pre.label}, which needs the {package.split('.')[0]} package "
                f"(pip install {package.split('.')[-1].replace('_', '-')}); or {_WHAT_WORKS_ON_CPU}")
    return None


# ---------------------------------------------------------------------------- devices and libraries


def available_methods(device: str) -> dict[str, Optional[str]]:
    """For each of int8 and int4: the backend that would quantize on ``device``, or None."""
    torchao = _package_present("torchao")
    if device.startswith("cuda") and _package_present("bitsandbytes"):
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


# ---------------------------------------------------------------------------- what the weights hold


@dataclass
class WeightCensus:
    """The checkpoint's weights by what quantization does with them (parameter counts).

    Attributes:
        linear: 2-D weights of ``nn.Linear`` layers, as (rows, columns, count of such tensors).
        embedding: the input embedding's (rows, columns); head: the output head's, when not tied.
        other: parameters that stay in the load dtype (norms, biases, routers, fused experts).
    """

    linear: list[tuple[int, int]] = field(default_factory=list)
    embedding: Optional[tuple[int, int]] = None
    head: Optional[tuple[int, int]] = None
    other: int = 0
    embedding_name: Optional[str] = None  # the module names, as the checkpoint spells them
    head_name: Optional[str] = None
    linear_names: list[str] = field(default_factory=list)  # beside ``linear``, one each

    @property
    def params(self) -> int:
        return (sum(r * c for r, c in self.linear) + _area(self.embedding) + _area(self.head) + self.other)

    def input_widths(self) -> list[int]:
        return sorted({c for _, c in self.linear})


def _area(shape: Optional[tuple[int, int]]) -> int:
    return shape[0] * shape[1] if shape else 0


_EMBEDDING = re.compile(r"(embed_tokens|wte|word_embeddings|tok_embeddings|token_embd)\.weight$")
_HEAD = re.compile(r"^(lm_head|output)\.weight$")
# Kept out of nn.Linear by transformers: MoE experts fused into 3-D tensors, routers as parameters.
_NOT_LINEAR = re.compile(r"(\.experts\.|\.mlp\.gate\.weight$|\.ffn_gate_inp\.)")


def census_from_shapes(shapes: dict[str, list[int]]) -> WeightCensus:
    """Sort named tensor shapes (a safetensors header, or GGUF's) into a ``WeightCensus``."""
    census = WeightCensus()
    for name, shape in shapes.items():
        count = 1
        for dim in shape:
            count *= dim
        if len(shape) == 2 and _EMBEDDING.search(name):
            census.embedding, census.embedding_name = (shape[0], shape[1]), name.removesuffix(".weight")
        elif len(shape) == 2 and _HEAD.search(name):
            census.head, census.head_name = (shape[0], shape[1]), name.removesuffix(".weight")
        elif len(shape) == 2 and name.endswith(".weight") and not _NOT_LINEAR.search(name):
            census.linear.append((shape[0], shape[1]))
            census.linear_names.append(name.removesuffix(".weight"))
        else:
            census.other += count
    return census


@lru_cache(maxsize=64)
def _census_of_folder(folder: str, stamp: float) -> Optional[WeightCensus]:
    from engine.safetensors_meta import SafetensorsError, read_header

    shapes: dict[str, list[int]] = {}
    for file in sorted(Path(folder).glob("*.safetensors")):
        try:
            header = read_header(file)
        except SafetensorsError:
            return None
        shapes.update({name: list(info.shape) for name, info in header.tensors.items()})
    return census_from_shapes(shapes) if shapes else None


def census_of(path: str) -> Optional[WeightCensus]:
    """The census of a model folder's safetensors (None when it has none, or they are unreadable)."""
    folder = Path(path)
    if not folder.is_dir():
        return None
    try:
        stamp = max(f.stat().st_mtime for f in folder.glob("*.safetensors"))
    except ValueError:
        return None
    return _census_of_folder(str(folder), stamp)


def census_from_dims(params: int, vocab: Optional[int], hidden: Optional[int], intermediate: Optional[int],
                     tied: bool = True) -> WeightCensus:
    """A census from the config's sizes, where no tensor shapes are at hand (GGUF files): the
    embedding (and an untied head) from vocab x hidden, the rest as linear layers."""
    census = WeightCensus()
    rest = params
    if vocab and hidden:
        census.embedding = (vocab, hidden)
        rest -= vocab * hidden
        if not tied:
            census.head = (vocab, hidden)
            rest -= vocab * hidden
    width = hidden or 1
    rows = max(rest, 0) // width // INT4_ROW_TILE * INT4_ROW_TILE  # whole tiles; the rest as float
    census.linear = [(rows, width)] if rows else []
    census.other = max(rest - rows * width, 0)
    if intermediate and hidden:  # the down projections read the intermediate width
        census.linear.append((0, intermediate))
    return census


def quantized_weights_bytes(census: WeightCensus, method: str, float_bytes: int,
                            group_size: Optional[int] = None, tables_quantized: bool = True) -> int:
    """Bytes the weights hold once loaded with ``method`` (none | int8 | int4) in ``float_bytes``.

    Args:
        tables_quantized: the embedding and head in int8 (torchao here); bitsandbytes keeps them.
    """
    if method == "none":
        return census.params * float_bytes
    total = census.other * float_bytes
    for rows, cols in census.linear:
        total += _matrix_bytes(rows, cols, method, float_bytes, group_size)
    for table in (census.embedding, census.head):
        if table:
            total += (table[0] * table[1] + table[0] * INT8_ROW_OVERHEAD if tables_quantized
                      else table[0] * table[1] * float_bytes)
    return total


def held_tensor_bytes(census: WeightCensus, method: str, float_bytes: int, group_size: Optional[int] = None,
                      tables_quantized: bool = True) -> dict[str, int]:
    """``quantized_weights_bytes`` tensor by tensor: the bytes each quantized weight (``<module>.weight``)
    holds once loaded with ``method`` (the rest stay ``float_bytes`` per element; not listed). The
    estimate's layer placement sizes each module with it."""
    if method not in ("int8", "int4"):
        return {}
    out = {f"{name}.weight": _matrix_bytes(rows, cols, method, float_bytes, group_size)
           for name, (rows, cols) in zip(census.linear_names, census.linear)}
    for name, table in ((census.embedding_name, census.embedding), (census.head_name, census.head)):
        if name and table:
            out[f"{name}.weight"] = (table[0] * table[1] + table[0] * INT8_ROW_OVERHEAD if tables_quantized
                                     else table[0] * table[1] * float_bytes)
    return out


def int4_packs(rows: int, cols: int, group_size: int) -> bool:
    """Whether int4's packed kernels take a (rows x cols) weight: the input in whole groups, the
    output in tiles of 16 (ATen's CPU packing refuses others; tinygemm needs as much)."""
    return cols % group_size == 0 and rows % INT4_ROW_TILE == 0


def int4_kept_float(census: WeightCensus, group_size: int) -> list[str]:
    """The linear layers int4 leaves in the load dtype (shapes its kernels cannot pack)."""
    return [name for name, (rows, cols) in zip(census.linear_names, census.linear)
            if not int4_packs(rows, cols, group_size)]


def _matrix_bytes(rows: int, cols: int, method: str, float_bytes: int, group_size: Optional[int]) -> int:
    if method == "int8":
        return rows * cols + rows * INT8_ROW_OVERHEAD
    group = group_size or INT4_GROUP_SIZES[-1]
    if not int4_packs(rows, cols, group):  # left as it was
        return rows * cols * float_bytes
    return rows * cols // 2 + rows * (cols // group) * INT4_GROUP_OVERHEAD


def gguf_precision_class(type_name: Optional[str]) -> str:
    """The quantization that keeps a GGUF file's precision class: Q8 → int8, Q4/Q5 (and lower) → int4,
    float types → none."""
    name = (type_name or "").upper()
    if name.startswith(("Q8", "IQ8")):
        return "int8"
    if re.match(r"^(I?Q[2-6]|TQ)", name):
        return "int4"
    return "none"
