"""Loading a Hugging Face model folder with transformers (imports torch)."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import torch

from engine.config import ModelConfig

log = logging.getLogger("engine.loader")

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


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

    @property
    def has_chat_template(self) -> bool:
        return bool(getattr(self.tokenizer, "chat_template", None))

    def device_memory_bytes(self) -> float:
        if self.device.type == "cuda":
            return float(torch.cuda.memory_allocated(self.device))
        return float(sum(p.numel() * p.element_size() for p in self.model.parameters()))


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


def _check_folder(path: Path) -> dict:
    if not path.exists():
        raise ModelLoadError(f"model path does not exist: {path}")
    if not path.is_dir():
        raise ModelLoadError(f"model path is not a folder: {path}")
    config_file = path / "config.json"
    if not config_file.exists():
        raise ModelLoadError(f"{path} is not a model folder: config.json is missing")
    try:
        return json.loads(config_file.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ModelLoadError(f"{config_file} is not valid JSON: {exc}") from None


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


def load_model(cfg: ModelConfig) -> LoadedModel:
    """Load model and tokenizer from a folder.

    Raises:
        ModelLoadError: the folder is missing, incomplete or unreadable.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if not cfg.path:
        raise ModelLoadError("no model path given")
    path = Path(cfg.path).expanduser().resolve()
    _check_folder(path)
    device = resolve_device(cfg.device)
    dtype = resolve_dtype(cfg.dtype, device)
    try:
        tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=cfg.trust_remote_code)
        model = AutoModelForCausalLM.from_pretrained(
            path,
            dtype=dtype,
            device_map=str(device) if device.type != "cpu" else None,
            trust_remote_code=cfg.trust_remote_code,
        )
    except (OSError, ValueError, KeyError, RuntimeError) as exc:
        raise ModelLoadError(f"cannot load {path}: {exc}") from None
    model.eval()
    return LoadedModel(
        model=model,
        tokenizer=tokenizer,
        name=cfg.served_model_name or path.name,
        path=path,
        device=device,
        dtype=dtype,
        context_length=_context_length(model.config, cfg.max_context),
        eos_token_ids=_eos_ids(model, tokenizer),
    )
