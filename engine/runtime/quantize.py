"""The transformers quantization config for a ``QuantizationPlan``, and the bytes a quantized
model holds (imports torch; the decisions are made in the torch-free ``engine.quantization``)."""

from __future__ import annotations

import logging
import threading
import types
from typing import Any, Optional

import torch

from engine.quantization.census import WeightCensus, int4_kept_float, int4_packs
from engine.quantization.plan import QuantizationPlan
from engine.runtime.noise import TorchaoStartupNoise, install_noise_filter

log = logging.getLogger("engine.loader")

_import_lock = threading.Lock()
_torchao_explained = False


def import_torchao() -> None:
    """Import torchao (transformers may have already) and explain its dropped lines once."""
    global _torchao_explained
    install_noise_filter()
    import torchao  # noqa: F401

    with _import_lock:
        if _torchao_explained:
            return
        _torchao_explained = True
    failed = TorchaoStartupNoise.failed_libraries
    if failed:
        log.info("torchao: %d of its CUDA kernel libraries did not load (%s); the int8/int4 paths used here "
                 "run on ATen's kernels and do not need them", failed,
                 "this torch has no CUDA" if not torch.cuda.is_available() else "built for another CUDA or GPU",
                 extra={"event": "torchao_import"})


def transformers_config(plan: QuantizationPlan, census: Optional[WeightCensus] = None) -> Optional[Any]:
    """The ``quantization_config`` for ``from_pretrained``; None when nothing is quantized on load
    (no quantization, or a pre-quantized checkpoint, whose own config transformers reads)."""
    if plan.method not in ("int8", "int4"):
        return None
    if plan.backend == "bitsandbytes":
        from transformers import BitsAndBytesConfig

        if plan.method == "int8":
            return BitsAndBytesConfig(load_in_8bit=True)
        return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4",
                                  bnb_4bit_compute_dtype=torch.bfloat16)
    import_torchao()
    from torchao.quantization import Int8WeightOnlyConfig
    from transformers import TorchAoConfig

    # Linear layers only, while loading; the embedding and head follow in ``quantize_tables``.
    # (A per-module FqnToConfig would do both at once, but transformers 5.2 then quantizes the
    # linear layers' biases too, which torchao cannot add.)
    linear = Int8WeightOnlyConfig() if plan.method == "int8" else _int4_config(plan.group_size or 32)
    keep: Optional[list[str]] = None
    if plan.method == "int4" and census is not None:
        # Shapes int4 cannot pack stay float (the estimate counts them so); naming any module
        # replaces transformers' default list, so the tables are named as well.
        keep = int4_kept_float(census, plan.group_size or 32)
        keep += [name for name in (census.embedding_name, census.head_name) if name]
    return TorchAoConfig(quant_type=linear, modules_to_not_convert=keep or None)


def quantize_tables(model: Any, plan: QuantizationPlan) -> None:
    """The input embedding and the output head in int8 per row (torchao), after the load: a tied
    head is pointed at the embedding's int8 table, so the two stay one."""
    if plan.method not in ("int8", "int4") or plan.backend != "torchao":
        return
    embedding, head = model.get_input_embeddings(), model.get_output_embeddings()
    tied = head is not None and embedding is not None and head.weight is embedding.weight
    for module in (embedding, None if tied else head):
        if module is not None and not _quantized(module.weight):
            module.weight = torch.nn.Parameter(int8_rows(module.weight.detach()), requires_grad=False)
    if tied:
        head.weight = embedding.weight
    # torchao's int8 tensor converts the whole table to float for every lookup and every head
    # product (0.9 GB a call for Qwen2's vocabulary): read only the rows asked for, and multiply
    # with ATen's int8 weight kernel, which scales as it goes.
    if embedding is not None and _is_int8_rows(embedding.weight):
        embedding.forward = types.MethodType(_gather_int8_rows, embedding)
    if head is not None and _is_int8_rows(head.weight):
        head.forward = types.MethodType(_int8_rows_product, head)


def _is_int8_rows(weight: Any) -> bool:
    """torchao's symmetric int8 tensor with one scale per row (its zero points are all 0)."""
    if type(weight).__name__ != "Int8Tensor" or weight.ndim != 2 or list(weight.block_size) != [1, weight.shape[1]]:
        return False
    return weight.zero_point is None or not bool(weight.zero_point.any())


def _gather_int8_rows(module: Any, input_ids: torch.Tensor) -> torch.Tensor:
    weight = module.weight
    rows = torch.nn.functional.embedding(input_ids, weight.qdata).to(weight.dtype)
    return rows * torch.nn.functional.embedding(input_ids, weight.scale.reshape(-1, 1)).to(weight.dtype)


def _int8_rows_product(module: Any, hidden: torch.Tensor) -> torch.Tensor:
    weight = module.weight
    flat = hidden.reshape(-1, hidden.shape[-1]).contiguous()
    out = torch._weight_int8pack_mm(flat, weight.qdata, weight.scale.reshape(-1).to(hidden.dtype))
    out = out.reshape(*hidden.shape[:-1], out.shape[-1])
    return out + module.bias if module.bias is not None else out


def int8_rows(weight: torch.Tensor, chunk_bytes: int = 64 * 2**20) -> Any:
    """torchao's int8 tensor, one scale per row, built ``chunk_bytes`` of float rows at a time: a
    large vocabulary's table (Qwen2's 151936 x 1536 is 0.9 GB in float32) is quantized with
    temporaries of one chunk instead of several copies of the whole table."""
    from torchao.quantization import PerRow
    from torchao.quantization.quantize_.workflows.int8.int8_tensor import Int8Tensor

    rows = max(1, chunk_bytes // max(1, weight.shape[1] * weight.element_size()))
    parts = [Int8Tensor.from_hp(weight[start:start + rows], PerRow()) for start in range(0, weight.shape[0], rows)]
    if len(parts) == 1:
        return parts[0]
    first = parts[0]
    joined = Int8Tensor(torch.cat([p.qdata for p in parts]), torch.cat([p.scale for p in parts]),
                        list(first.block_size), first.dtype,
                        zero_point=torch.cat([p.zero_point for p in parts]) if first.zero_point is not None else None)
    parts.clear()
    return joined


def quantize_loaded(model: Any, plan: QuantizationPlan) -> None:
    """Quantize a model already in memory (a GGUF file, which transformers de-quantizes as it
    reads and whose loader takes no other quantization config): the linear layers by the plan,
    then the tables; the float copy is freed layer by layer as each is replaced."""
    if plan.method not in ("int8", "int4") or plan.backend != "torchao":
        return
    import_torchao()
    from torchao.quantization import Int8WeightOnlyConfig, quantize_

    group = plan.group_size or 32
    head = model.get_output_embeddings()

    def wanted(module: Any, fqn: str) -> bool:
        if not isinstance(module, torch.nn.Linear) or module is head:
            return False
        return plan.method == "int8" or int4_packs(module.out_features, module.in_features, group)

    linear = Int8WeightOnlyConfig() if plan.method == "int8" else _int4_config(group)
    quantize_(model, linear, filter_fn=wanted)
    quantize_tables(model, plan)


def _quantized(tensor: torch.Tensor) -> bool:
    from torch.utils._python_dispatch import is_traceable_wrapper_subclass

    return is_traceable_wrapper_subclass(tensor)


def _int4_config(group_size: int) -> Any:
    """int4 weight-only that runs where the model is: on a CPU torchao's packed ("opaque") int4
    tensor with bfloat16 scales (``engine.runtime.int4_cpu``), whose matmul is ATen's
    ``_weight_int4pack_mm_for_cpu``; on a GPU tinygemm's tiles."""
    if torch.cuda.is_available():
        from torchao.quantization import Int4WeightOnlyConfig

        return Int4WeightOnlyConfig(group_size=group_size, int4_packing_format="tile_packed_to_4d")
    from engine.runtime.int4_cpu import Int4CpuWeightOnlyConfig

    return Int4CpuWeightOnlyConfig(group_size=group_size)


def tensor_bytes(tensor: torch.Tensor) -> int:
    """Bytes a tensor holds, through the inner tensors of a quantized subclass (int8 data, scales)."""
    from torch.utils._python_dispatch import is_traceable_wrapper_subclass

    if is_traceable_wrapper_subclass(tensor):
        names, _ = tensor.__tensor_flatten__()
        return sum(tensor_bytes(getattr(tensor, name)) for name in names)
    if getattr(tensor, "is_meta", False):
        return 0
    return tensor.numel() * tensor.element_size()


def model_bytes(model: Any) -> int:
    """Parameters and buffers once each (a tied head shares the embedding's storage)."""
    seen: dict[int, int] = {}
    for tensor in list(model.parameters()) + list(model.buffers()):
        seen.setdefault(id(tensor), tensor_bytes(tensor))
    return sum(seen.values())


def top1_agreement(reference: Any, model: Any, input_ids: torch.Tensor) -> float:
    """The share of positions of a text where ``model``'s greedy next token is ``reference``'s.

    Teacher-forced: both read the same text, so one early difference does not derail the rest
    (generating freely, a single flip would make every later token differ).
    """
    with torch.no_grad():
        want = reference(input_ids).logits[0, :-1].argmax(-1)
        got = model(input_ids).logits[0, :-1].argmax(-1)
    return float((want == got).float().mean())
