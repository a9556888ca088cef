"""What the weights hold: the checkpoint's tensors sorted by what quantization does with them,
and the bytes each method keeps of them once loaded, for the memory estimate (torch-free)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Optional

INT4_GROUP_SIZES = (32,)  # larger groups tried and measured: see the module's docstring
INT4_ROW_TILE = 16

# Bytes a method holds per weight and per scale group (measured on torchao 0.18's CPU tensors:
# Int8Tensor keeps a float32 scale and an int8 zero point per row; the int4 tensor packs two
# weights a byte and keeps a bfloat16 scale and zero per group: engine.runtime.int4_cpu builds
# it from the weight in bfloat16, and tinygemm's CUDA tiles hold the model's 16-bit dtype).
INT8_ROW_OVERHEAD = 5
INT4_GROUP_OVERHEAD = 4


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

