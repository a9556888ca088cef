"""Loading a Hugging Face model folder with transformers (imports torch)."""

from __future__ import annotations

import functools
import logging
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

import torch

from engine.catalog import sampling_defaults
from engine.config import LoadConfig, ModelConfig
from engine.quantization import QuantizationPlan, QuantizationRefused, census_of, int4_group_size, plan
from engine.runtime.onednn_linear import use_onednn_linear
from engine.runtime.quantize import import_torchao, quantize_loaded, quantize_tables, transformers_config
from engine.runtime.progress import CheckpointLayout, LoadCancelled, LoadWatch, PageReleaser, watching
from engine.safetensors_meta import read_header

log = logging.getLogger("engine.loader")

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
_SAFETENSORS_NAMES = {torch.float32: "F32", torch.bfloat16: "BF16", torch.float16: "F16"}


class ModelLoadError(RuntimeError):
    """The folder cannot be loaded; the message names the file and the problem."""


@dataclass
class LoadedModel:
    model: Any
    tokenizer: Any
    name: str
    path: Path
    device: torch.device
    dtype: torch.dtype
    context_length: int
    eos_token_ids: tuple[int, ...]
    # From the model's generation_config.json: what a request that leaves them out samples with.
    sampling_defaults: dict = field(default_factory=dict)
    # How the weights are held (engine.quantization): "none", "int8 (torchao, …)", "pre-quantized …".
    quantization: str = "none"

    @property
    def has_chat_template(self) -> bool:
        return bool(getattr(self.tokenizer, "chat_template", None))

    @functools.cached_property
    def weights_bytes(self) -> int:
        """Parameters and buffers, each once, through quantized tensors' inner data and scales
        (the weights' share of the device's memory)."""
        from engine.runtime.quantize import model_bytes

        return model_bytes(self.model)

    @functools.cached_property
    def grammars(self):
        """Compiled structured-output grammars for this model's vocabulary (built on first use:
        reading the vocabulary takes ~0.4 s for 49k tokens)."""
        from engine.runtime.grammar import GrammarCache

        return GrammarCache(self.tokenizer, self.logits_width, self.eos_token_ids)

    @functools.cached_property
    def logits_width(self) -> int:
        """Scores per step: the output embedding's rows (may exceed the tokenizer's vocabulary)."""
        head = self.model.get_output_embeddings()
        return int(head.weight.shape[0]) if head is not None else int(self.model.config.vocab_size)

    def device_memory_bytes(self) -> float:
        if self.device.type == "cuda":
            return float(torch.cuda.memory_allocated(self.device))
        return float(self.weights_bytes)


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda:0" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ModelLoadError(f"device {device!r} asked for, but torch sees no CUDA GPU here")
    return torch.device(device)


def resolve_dtype(dtype: str, device: torch.device) -> torch.dtype:
    if dtype != "auto":
        return _DTYPES[dtype]
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.float32  # half precision on CPU is slower and loses accuracy


def _context_length(model_config: Any, cap: Optional[int]) -> int:
    length = getattr(model_config, "max_position_embeddings", None) or 2048
    return min(length, cap) if cap else length


def _eos_ids(model: Any, tokenizer: Any) -> tuple[int, ...]:
    eos = model.generation_config.eos_token_id
    if eos is None:
        eos = tokenizer.eos_token_id
    if eos is None:
        return ()
    return tuple(eos) if isinstance(eos, (list, tuple)) else (int(eos),)


def checkpoint_layout(path: Path) -> CheckpointLayout:
    """Bytes and shard of every checkpoint tensor, from the safetensors headers (no weights read)."""
    files = sorted(path.glob("*.safetensors")) if path.is_dir() else []
    tensor_bytes, tensor_shard, tensor_span, tensor_dtype = {}, {}, {}, {}
    for index, file in enumerate(files, 1):
        header = read_header(file)
        for name, info in header.tensors.items():
            tensor_bytes[name] = info.nbytes
            tensor_shard[name] = index
            tensor_span[name] = (str(file.resolve()), header.data_start + info.begin, header.data_start + info.end)
            tensor_dtype[name] = info.dtype
    if not files and path.suffix == ".gguf":  # GGUF: one file, de-quantised on load
        return CheckpointLayout({}, {}, 1)
    return CheckpointLayout(tensor_bytes, tensor_shard, len(files), tensor_span, tensor_dtype)


def _source(path: Path) -> tuple[Path, dict]:
    """Folder and extra from_pretrained arguments: a .gguf file is read from its folder."""
    if path.suffix == ".gguf":
        return path.parent, {"gguf_file": path.name}
    return path, {}


def load_model(cfg: ModelConfig, load: Optional[LoadConfig] = None, emit: Callable[[dict], None] = lambda e: None,
               cancel: Optional[threading.Event] = None,
               quantization: Optional[QuantizationPlan] = None) -> LoadedModel:
    """Load model and tokenizer with transformers, reporting progress tensor by tensor.

    Args:
        emit: receives ``progress`` events (bytes, tensors, shard, ETA).
        cancel: set it to stop the load between two tensors.
        quantization: what to do with the weights, decided before the load (``engine.quantization
            .plan``); None: as ``cfg.quantization`` says, for a plain "none"/"int8"/"int4".
    Raises:
        LoadCancelled: cancelled, or past ``load.timeout_s``; nothing of the model is kept.
        ModelLoadError: the folder is missing, incomplete or unreadable.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    # transformers prints through a handler of its own; send it through ours (JSON lines).
    hf_logging.disable_default_handler()
    hf_logging.enable_propagation()
    load = load or LoadConfig()
    if not cfg.path:
        raise ModelLoadError("no model path given")
    path = Path(cfg.path).expanduser().resolve()
    device = resolve_device(cfg.device)
    dtype = resolve_dtype(cfg.dtype, device)
    folder, extra = _source(path)
    quantization = quantization or _plan_for(cfg, path, device)
    # A GGUF file is de-quantized by transformers' own GGUF reader, which takes no second
    # quantization config: it is quantized once in memory, after the load.
    after_load = path.suffix == ".gguf" and quantization.method in ("int8", "int4")
    quant_config = None if after_load else transformers_config(
        quantization, census_of(str(path)) if quantization.quantized else None)
    if quant_config is not None:
        extra["quantization_config"] = quant_config
    elif quantization.method == "pre-quantized" and quantization.backend == "torchao":
        import_torchao()
    watch = LoadWatch(checkpoint_layout(path), emit, int(load.chunk_size_mb * 2**20), cancel or threading.Event(),
                      load.timeout_s, target_dtype=_SAFETENSORS_NAMES.get(dtype),
                      quantizing=quantization.method in ("int8", "int4"))
    device_map: Any = str(device) if device.type != "cpu" else None
    if load.max_memory:
        device_map, extra["max_memory"] = "auto", _max_memory(load.max_memory)
    threads_before = set(threading.enumerate())
    try:
        tokenizer = AutoTokenizer.from_pretrained(folder, trust_remote_code=cfg.trust_remote_code, **{
            k: v for k, v in extra.items() if k == "gguf_file"})
        watch.check()
        with watching(watch):
            model = AutoModelForCausalLM.from_pretrained(
                folder, dtype=dtype, device_map=device_map, trust_remote_code=cfg.trust_remote_code, **extra)
    except LoadCancelled:
        _await_loader_threads(threads_before)
        raise
    except (OSError, ValueError, KeyError, RuntimeError, TypeError) as exc:
        _await_loader_threads(threads_before)
        raise ModelLoadError(f"cannot load {path}: {type(exc).__name__}: {exc}") from None
    try:
        if after_load:
            quantize_loaded(model, quantization)
        else:
            quantize_tables(model, quantization)
    except (RuntimeError, ValueError, TypeError, NotImplementedError) as exc:
        raise ModelLoadError(f"cannot quantize {path} ({quantization.describe()}): {type(exc).__name__}: {exc}") from None
    if quantization.method in ("int8", "int4") and watch.layout.tensor_span:
        PageReleaser(watch.layout, "").release_all()
    model.eval()
    if device.type == "cpu":
        use_onednn_linear(model)
    return LoadedModel(
        model=model,
        tokenizer=tokenizer,
        name=cfg.served_model_name or (path.stem if path.suffix == ".gguf" else path.name),
        path=path,
        device=device,
        dtype=dtype,
        context_length=_context_length(model.config, cfg.max_context),
        eos_token_ids=_eos_ids(model, tokenizer),
        sampling_defaults=sampling_defaults(folder) if path.suffix != ".gguf" else {},
        quantization=quantization.describe(),
    )


def _await_loader_threads(before: set[threading.Thread], timeout_s: float = 30.0) -> None:
    """Wait for the threads a stopped load started to end.

    transformers materializes tensors on a thread pool that it shuts down without waiting: tensors
    still being converted when a load is cancelled are freed after the caller's ``release_memory``,
    and glibc then keeps their pages (RSS stayed 40-90 MB above the model served before)."""
    deadline = time.monotonic() + timeout_s
    for thread in set(threading.enumerate()) - before:
        if thread.name.startswith("ThreadPoolExecutor-"):  # an unnamed pool's threads: transformers'
            thread.join(max(0.0, deadline - time.monotonic()))


def _plan_for(cfg: ModelConfig, path: Path, device: torch.device) -> QuantizationPlan:
    """The plan for a library caller that gave none: the request as it is (``auto`` needs the
    estimate, which the lifecycle makes; here it falls back to no quantization)."""
    from engine.catalog import inspect_path

    requested = cfg.quantization if cfg.quantization != "auto" else "none"
    entry = inspect_path(path)
    try:
        return plan(requested, str(device), pre_quantized=entry.pre_quantized,
                    group_size=int4_group_size(census.input_widths()) if (census := census_of(str(path))) else None)
    except QuantizationRefused as exc:
        raise ModelLoadError(str(exc)) from None



def _max_memory(limits: dict[str, str]) -> dict:
    """``{"cuda:0": "20GiB", "cpu": "64GiB"}`` -> accelerate's keys (GPU index or "cpu")."""
    return {(int(k.partition(":")[2] or 0) if k.startswith("cuda") else k): v for k, v in limits.items()}


def release_memory() -> None:
    """Give freed memory back: CUDA's cache, and glibc's heap (else RSS stays at its peak)."""
    import ctypes
    import gc

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc
        pass
