"""GGUF file -> safetensors model folder with tokenizer and chat template (imports torch).

transformers reads GGUF and de-quantises it; the model it returns still carries a GGUF
quantizer, which ``save_pretrained`` refuses, so the weights are moved into a plain model built
from the same config without its ``quantization_config``.

Keeping the file's precision class (``import-gguf`` does unless told ``--dequantize``):

* Q8 -> int8: the folder is a torchao int8 checkpoint (linear layers, embedding and head int8
  per row, saved by transformers' TorchAoConfig), which loads as saved; about 1 byte a weight
  on disk;
* Q4/Q5 (and lower) -> int4: torchao's CPU int4 tensor cannot be saved (its safetensors support
  lists CUDA/XPU layouts only), so the folder holds the weights in bfloat16 (2 bytes a weight on
  disk; int4 quantizes from bfloat16 anyway, ``engine.runtime.int4_cpu``) and config.json records
  the class (``engine.quantization.checkpoints.KEPT_CLASS_KEY``), which the catalog reads and
  the Models panel starts the load at.
"""

from __future__ import annotations

import json
import logging
import tempfile
from pathlib import Path
from typing import Optional

from engine.staging import staged_folder

log = logging.getLogger("engine.gguf")


class GGUFImportError(RuntimeError):
    pass


def import_gguf(gguf_file: Path, out_dir: Path, dtype: Optional[str] = None, keep_precision: bool = False) -> Path:
    """Convert ``gguf_file`` into a model folder at ``out_dir`` (written atomically).

    Args:
        dtype: dtype of the saved float weights; default float32, which keeps de-quantised values
            exact (bfloat16 for a kept int4 class).
        keep_precision: keep the file's precision class (see the module's docstring) instead
            of de-quantizing to float.
    Raises:
        GGUFImportError: the file is missing or transformers cannot read it.
    """
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    gguf_file = Path(gguf_file).resolve()
    out_dir = Path(out_dir).resolve()
    if not gguf_file.is_file():
        raise GGUFImportError(f"GGUF file not found: {gguf_file}")
    folder, name = gguf_file.parent, gguf_file.name
    keep = kept_class(gguf_file) if keep_precision else "none"
    torch_dtype = getattr(torch, dtype or ("bfloat16" if keep == "int4" else "float32"))
    try:
        tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
        # Read in float32 (the de-quantized values exact); the plain model casts as it copies them.
        quantized = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
    except Exception as exc:  # transformers raises many kinds for unsupported GGUF contents
        raise GGUFImportError(f"transformers cannot read {gguf_file}: {type(exc).__name__}: {exc}") from None

    config = AutoConfig.from_pretrained(folder, gguf_file=name)
    for attr in ("quantization_config", "_name_or_path"):
        if hasattr(config, attr):
            delattr(config, attr)
    config.dtype = torch_dtype
    plain = AutoModelForCausalLM.from_config(config, dtype=torch_dtype)
    missing, unexpected = plain.load_state_dict(quantized.state_dict(), strict=False)
    tied = set(getattr(plain, "_tied_weights_keys", None) or {})
    if unexpected or set(missing) - set(tied):
        raise GGUFImportError(f"weights of {gguf_file} do not match its config: missing {missing}, unexpected {unexpected}")
    plain.tie_weights()
    plain.generation_config = quantized.generation_config

    del quantized
    with staged_folder(out_dir) as staging:
        if keep == "int8":
            _save_int8(plain, tokenizer, staging)
        else:
            plain.save_pretrained(staging)
            tokenizer.save_pretrained(staging)
            if keep == "int4":
                _record_class(staging, keep, _gguf_type(gguf_file))
    log.info("imported %s", gguf_file, extra={"event": "import_gguf", "source": str(gguf_file), "out": str(out_dir),
                                             "kept": keep})
    return out_dir


def _save_int8(plain, tokenizer, staging: Path) -> None:
    """Save the float model, load it back int8 (the engine's own int8 load: linear layers through
    TorchAoConfig, the tables after) and save that: transformers writes torchao's tensors and the
    quantization_config that loads them as saved."""
    from engine.config import ModelConfig
    from engine.runtime.loader import load_model

    with tempfile.TemporaryDirectory(prefix=".float-", dir=staging.parent) as tmp:
        plain.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        del plain
        loaded = load_model(ModelConfig(path=tmp, device="cpu", dtype="float32", quantization="int8"))
        loaded.model.save_pretrained(staging)
        loaded.tokenizer.save_pretrained(staging)


def _record_class(folder: Path, keep: str, source_type: Optional[str]) -> None:
    from engine.quantization.checkpoints import KEPT_CLASS_KEY

    config_file = folder / "config.json"
    config = json.loads(config_file.read_text(encoding="utf-8"))
    config[KEPT_CLASS_KEY] = {"quantization": keep, "source": source_type}
    config_file.write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")


def _gguf_type(gguf_file: Path) -> Optional[str]:
    from engine.catalog import inspect_path

    return inspect_path(Path(gguf_file)).dtype


def kept_class(gguf_file: Path) -> str:
    """The quantization that keeps the file's precision class (none for a float file)."""
    from engine.quantization.checkpoints import gguf_precision_class

    return gguf_precision_class(_gguf_type(gguf_file))


def import_plan(gguf_file: Path, keep_precision: bool) -> Optional[str]:
    """What an import will write and what the model then holds in memory, for the CLI (and the
    Models panel, which shows the job's lines) to say before it starts; None for a file the
    catalog cannot read."""
    from engine.catalog import inspect_path
    from engine.memory import estimate, format_bytes

    entry = inspect_path(Path(gguf_file))
    if not entry.loadable or not entry.params:
        return None
    keep = kept_class(gguf_file)
    try:
        kept = estimate(entry, "float32", device="cpu", quantization=keep) if keep != "none" else None
        float32 = estimate(entry, "float32", device="cpu").weights_bytes
    except ValueError:
        return None
    name = Path(gguf_file).name
    if kept is None or not keep_precision:
        also = (f"; without --dequantize it keeps its class, {keep}: weights {format_bytes(kept.weights_bytes)}"
                if kept is not None else "")
        return f"{name} is {entry.dtype}: writing float weights (weights {format_bytes(float32)} in float32){also}"
    disk = (f"torchao int8 checkpoint, about {format_bytes(entry.params)} on disk, loaded as saved" if keep == "int8"
            else f"bfloat16 weights ({format_bytes(entry.params * 2)} on disk) recorded as int4, which the "
                 f"Models panel loads them as (or quantization = \"int4\")")
    return (f"{name} is {entry.dtype}: keeping its precision class, {keep}: weights {format_bytes(kept.weights_bytes)} "
            f"in memory instead of {format_bytes(float32)} in float32 ({disk}; --dequantize writes float32)")
