"""Checkpoints saved quantized: their ``quantization_config`` read from config.json, and why this
device or these libraries cannot load one as saved (torch-free). Also the precision class of a
GGUF file's quant type, which a load or an import keeps."""

from __future__ import annotations

import importlib.util
import json
import re
from dataclasses import dataclass
from typing import Any, Optional

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


def package_present(name: str) -> bool:
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
    if not package_present(package):
        return (f"quantized with {pre.label}, which needs the {package.split('.')[0]} package "
                f"(pip install {package.split('.')[-1].replace('_', '-')}); or {_WHAT_WORKS_ON_CPU}")
    return None



# config.json's record of the class ``import-gguf`` kept by writing float weights (int4, which
# torchao cannot save for a CPU): {"quantization": "int4", "source": "Q4_1"}.
KEPT_CLASS_KEY = "kept_precision_class"


def recorded_precision_class(config: dict) -> Optional[str]:
    """The quantization config.json records for the folder's weights (int8 | int4), or None."""
    record = config.get(KEPT_CLASS_KEY)
    keep = record.get("quantization") if isinstance(record, dict) else None
    return keep if keep in ("int8", "int4") else None


def gguf_precision_class(type_name: Optional[str]) -> str:
    """The quantization that keeps a GGUF file's precision class: Q8 → int8, Q4/Q5 (and lower) → int4,
    float types → none."""
    name = (type_name or "").upper()
    if name.startswith(("Q8", "IQ8")):
        return "int8"
    if re.match(r"^(I?Q[2-6]|TQ)", name):
        return "int4"
    return "none"
