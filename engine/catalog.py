"""Finding and describing models without torch and without reading weights.

A model folder is described from its config.json and its safetensors headers: parameters are
counted from the tensor shapes (not guessed from the name), broken folders are listed with the
reason they cannot load. GGUF files are described from their metadata.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator, Optional

from engine.quantization import PreQuantized, prequantized_problem, read_quantization_config
from engine.quantization.checkpoints import gguf_precision_class, recorded_precision_class
from engine.requests import within_sampling_bounds
from engine.safetensors_meta import TORCH_NAMES, SafetensorsError, read_header
from engine.transformers_support import gguf_architectures, unknown_architecture

MAX_DEPTH = 4
_SKIP_DIRS = {"node_modules", "__pycache__", ".git", ".venv", "site-packages"}
MLA_TYPES = {"deepseek_v2", "deepseek_v3", "kimi_k2"}


@dataclass
class ModelEntry:
    """What the catalog knows of one model. A dataclass, not a pydantic model: the app lists
    models at start-up and must not load pydantic for it (the fields are filled by this module
    from files it has parsed, not from untrusted input that needs validating)."""

    name: str
    path: str
    format: str = "safetensors"        # safetensors | gguf
    source: str = "folder"             # folder | hf-cache
    architecture: Optional[str] = None  # the model class (config.json "architectures")
    model_type: Optional[str] = None
    params: Optional[int] = None
    size_bytes: int = 0
    dtype: Optional[str] = None
    layers: Optional[int] = None
    heads: Optional[int] = None
    kv_heads: Optional[int] = None
    head_dim: Optional[int] = None      # K head dim (for MLA: qk_nope + qk_rope)
    v_head_dim: Optional[int] = None
    hidden_size: Optional[int] = None
    intermediate_size: Optional[int] = None
    vocab_size: Optional[int] = None
    context_length: Optional[int] = None
    attention: Optional[str] = None     # mha | gqa | mqa | mla
    kv_lora_rank: Optional[int] = None
    qk_rope_head_dim: Optional[int] = None
    experts: Optional[int] = None
    experts_per_token: Optional[int] = None
    shards: int = 0
    tensors: int = 0
    loadable: bool = False
    problem: Optional[str] = None
    # A checkpoint saved quantized (config.json's quantization_config): method and bits.
    pre_quantized: Optional[PreQuantized] = None
    # The quantization that keeps the source's precision: a GGUF file's class (Q8 -> int8,
    # Q4/Q5 -> int4), or the one import-gguf recorded in the folder's config.json.
    precision_class: Optional[str] = None
    tied_embeddings: bool = False

    @property
    def quantization(self) -> Optional[str]:
        """"gptq 4-bit (group 128)", "torchao 8-bit (Int8WeightOnlyConfig)" …; None for float weights."""
        return self.pre_quantized.label if self.pre_quantized else None

    def kv_elements_per_token(self) -> Optional[int]:
        """KV cache elements per token over all layers, as transformers stores them.

        For MLA (DeepSeek-V2/V3) transformers caches the compressed latent (``kv_lora_rank``) and
        the shared rotary key (``qk_rope_head_dim``) per layer, not per-head K and V.
        """
        if self.attention == "mla" and self.layers and self.kv_lora_rank:
            return self.layers * (self.kv_lora_rank + (self.qk_rope_head_dim or 0))
        if None in (self.layers, self.kv_heads, self.head_dim):
            return None
        return self.layers * self.kv_heads * (self.head_dim + (self.v_head_dim or self.head_dim))


# ---------------------------------------------------------------------------- folders


def _text_config(config: dict) -> dict:
    return config.get("text_config") or config


def _describe_config(entry: ModelEntry, config: dict) -> None:
    c = _text_config(config)
    archs = config.get("architectures") or []
    entry.architecture = archs[0] if archs else None
    entry.model_type = c.get("model_type") or config.get("model_type")
    entry.layers = c.get("num_hidden_layers") or c.get("n_layer") or c.get("num_layers")
    entry.heads = c.get("num_attention_heads") or c.get("n_head")
    entry.hidden_size = c.get("hidden_size") or c.get("n_embd")
    entry.vocab_size = c.get("vocab_size")
    entry.intermediate_size = c.get("intermediate_size") or c.get("n_inner")
    entry.context_length = c.get("max_position_embeddings") or c.get("n_positions") or c.get("seq_length")
    if entry.model_type in MLA_TYPES and c.get("kv_lora_rank"):
        entry.attention = "mla"
        entry.kv_heads = c.get("num_key_value_heads") or entry.heads  # logical heads; the cache keeps one latent
        entry.kv_lora_rank = c.get("kv_lora_rank")
        entry.qk_rope_head_dim = c.get("qk_rope_head_dim")
        entry.head_dim = (c.get("qk_nope_head_dim") or 0) + (c.get("qk_rope_head_dim") or 0)
        entry.v_head_dim = c.get("v_head_dim")
    else:
        entry.kv_heads = c.get("num_key_value_heads") or entry.heads
        entry.head_dim = c.get("head_dim") or (entry.hidden_size // entry.heads if entry.hidden_size and entry.heads else None)
        entry.v_head_dim = entry.head_dim
        if entry.heads and entry.kv_heads:
            entry.attention = "mha" if entry.kv_heads == entry.heads else ("mqa" if entry.kv_heads == 1 else "gqa")
    entry.experts = c.get("n_routed_experts") or c.get("num_local_experts") or c.get("num_experts")
    entry.experts_per_token = c.get("num_experts_per_tok")
    entry.tied_embeddings = bool(c.get("tie_word_embeddings", config.get("tie_word_embeddings", True)))
    entry.pre_quantized = read_quantization_config(config)
    entry.precision_class = recorded_precision_class(config)


def _weight_files(folder: Path, entry: ModelEntry) -> list[Path]:
    """The safetensors files the model needs; sets ``problem`` for a missing shard."""
    index_files = sorted(folder.glob("*.safetensors.index.json"))
    if index_files:
        try:
            weight_map = json.loads(index_files[0].read_text(encoding="utf-8"))["weight_map"]
        except (json.JSONDecodeError, KeyError, OSError):
            entry.problem = f"{index_files[0].name} is not a valid safetensors index"
            return []
        names = sorted(set(weight_map.values()))
        missing = [n for n in names if not (folder / n).exists()]
        if missing:
            entry.problem = f"shard {missing[0]} named in {index_files[0].name} is missing" + (
                f" (and {len(missing) - 1} more)" if len(missing) > 1 else "")
        return [folder / n for n in names if (folder / n).exists()]
    return sorted(folder.glob("*.safetensors"))


def inspect_folder(folder: Path, source: str = "folder", name: Optional[str] = None) -> ModelEntry:
    """Describe one model folder; never raises for a broken model (see ``problem``)."""
    folder = Path(folder)
    entry = ModelEntry(name=name or folder.name, path=str(folder), source=source)
    if not folder.is_dir():
        entry.problem = "not a folder" if folder.exists() else "does not exist"
        return entry
    config_file = folder / "config.json"
    files = _weight_files(folder, entry)
    if not config_file.exists():
        entry.problem = entry.problem or ("no config.json" if files else "not a model folder: no config.json and no weights")
        _describe_weights(entry, files)
        return entry
    try:
        config = json.loads(config_file.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError, OSError) as exc:
        entry.problem = f"config.json is not valid JSON: {exc}"
        return entry
    _describe_config(entry, config)
    _describe_weights(entry, files)
    if not files and not entry.problem:
        entry.problem = "no safetensors weights (*.safetensors) in the folder"
    if not entry.problem:
        if config.get("auto_map"):
            entry.problem = "needs trust_remote_code (custom modeling code)"
        else:
            entry.problem = unknown_architecture(entry.model_type, entry.architecture)
    if not entry.problem and entry.pre_quantized is not None:
        # Said before any weight is read: the device a plain load would use, the libraries here.
        entry.problem = prequantized_problem(entry.pre_quantized, auto_device())
    entry.loadable = entry.problem is None
    return entry


def auto_device() -> str:
    """Where ``device = "auto"`` loads: the first CUDA GPU NVML finds, else the CPU."""
    from engine.telemetry.gpu import gpu_count

    return "cuda:0" if gpu_count() else "cpu"


def _describe_weights(entry: ModelEntry, files: list[Path]) -> None:
    params, by_dtype, tensors = 0, Counter(), 0
    for f in files:
        entry.size_bytes += f.stat().st_size
        try:
            header = read_header(f)
        except SafetensorsError as exc:
            entry.problem = entry.problem or str(exc)
            continue
        params += header.params
        tensors += len(header.tensors)
        by_dtype.update(header.bytes_by_dtype())
    entry.shards = len(files)
    entry.tensors = tensors
    entry.params = params or None
    if by_dtype:
        dtype = by_dtype.most_common(1)[0][0]
        entry.dtype = TORCH_NAMES.get(dtype, dtype.lower())


# ---------------------------------------------------------------------------- GGUF


def inspect_gguf(path: Path) -> ModelEntry:
    path = Path(path)
    entry = ModelEntry(name=path.stem, path=str(path), format="gguf", size_bytes=path.stat().st_size)
    try:
        from gguf import GGUFReader

        reader = GGUFReader(str(path))
    except Exception as exc:  # gguf raises ValueError/struct.error/OSError for broken files
        entry.problem = f"not a readable GGUF file: {exc}"
        return entry

    def field(key: str) -> Any:
        f = reader.fields.get(key)
        return f.contents() if f is not None else None

    arch = field("general.architecture")
    entry.model_type = arch
    entry.architecture = arch
    entry.layers = field(f"{arch}.block_count")
    entry.context_length = field(f"{arch}.context_length")
    entry.hidden_size = field(f"{arch}.embedding_length")
    entry.heads = field(f"{arch}.attention.head_count")
    entry.kv_heads = field(f"{arch}.attention.head_count_kv") or entry.heads
    entry.head_dim = field(f"{arch}.attention.key_length") or (
        entry.hidden_size // entry.heads if entry.hidden_size and entry.heads else None)
    entry.v_head_dim = field(f"{arch}.attention.value_length") or entry.head_dim
    if entry.heads and entry.kv_heads:
        entry.attention = "mha" if entry.kv_heads == entry.heads else ("mqa" if entry.kv_heads == 1 else "gqa")
    entry.intermediate_size = field(f"{arch}.feed_forward_length")
    tokens = reader.fields.get("tokenizer.ggml.tokens")
    entry.vocab_size = len(tokens.data) if tokens is not None else None
    entry.tied_embeddings = not any(t.name == "output.weight" for t in reader.tensors)
    entry.params = sum(int(t.n_elements) for t in reader.tensors) or None
    entry.tensors = len(reader.tensors)
    entry.shards = 1
    types = Counter(t.tensor_type.name for t in reader.tensors)
    entry.dtype = _gguf_weight_type(types)
    entry.precision_class = gguf_precision_class(entry.dtype)
    unreadable = sorted(set(types) & _gguf_unreadable_types())
    if arch not in gguf_architectures():
        entry.problem = f"transformers cannot read GGUF files of architecture {arch!r}"
    elif unreadable:
        count = sum(types[t] for t in unreadable)
        entry.problem = (f"transformers cannot read GGUF quant type {', '.join(unreadable)} ({count} tensors): "
                         f"gguf-py has no de-quantizer for it; convert the file to another type "
                         f"(llama.cpp's llama-quantize, e.g. Q8_0 or Q4_K_M)")
    entry.loadable = entry.problem is None
    return entry


_FLOAT_GGUF_TYPES = {"F32", "F16", "BF16", "F64"}


def _gguf_weight_type(types: Counter) -> Optional[str]:
    """The file's quant type: the commonest type among quantized tensors (norms are F32 in every
    file, and a small model can hold more norm tensors than matrices)."""
    quantized = Counter({t: n for t, n in types.items() if t not in _FLOAT_GGUF_TYPES})
    return (quantized or types).most_common(1)[0][0] if types else None


def _gguf_unreadable_types() -> set[str]:
    """GGUF tensor types transformers cannot de-quantize: those gguf-py has no de-quantizer for."""
    import gguf
    from gguf import quants

    traits = getattr(quants, "_type_traits", None)
    if traits is None:  # another gguf-py layout: cannot tell, let the load say
        return set()
    plain = {"F32", "F16", "BF16", "F64", "I8", "I16", "I32", "I64"}
    return {t.name for t in gguf.GGMLQuantizationType if t not in traits and t.name not in plain}


# ---------------------------------------------------------------------------- scanning


def _walk(root: Path, depth: int = 0) -> Iterator[Path]:
    """Yield model folders and .gguf files below ``root``; a model folder is not descended."""
    try:
        children = list(os.scandir(root))
    except OSError:
        return
    names = {c.name for c in children}
    if "config.json" in names or any(n.endswith(".safetensors") for n in names):
        yield root
        return
    for child in children:
        if child.name.endswith(".gguf") and child.is_file():
            yield Path(child.path)
        elif child.is_dir(follow_symlinks=False) and depth < MAX_DEPTH and not child.name.startswith(".") \
                and child.name not in _SKIP_DIRS:
            yield from _walk(Path(child.path), depth + 1)


def scan_folders(folders: Iterable[Path]) -> list[ModelEntry]:
    entries = []
    for folder in folders:
        for found in _walk(Path(folder).expanduser()):
            entries.append(inspect_gguf(found) if found.suffix == ".gguf" else inspect_folder(found))
    return entries


def hf_hub_cache() -> Path:
    """The Hugging Face cache folder, read from the environment at each call (huggingface_hub
    reads it once, when first imported, so a later HF_HUB_CACHE would go unseen)."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]).expanduser() / "hub"
    from huggingface_hub import constants

    return Path(constants.HF_HUB_CACHE)


def scan_hf_cache() -> list[ModelEntry]:
    """Models in the Hugging Face cache (``HF_HUB_CACHE``/``HF_HOME`` honoured), newest revision."""
    from huggingface_hub import scan_cache_dir
    from huggingface_hub.errors import CacheNotFound

    try:
        info = scan_cache_dir(hf_hub_cache())
    except CacheNotFound:
        return []
    entries = []
    for repo in info.repos:
        if repo.repo_type != "model" or not repo.revisions:
            continue
        revision = max(repo.revisions, key=lambda r: r.last_modified)
        entries.append(inspect_folder(revision.snapshot_path, source="hf-cache", name=repo.repo_id))
    return entries


def inspect_path(path: Path) -> ModelEntry:
    path = Path(path).expanduser()
    return inspect_gguf(path) if path.suffix == ".gguf" and path.is_file() else inspect_folder(path)


def list_models(folders: Iterable[Path] = (), hf_cache: bool = True) -> list[ModelEntry]:
    entries = scan_folders(folders)
    if hf_cache:
        entries += scan_hf_cache()
    return entries


# What a request may leave out and take from the model: vLLM's ``--generation-config auto`` reads
# the same keys, and only those the file states (transformers' own defaults are not the model's).
SAMPLING_KEYS = {"temperature": float, "top_p": float, "top_k": int, "repetition_penalty": float}


def sampling_defaults(folder: Path) -> dict[str, Any]:
    """The sampling settings a model's ``generation_config.json`` states (none when it has no
    such file, or it cannot be read)."""
    try:
        config = json.loads((Path(folder) / "generation_config.json").read_text())
    except (OSError, ValueError):
        return {}
    if not isinstance(config, dict):
        return {}
    found = {}
    for key, kind in SAMPLING_KEYS.items():
        value = config.get(key)
        # A value a request could not ask for is not used.
        if isinstance(value, (int, float)) and not isinstance(value, bool) and within_sampling_bounds(key, value):
            found[key] = kind(value)
    return found
