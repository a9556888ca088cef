"""What the installed transformers can load, found without importing it.

Importing transformers' auto mappings imports torch, which the GUI process must never do, so
these checks read the package's files instead: a model type is known when transformers ships a
``models/<type>/modeling_*.py`` that defines the architecture class.
"""

from __future__ import annotations

import importlib.util
import re
from functools import lru_cache
from pathlib import Path
from typing import Optional


@lru_cache(maxsize=1)
def transformers_root() -> Optional[Path]:
    spec = importlib.util.find_spec("transformers")
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0])


@lru_cache(maxsize=256)
def _modeling_source(model_type: str) -> Optional[str]:
    root = transformers_root()
    if root is None:
        return None
    folder = root / "models" / model_type.replace("-", "_")
    files = sorted(folder.glob("modeling_*.py")) if folder.is_dir() else []
    if not files:
        return None
    return "\n".join(f.read_text(encoding="utf-8", errors="replace") for f in files)


def unknown_architecture(model_type: Optional[str], architecture: Optional[str]) -> Optional[str]:
    """None when transformers can build this model, else the reason it cannot."""
    if not model_type:
        return "config.json has no model_type"
    source = _modeling_source(model_type)
    if source is None:
        return f"architecture {model_type!r} is not known to the installed transformers"
    if architecture and not re.search(rf"^class {re.escape(architecture)}\b", source, re.MULTILINE):
        return f"transformers knows {model_type!r} but has no class {architecture!r}"
    return None


@lru_cache(maxsize=1)
def gguf_architectures() -> frozenset[str]:
    """Architectures transformers reads from GGUF (the keys of its GGUF_CONFIG_MAPPING)."""
    root = transformers_root()
    path = root / "integrations" / "ggml.py" if root else None
    if path is None or not path.exists():
        return frozenset()
    text = path.read_text(encoding="utf-8")
    start = text.find("GGUF_CONFIG_MAPPING = {")
    end = text.find("\n}\n", start)
    block = text[start:end]
    names = set(re.findall(r'^    "([a-z0-9_]+)": \{', block, re.MULTILINE))
    return frozenset(names - {"general", "tokenizer"})
