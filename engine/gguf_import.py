"""GGUF file -> safetensors model folder with tokenizer and chat template (imports torch).

transformers reads GGUF and de-quantises it; the model it returns still carries a GGUF
quantizer, which ``save_pretrained`` refuses, so the weights are moved into a plain model built
from the same config without its ``quantization_config``.
"""

from __future__ import annotations

import logging
from pathlib import Path

from engine.staging import staged_folder

log = logging.getLogger("engine.gguf")


class GGUFImportError(RuntimeError):
    pass


def import_gguf(gguf_file: Path, out_dir: Path, dtype: str = "float32") -> Path:
    """Convert ``gguf_file`` into a model folder at ``out_dir`` (written atomically).

    Args:
        dtype: dtype of the saved weights; float32 keeps de-quantised values exact.
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
    torch_dtype = getattr(torch, dtype)
    try:
        tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
        quantized = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch_dtype)
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

    with staged_folder(out_dir) as staging:
        plain.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
    log.info("imported %s", gguf_file, extra={"event": "import_gguf", "source": str(gguf_file), "out": str(out_dir)})
    return out_dir


def precision_advice(gguf_file: Path) -> str | None:
    """What keeps the file's precision class once imported: the folder holds de-quantized
    weights (torchao's CPU int4 tensors cannot be saved), so the class is kept at load time.
    None for a float file, or one the catalog cannot read."""
    from engine.catalog import inspect_path
    from engine.memory import estimate, format_bytes
    from engine.quantization.checkpoints import gguf_precision_class

    entry = inspect_path(Path(gguf_file))
    keep = gguf_precision_class(entry.dtype)
    if keep == "none" or not entry.loadable:
        return None
    try:
        kept = estimate(entry, "float32", device="cpu", quantization=keep)
    except ValueError:
        return None
    return (f"{Path(gguf_file).name} is {entry.dtype}: load the folder with quantization = \"{keep}\" to keep its "
            f"precision class (weights {format_bytes(kept.weights_bytes)} instead of "
            f"{format_bytes(kept.float_weights_bytes)} in float32)")
