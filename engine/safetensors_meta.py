"""Reading safetensors headers without reading weights (torch-free).

A safetensors file is an 8-byte little-endian header length, a JSON header naming every tensor's
dtype, shape and byte range, then the data. The header alone gives parameter counts, dtypes and
the size the file must have, so truncated files are caught before any load.
"""

from __future__ import annotations

import json
import math
import struct
from dataclasses import dataclass, field
from pathlib import Path

TORCH_NAMES = {"F64": "float64", "F32": "float32", "F16": "float16", "BF16": "bfloat16",
               "F8_E4M3": "float8_e4m3fn", "F8_E5M2": "float8_e5m2", "I8": "int8", "U8": "uint8"}
_MAX_HEADER = 100 * 1024 * 1024


class SafetensorsError(ValueError):
    """The file is not a complete safetensors file; the message names it and the problem."""


@dataclass
class TensorInfo:
    dtype: str
    shape: tuple[int, ...]
    nbytes: int
    begin: int = 0  # offsets in the data section
    end: int = 0

    @property
    def numel(self) -> int:
        return math.prod(self.shape)


@dataclass
class SafetensorsFile:
    path: Path
    tensors: dict[str, TensorInfo] = field(default_factory=dict)
    data_bytes: int = 0
    data_start: int = 0  # file offset of the data section

    @property
    def params(self) -> int:
        return sum(t.numel for t in self.tensors.values())

    def bytes_by_dtype(self) -> dict[str, int]:
        totals: dict[str, int] = {}
        for t in self.tensors.values():
            totals[t.dtype] = totals.get(t.dtype, 0) + t.nbytes
        return totals


def read_header(path: Path) -> SafetensorsFile:
    """Parse the header and check the file is as long as the header says.

    Raises:
        SafetensorsError: unreadable, not safetensors, or truncated.
    """
    path = Path(path)
    try:
        size = path.stat().st_size
        with path.open("rb") as f:
            prefix = f.read(8)
            if len(prefix) < 8:
                raise SafetensorsError(f"{path.name}: too short to be a safetensors file ({size} bytes)")
            (header_len,) = struct.unpack("<Q", prefix)
            if header_len > min(_MAX_HEADER, size - 8):
                raise SafetensorsError(f"{path.name}: header length {header_len} does not fit in a {size}-byte file")
            header = json.loads(f.read(header_len))
    except OSError as exc:
        raise SafetensorsError(f"{path.name}: cannot read: {exc.strerror}") from None
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise SafetensorsError(f"{path.name}: header is not valid JSON (not a safetensors file?)") from None
    result = SafetensorsFile(path)
    end = 0
    for name, meta in header.items():
        if name == "__metadata__":
            continue
        try:
            begin, stop = meta["data_offsets"]
            result.tensors[name] = TensorInfo(meta["dtype"], tuple(meta["shape"]), stop - begin, begin, stop)
        except (KeyError, TypeError, ValueError):
            raise SafetensorsError(f"{path.name}: malformed header entry for tensor {name!r}") from None
        end = max(end, stop)
    result.data_bytes = end
    result.data_start = 8 + header_len
    expected = 8 + header_len + end
    if size < expected:
        raise SafetensorsError(
            f"{path.name} is truncated: the header describes {expected} bytes but the file has {size}"
        )
    return result


def write_shards(tensors: dict, out_dir: Path, max_shard_bytes: int, prefix: str = "model") -> dict[str, str]:
    """Save ``tensors`` (name -> torch tensor) into shards of at most ``max_shard_bytes`` (a
    single tensor larger than that gets a shard of its own) and an index; returns the weight map."""
    from safetensors.torch import save_file

    groups: list[list[str]] = [[]]
    size = 0
    for name, tensor in tensors.items():
        nbytes = tensor.numel() * tensor.element_size()
        if groups[-1] and size + nbytes > max_shard_bytes:
            groups.append([])
            size = 0
        groups[-1].append(name)
        size += nbytes
    weight_map: dict[str, str] = {}
    total = len(groups)
    for i, names in enumerate(groups, 1):
        filename = f"{prefix}-{i:05d}-of-{total:05d}.safetensors"
        save_file({n: tensors[n].contiguous() for n in names}, str(out_dir / filename), metadata={"format": "pt"})
        weight_map.update({n: filename for n in names})
    total_size = sum(t.numel() * t.element_size() for t in tensors.values())
    index = {"metadata": {"total_size": total_size}, "weight_map": weight_map}
    (out_dir / f"{prefix}.safetensors.index.json").write_text(json.dumps(index, indent=2))
    return weight_map
