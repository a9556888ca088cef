"""Where each layer goes when the weights are spread over several devices (torch-free).

The built-in engine loads with ``device_map="auto"`` and ``max_memory`` when ``[load] max_memory``
is set (``engine.runtime.loader``). transformers 5 then plans the placement in
``transformers.integrations.accelerate``: ``get_balanced_memory`` caps every GPU but the last near
an equal share of the model, and ``infer_auto_device_map`` walks the modules in order, putting
each whole on the current device while it fits (keeping room on the first GPU and on the CPU for
the largest layer, which offloaded layers are brought back into), splitting a module that does
not fit into its children, never splitting a decoder layer, and moving to the next device
(GPUs, then ``cpu``, then ``disk``) when a layer does not fit. This module is that planning
replayed on the module tree read from the safetensors headers, so the estimate can say where
each layer lands without importing torch; ``tests/test_placement.py`` compares it with
transformers' own planner on meta-device models.

What it cannot see from the files: buffers (the rotary embedding's ``inv_freq``, a few hundred
bytes, is added for models with a ``layers`` list) and ``_keep_in_fp32_modules``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Optional, Union

# transformers' _no_split_modules are the decoder-layer classes: the items of the layer list.
_NO_SPLIT = re.compile(r"(^|\.)(layers|h|blocks|layer)\.\d+$")
_LAYER = re.compile(r"(?:^|\.)(?:layers|h|blocks|layer)\.(\d+)$")
_EMBEDDING = re.compile(r"(embed_tokens|wte|word_embeddings|tok_embeddings|embed_in)$")
_HEAD = re.compile(r"^(lm_head|output|embed_out)$")
_FINAL_NORM = re.compile(r"(^|\.)(norm|ln_f|final_layernorm|final_layer_norm)$")


class MaxMemoryError(ValueError):
    """A ``max_memory`` entry this planner (and accelerate) would not accept."""


# ---------------------------------------------------------------------------- the module tree


@dataclass
class Module:
    """One module (or a parameter directly held by a module with children) of the model."""

    name: str
    size: int = 0                                   # bytes, children included
    children: list["Module"] = field(default_factory=list)
    is_parameter: bool = False                      # a tensor beside child modules (not a module)

    @property
    def no_split(self) -> bool:
        return bool(_NO_SPLIT.search(self.name))

    def leaf_sizes(self) -> dict[str, int]:
        """transformers' "leaves": each module that directly holds tensors, with their bytes."""
        own = self.size - sum(c.size for c in self.children if not c.is_parameter)
        out = {self.name: own} if own and not self.children else {}
        direct = sum(c.size for c in self.children if c.is_parameter)
        if direct:
            out[self.name] = direct
        for child in self.children:
            if not child.is_parameter:
                out.update(child.leaf_sizes())
        return out

    def walk(self):
        yield self
        for child in self.children:
            yield from child.walk()


def _order(name: str) -> tuple:
    """The order modules are declared in (named_children follows __init__): embeddings, the
    layer list by index, the final norm, the rotary embedding, then others by name; the output
    head after the body."""
    last = name.rsplit(".", 1)[-1]
    if _HEAD.match(name):
        return (9, 0, last)
    if _EMBEDDING.search(last):
        return (0, 0, last)
    if last.isdigit():
        return (1, int(last), "")
    if last in ("layers", "h", "blocks", "layer"):
        return (1, 0, last)
    if _FINAL_NORM.search(last):
        return (2, 0, last)
    if last == "rotary_emb":
        return (3, 0, last)
    return (5, 0, last)


def module_tree(tensor_bytes: dict[str, int], tied_head: Optional[str] = None,
                rotary_bytes: int = 0) -> Module:
    """The model's module tree from its tensors' names and bytes (``model.layers.0.mlp.up_proj.weight``).

    Args:
        tied_head: the output head's module name when it shares the embedding's weights: it is
            a module of no bytes of its own (transformers counts tied weights once), placed with
            the embedding.
        rotary_bytes: the rotary embedding's buffer, added as ``<body>.rotary_emb``.
    """
    tensors = dict(tensor_bytes)
    if rotary_bytes:
        body = next((n.split(".layers.")[0] for n in tensors if ".layers." in n), None)
        if body is not None:
            tensors[f"{body}.rotary_emb.inv_freq"] = rotary_bytes
    nested: dict = {}
    for name, size in tensors.items():
        node = nested
        parts = name.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = size
    if tied_head and tied_head not in nested:
        nested[tied_head] = {}
    return _build("", nested)


def _build(name: str, node: dict) -> Module:
    modules = {k: v for k, v in node.items() if isinstance(v, dict)}
    tensors = {k: v for k, v in node.items() if not isinstance(v, dict)}
    prefix = f"{name}." if name else ""
    children = [_build(prefix + k, modules[k]) for k in sorted(modules, key=lambda k: _order(prefix + k))]
    if children:  # tensors beside child modules come first (named_parameters(recurse=False))
        children = [Module(prefix + k, v, is_parameter=True) for k, v in tensors.items()] + children
    size = sum(tensors.values()) + sum(c.size for c in children if not c.is_parameter)
    return Module(name, size, children)


# ---------------------------------------------------------------------------- max_memory


def size_to_bytes(size: Union[int, str]) -> int:
    """accelerate's ``convert_file_size_to_int``: "20GiB", "500MB", "1.5GB" or bytes as an integer."""
    if isinstance(size, int):
        return size
    text = str(size).strip()
    units = (("GIB", 2**30), ("MIB", 2**20), ("KIB", 2**10), ("GB", 10**9), ("MB", 10**6), ("KB", 10**3))
    for unit, factor in units:
        if text.upper().endswith(unit):
            try:
                value = int(float(text[:-len(unit)]) * factor)
            except ValueError:
                break
            return value // 8 if unit in ("GB", "MB", "KB") and text.endswith("b") else value
    # accelerate refuses a number as text ("1000000"): so does the estimate, before the load would.
    raise MaxMemoryError(f"max_memory size {size!r}: expected a number with GiB, MiB, KiB, GB, MB or KB "
                         f"(or bytes as an integer)")


def device_key(name: str) -> Union[int, str]:
    """"cuda:1" -> 1 (accelerate's GPU index), "cuda" -> 0, "cpu"/"disk"/"mps" as they are."""
    if name.startswith("cuda"):
        index = name.partition(":")[2] or "0"
        if not index.isdigit():
            raise MaxMemoryError(f"max_memory device {name!r}: expected cuda, cuda:N, mps, cpu or disk")
        return int(index)
    if name in ("cpu", "disk", "mps"):
        return name
    raise MaxMemoryError(f"max_memory device {name!r}: expected cuda, cuda:N, mps, cpu or disk")


def device_name(key: Union[int, str]) -> str:
    return f"cuda:{key}" if isinstance(key, int) else key


def normalized_max_memory(limits: dict[str, Union[int, str]]) -> dict[Union[int, str], int]:
    """accelerate's ``get_max_memory`` for a given dict: bytes, GPUs in index order, then mps, cpu, disk."""
    converted = {device_key(k): size_to_bytes(v) for k, v in limits.items()}
    gpus = sorted(k for k in converted if isinstance(k, int))
    return {k: converted[k] for k in gpus + [k for k in ("mps", "cpu", "disk") if k in converted]}


def balanced_max_memory(tree: Module, max_memory: dict[Union[int, str], int]) -> dict[Union[int, str], int]:
    """transformers' ``get_balanced_memory`` (device_map="auto"): every GPU but the last capped at
    an equal share of the model plus 1.25x its largest unsplittable piece."""
    result = dict(max_memory)
    gpus = sorted(k for k, v in result.items() if isinstance(k, int) and v > 0)
    if len(gpus) < 2:
        return result
    per_gpu = tree.size // len(gpus)
    largest_block = max((m.size for m in tree.walk() if m.no_split), default=0)
    largest_leaf = max(tree.leaf_sizes().values(), default=0)
    per_gpu += int(1.25 * max(largest_block, largest_leaf))
    for index in gpus[:-1]:
        result[index] = min(per_gpu, result[index])
    return result


# ---------------------------------------------------------------------------- the planner


def _max_layer(modules: list[Module]) -> tuple[int, list[str]]:
    """accelerate's ``get_max_layer_size``: the largest unsplittable piece among ``modules``."""
    best, names = 0, []
    todo = list(modules)
    while todo:
        module = todo.pop(0)
        if not module.children or module.no_split:
            if module.size > best:
                best, names = module.size, [module.name]
            elif module.size == best:
                names.append(module.name)
        else:
            todo = [c for c in module.children if not c.is_parameter] + todo
    return best, names


def infer_device_map(tree: Module, max_memory: dict[Union[int, str], int],
                     tied: Optional[tuple[str, str]] = None) -> dict[str, Union[int, str]]:
    """transformers' ``infer_auto_device_map`` (before ``clean_device_map``) on ``tree``.

    Args:
        max_memory: normalized (``normalized_max_memory``, then ``balanced_max_memory`` for "auto").
        tied: (embedding module, head module) sharing one weight: placed together.
    """
    devices = list(max_memory) + ([] if "disk" in max_memory else ["disk"])
    gpus = [d for d in devices if d not in ("cpu", "disk")]
    main_devices = ["mps"] if "mps" in gpus else ([gpus[0], "cpu"] if gpus else ["cpu"])
    todo = list(tree.children)
    device_map: dict[str, Union[int, str]] = {}
    current = 0
    used = dict.fromkeys(devices, 0)
    max_layer_size, max_layer_names = _max_layer(todo)
    while todo:
        module = todo.pop(0)
        name = module.name
        max_layer_names = [n for n in max_layer_names if n != name and not n.startswith(name + ".")]
        if not max_layer_names:
            max_layer_size, max_layer_names = _max_layer([m for m in todo if not m.is_parameter])
        partner = _tied_partner(name, tied, todo)
        size_with_ties = module.size + (partner.size if partner else 0)
        device = devices[current]
        limit = max_memory[device] if device != "disk" else None
        reserved = 0
        if device in main_devices:
            limit, reserved = limit - max_layer_size, max_layer_size
        if limit is None or used[device] + size_with_ties <= limit:
            used[device] += size_with_ties
            device_map[name] = device
            if partner is not None:
                todo.remove(partner)
                device_map[partner.name] = device
            continue
        if module.children and not module.no_split:
            todo = list(module.children) + todo
            max_layer_size, max_layer_names = _max_layer([m for m in todo if not m.is_parameter])
            continue
        used[device] += reserved
        current += 1
        todo.insert(0, module)
    return device_map


def _tied_partner(name: str, tied: Optional[tuple[str, str]], todo: list[Module]) -> Optional[Module]:
    """The not-yet-placed module holding the other end of a tied weight, when ``name`` holds one end
    and not the other (transformers adds it to the module's size and places them together)."""
    if not tied:
        return None
    inside = [t for t in tied if t == name or t.startswith(name + ".")]
    if len(inside) != 1:
        return None
    other = tied[1] if inside[0] == tied[0] else tied[0]
    return next((m for m in todo if other == m.name or other.startswith(m.name + ".")), None)


def clean_device_map(device_map: dict[str, Union[int, str]], module_name: str = "") -> dict[str, Union[int, str]]:
    """accelerate's ``clean_device_map``: a module whose parts all went to one device is named once."""
    prefix = f"{module_name}." if module_name else ""
    values = [v for k, v in device_map.items() if k.startswith(prefix)]
    if len(set(values)) == 1 and len(values) > 1:
        for k in [k for k in device_map if k.startswith(prefix)]:
            del device_map[k]
        device_map[module_name] = values[0]
    children = [k for k in device_map if k.startswith(prefix) and len(k) > len(module_name)]
    depth = len(module_name.split(".")) + 1 if module_name else 1
    for child in {".".join(k.split(".")[:depth]) for k in children}:
        clean_device_map(device_map, child)
    return device_map


# ---------------------------------------------------------------------------- what the estimate shows


@dataclass
class DevicePlacement:
    device: str                  # cuda:0 | cpu | disk (offloaded)
    modules: list[str]           # as placed: "embed_tokens", "layers 0-13", "norm", "lm_head" …
    bytes: int                   # the weights placed there
    limit_bytes: Optional[int]   # max_memory's (before balancing); None for disk

    def describe(self) -> str:
        return f"{self.device}: {' + '.join(self.modules)}"


def plan_placement(tensor_bytes: dict[str, int], max_memory: dict[str, Union[int, str]],
                   tied: bool = False, rotary_bytes: int = 0, limit_factor: float = 1.0) -> list[DevicePlacement]:
    """Where ``device_map="auto"`` with ``max_memory`` puts each module, device by device
    (``plan_device_map``'s arguments and refusals)."""
    return summarize(*plan_device_map(tensor_bytes, max_memory, tied, rotary_bytes, limit_factor))


def plan_device_map(tensor_bytes: dict[str, int], max_memory: dict[str, Union[int, str]], tied: bool = False,
                    rotary_bytes: int = 0, limit_factor: float = 1.0
                    ) -> tuple[Module, dict[str, Union[int, str]], dict[Union[int, str], int]]:
    """The module tree, the device map ``device_map="auto"`` gives it (accelerate's keys: GPU
    indices, "cpu", "disk"; cleaned as transformers cleans it) and the normalized limits.

    Args:
        tied: the output head shares the input embedding's weights.
        rotary_bytes: the rotary embedding's buffers (not in the files).
        limit_factor: transformers' quantizers plan quantized loads within 0.9 of each limit.

    Raises:
        MaxMemoryError: a device name or size accelerate would refuse.
    """
    tree, pair = model_tree(tensor_bytes, tied, rotary_bytes)
    limits = normalized_max_memory(max_memory)
    balanced = balanced_max_memory(tree, limits)
    if limit_factor != 1:  # the quantizer's adjust_max_memory, after the balancing (as transformers orders them)
        balanced = {k: v * limit_factor for k, v in balanced.items()}
    device_map = infer_device_map(tree, balanced, pair)
    return tree, clean_device_map(device_map), limits


def model_tree(tensor_bytes: dict[str, int], tied: bool = False, rotary_bytes: int = 0
               ) -> tuple[Module, Optional[tuple[str, str]]]:
    """The module tree and the tied (embedding, head) pair, as ``plan_device_map`` plans on them."""
    embedding = next((n.rsplit(".", 1)[0] for n in tensor_bytes if _EMBEDDING.search(n.rsplit(".", 1)[0])), None)
    head = "lm_head" if tied and embedding else None
    if head:  # a tied head is counted once, with the embedding (some checkpoints save both)
        tensor_bytes = {k: v for k, v in tensor_bytes.items() if not k.startswith(head + ".")}
    tree = module_tree(tensor_bytes, tied_head=head, rotary_bytes=rotary_bytes)
    return tree, ((embedding, head) if head else None)


def summarize(tree: Module, device_map: dict[str, Union[int, str]],
              limits: dict[Union[int, str], int]) -> list[DevicePlacement]:
    modules = {m.name: m for m in tree.walk()}
    sizes = {name: m.size for name, m in modules.items()}
    order = list(dict.fromkeys(list(limits) + ["disk"]))
    grouped: dict[Union[int, str], list[str]] = {}
    for name, device in device_map.items():
        grouped.setdefault(device, []).extend(_units(modules[name]) if name in modules else [name])
    out = []
    for device in order:
        if device in grouped:
            names = grouped[device]
            out.append(DevicePlacement(device_name(device), _describe_modules(names),
                                       sum(sizes.get(n, 0) for n in names), limits.get(device)))
    return out


def _units(module: Module) -> list[str]:
    """A placed module as the pieces a reader counts: its decoder layers and leaves (a whole body
    reads "embed_tokens + layers 0-27 + norm", not "model")."""
    if not module.children or module.no_split:
        return [module.name]
    return [name for child in module.children for name in _units(child)]


def _describe_modules(names: list[str]) -> list[str]:
    """Module names as a reader wants them: decoder layers as ranges, the rest by their last part."""
    out: list[str] = []
    run: list[int] = []

    def flush() -> None:
        if run:
            out.append(f"layer {run[0]}" if len(run) == 1 else f"layers {run[0]}-{run[-1]}")
            run.clear()

    for name in names:
        layer = _LAYER.search(name)
        if layer and (not run or int(layer.group(1)) == run[-1] + 1):
            run.append(int(layer.group(1)))
            continue
        flush()
        if name.endswith("rotary_emb"):  # a buffer of a few hundred bytes: not worth a reader's time
            continue
        if layer:
            run.append(int(layer.group(1)))
            continue
        inside = re.search(r"(?:layers|h|blocks|layer)\.(\d+)\.(.+)$", name)
        out.append(f"layer {inside.group(1)} ({inside.group(2)})" if inside else name.rsplit(".", 1)[-1]
                   if name.count(".") <= 1 else name)
    flush()
    return out


def tensor_bytes_of(folder: Union[str, Path], bytes_per_element: Optional[int]) -> dict[str, int]:
    """Each tensor of a model folder's safetensors in bytes once loaded (``bytes_per_element`` of the
    load dtype; None: as saved, for a checkpoint loaded as saved). {} without readable safetensors
    (a GGUF file, a damaged header)."""
    folder = Path(folder)
    try:
        stamp = max(f.stat().st_mtime for f in folder.glob("*.safetensors"))
    except (ValueError, OSError):  # none, or not a folder
        return {}
    sizes = _tensor_sizes(str(folder), stamp)
    return {name: nbytes if bytes_per_element is None else numel * bytes_per_element
            for name, (numel, nbytes) in sizes.items()}


@lru_cache(maxsize=16)
def _tensor_sizes(folder: str, stamp: float) -> dict[str, tuple[int, int]]:
    """(elements, bytes as saved) by tensor name; cached per folder and modification time (the
    Models panel and the Tuning budget ask again at each edit; a 163-shard model has 163 headers)."""
    from engine.safetensors_meta import SafetensorsError, read_header

    out: dict[str, tuple[int, int]] = {}
    for file in sorted(Path(folder).glob("*.safetensors")):
        try:
            header = read_header(file)
        except SafetensorsError:
            return {}
        out.update({name: (info.numel, info.nbytes) for name, info in header.tensors.items()})
    return out
